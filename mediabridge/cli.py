"""`lookout bridge`: run one aiortc media bridge."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from pydantic import ValidationError

from wire.config import BridgeSettings, describe_invalid
from wire.errors import LookoutError

log = logging.getLogger(__name__)


class BridgeConfigError(LookoutError):
    """A bridge option is unusable."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's commands to `lookout`."""
    d = BridgeSettings()
    p = subparsers.add_parser(
        "bridge",
        help="run a WebRTC media bridge (receives browser video, sends sampled frames to inference)",
        description="Run one aiortc media bridge. It registers in Redis with a heartbeat, answers the SDP "
        "offers that signaling relays to it, receives VP8 or H.264 video, samples it at each session's rate "
        "and publishes JPEG frames to the workers, dropping (and counting) what would queue. "
        "Every option also reads LOOKOUT_<OPTION> (e.g. LOOKOUT_REDIS_URL).",
    )
    p.add_argument(
        "--redis-url", "--redis", dest="redis_url", default=d.redis_url, help=f"Redis server ({d.redis_url})"
    )
    p.add_argument(
        "--id", dest="bridge_id", default=d.bridge_id, help="bridge id (default: host name+suffix)"
    )
    p.add_argument(
        "--max-sample-fps",
        type=float,
        default=d.max_sample_fps,
        help="highest sample rate a session gets here; the rate itself is chosen at join by signaling "
        f"(LOOKOUT_SAMPLE_FPS) (default: {d.max_sample_fps})",
    )
    p.add_argument(
        "--in-flight",
        type=int,
        default=d.in_flight,
        help=f"frames per session in flight (default: {d.in_flight})",
    )
    p.add_argument(
        "--max-sessions",
        type=int,
        default=d.max_sessions,
        help=f"sessions accepted (default: {d.max_sessions})",
    )
    p.add_argument(
        "--jpeg-quality", type=int, default=d.jpeg_quality, help=f"JPEG quality (default: {d.jpeg_quality})"
    )
    p.add_argument(
        "--ice-servers", default=d.ice_servers, help="comma-separated STUN/TURN URLs (default none)"
    )
    p.add_argument(
        "--ice-host-addresses",
        default=d.ice_host_addresses,
        help="comma-separated local IPs to gather host candidates on; 127.0.0.1 for loopback-only "
        "(default: every non-loopback interface)",
    )
    p.add_argument(
        "--advertised-address",
        default=d.advertised_address,
        help="IP put in host candidates (NAT, containers)",
    )
    p.add_argument(
        "--udp-ports",
        default=f"{d.udp_port_min}-{d.udp_port_max}" if d.udp_port_min else "",
        help="UDP port range for media, MIN-MAX (default: any)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=d.metrics_port,
        help="serve Prometheus /metrics on this port (default: off)",
    )
    p.set_defaults(func=run_bridge)


def settings_from_args(args: argparse.Namespace) -> BridgeSettings:
    low, high = 0, 0
    if args.udp_ports:
        try:
            low_text, high_text = args.udp_ports.split("-", 1)
            low, high = int(low_text), int(high_text)
        except ValueError as exc:
            message = f"--udp-ports must look like 40000-40100, not {args.udp_ports!r}"
            raise BridgeConfigError(message) from exc
        if not (0 < low <= high <= 65535):
            raise BridgeConfigError(f"--udp-ports {args.udp_ports}: need 0 < MIN <= MAX <= 65535")
    try:
        return BridgeSettings(
            redis_url=args.redis_url,
            bridge_id=args.bridge_id,
            max_sample_fps=args.max_sample_fps,
            in_flight=args.in_flight,
            max_sessions=args.max_sessions,
            jpeg_quality=args.jpeg_quality,
            ice_servers=args.ice_servers,
            ice_host_addresses=args.ice_host_addresses,
            advertised_address=args.advertised_address,
            udp_port_min=low,
            udp_port_max=high,
            metrics_port=args.metrics_port,
        )
    except ValidationError as exc:
        raise BridgeConfigError(describe_invalid(exc)) from exc


def run_bridge(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    return asyncio.run(_serve(settings))


async def _serve(settings: BridgeSettings) -> int:
    import ipaddress

    from redis.asyncio import Redis

    from mediabridge import ice
    from mediabridge.bridge import MediaBridge
    from runtime.redis import REDIS_DOWN_ERRORS

    try:
        ice.restrict_host_addresses(ice.split_list(settings.ice_host_addresses))
    except ValueError as exc:
        raise BridgeConfigError(f"--ice-host-addresses: {exc}") from exc
    if settings.advertised_address:
        try:
            ipaddress.ip_address(settings.advertised_address)
        except ValueError as exc:
            raise BridgeConfigError(f"--advertised-address: {exc}") from exc
    loop = asyncio.get_running_loop()
    if settings.metrics_port:
        from wire.metrics import start_metrics_server

        start_metrics_server(settings.metrics_port)
        log.info("metrics on http://0.0.0.0:%d/metrics", settings.metrics_port)

    redis = Redis.from_url(settings.redis_url)
    try:
        await redis.ping()
    except REDIS_DOWN_ERRORS as exc:
        await redis.aclose()
        raise BridgeConfigError(f"cannot reach Redis at {settings.redis_url}: {exc}") from exc
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bridge = MediaBridge(settings, redis)
    from wire.influx import start_influx_push

    push = start_influx_push(settings, service="bridge")  # a no-op unless LOOKOUT_INFLUX_URL is set
    print(f"lookout bridge {bridge.id}: ready (redis {settings.redis_url})", flush=True)
    try:
        await bridge.run(stop)
    finally:
        await push.aclose()
        await redis.aclose()
    return 0


def register_models(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's actions to `lookout models`."""
