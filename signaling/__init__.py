"""Signaling: the aiohttp orchestrator (page, WebSocket signaling, REST API, registry, delivery)."""
