"""Cluster-wide gauges (stream depth and lag, live workers and bridges, scale ratio) (filled in by the
observability issue)."""

from __future__ import annotations

from aiohttp import web


def setup_monitor(app: web.Application) -> None:
    """Start the periodic task that refreshes the cluster-wide gauges, and serve /metrics."""
