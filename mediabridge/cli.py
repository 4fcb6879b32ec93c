"""`lookout bridge`: run one aiortc media bridge."""

from __future__ import annotations

import argparse
import asyncio
import logging

from runtime import bootstrap
from runtime.redis_url import redact_url
from runtime.settings_cli import add_settings_arguments, load_settings
from wire.config import BridgeSettings

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's commands to `lookout`."""
    parser = subparsers.add_parser(
        "bridge",
        help="run a WebRTC media bridge (receives browser video, sends sampled frames to inference)",
        description="Run one aiortc media bridge. It registers in Redis with a heartbeat, answers the SDP "
        "offers that signaling relays to it, receives VP8 or H.264 video, samples it at each session's rate "
        "(chosen at join by signaling, capped here too) and publishes JPEG frames to the workers, dropping "
        "(and counting) what would queue. Every option also reads LOOKOUT_<OPTION>.",
    )
    add_settings_arguments(parser, BridgeSettings)
    parser.set_defaults(func=run_bridge)


def settings_from_args(args: argparse.Namespace) -> BridgeSettings:
    """The bridge's settings: LOOKOUT_* variables, overridden by the flags given; its id chosen."""
    settings = load_settings(BridgeSettings, args, command="bridge")
    return settings.model_copy(update={"bridge_id": bootstrap.service_id(settings.bridge_id)})


def run_bridge(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    return asyncio.run(_serve(settings))


async def _serve(settings: BridgeSettings) -> int:
    from mediabridge import ice
    from mediabridge.bridge import MediaBridge, redis_options

    ice.restrict_host_addresses(ice.split_list(settings.ice_host_addresses))  # checked by the settings
    bootstrap.serve_metrics(settings.metrics_port, service="bridge")
    redis = await bootstrap.connect_redis(settings, service="bridge", **redis_options())
    bridge = MediaBridge(settings, redis)
    push = bootstrap.start_push(settings, service="bridge")
    print(f"lookout bridge {bridge.id}: ready (redis {redact_url(settings.redis_url)})", flush=True)
    try:
        with bootstrap.stop_requested() as stop:
            await bridge.run(stop)
    finally:
        await push.aclose()
        await redis.aclose()
    return 0


def register_models(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's actions to `lookout models`."""
