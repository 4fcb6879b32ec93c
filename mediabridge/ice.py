"""ICE set-up for the bridge: servers, which host addresses to gather, a UDP port range, NAT address.

aioice 0.13 has no options for the host addresses it gathers (it never gathers 127.0.0.1) nor for the
local port range, so both are applied here, process-wide, before any peer connection is made. The
Python WebRTC client (``lookout.webrtc_client``) uses the same functions for loopback tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

log = logging.getLogger(__name__)

_original_get_host_addresses = aioice.ice.get_host_addresses


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def rtc_configuration(ice_servers: str) -> RTCConfiguration:
    """aiortc configuration; no servers means host candidates only (aiortc's default asks public STUN)."""
    return RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in split_list(ice_servers)])


def restrict_host_addresses(addresses: Iterable[str]) -> None:
    """Gather host candidates on exactly these local IPs (may include 127.0.0.1); empty: aioice's choice."""
    chosen = [str(ipaddress.ip_address(a)) for a in addresses]
    if not chosen:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return

    def fixed(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (use_ipv4 and ":" not in a) or (use_ipv6 and ":" in a)]

    aioice.ice.get_host_addresses = fixed
    log.info("ICE host candidates restricted to %s", ", ".join(chosen))


def loopback_only(addresses: Iterable[str]) -> bool:
    chosen = list(addresses)
    return bool(chosen) and all(ipaddress.ip_address(a).is_loopback for a in chosen)


def keep_loopback_candidates(sdp: str) -> str:
    """Drop remote candidates that a loopback-only agent cannot reach (other interfaces, mDNS names)."""
    lines = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            try:
                if len(parts) < 6 or not ipaddress.ip_address(parts[4]).is_loopback:
                    continue
            except ValueError:
                continue  # a host name (mDNS .local): not resolvable inside a loopback-only setup
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def advertise_address(sdp: str, address: str) -> str:
    """Replace the IP of every host candidate with ``address`` (1:1 NAT, containers with published ports)."""
    if not address:
        return sdp
    lines = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) >= 8 and parts[7] == "host":
                parts[4] = address
                line = " ".join(parts)
        elif line.startswith("c=IN IP4 "):
            line = f"c=IN IP4 {address}"
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def install_udp_port_range(loop: asyncio.AbstractEventLoop, low: int, high: int) -> None:
    """Make UDP sockets that ask this loop for port 0 take a free port in [low, high] instead.

    In the bridge process only aioice binds UDP sockets to port 0 (one per host candidate), so this is
    how media ports become a known range that a firewall or container can publish.
    """
    if not low and not high:
        return
    if not (0 < low <= high <= 65535):
        raise ValueError(f"bad UDP port range {low}-{high}")
    if getattr(loop, "_lookout_udp_ports", None) == (low, high):
        return  # already in place on this loop
    original = loop.create_datagram_endpoint
    next_port = [low]

    async def ranged(protocol_factory: Any, local_addr: Any = None, **kwargs: Any) -> Any:
        if local_addr is None or local_addr[1] != 0:
            return await original(protocol_factory, local_addr=local_addr, **kwargs)
        span = high - low + 1
        last_error: OSError | None = None
        for _ in range(span):
            port = next_port[0]
            next_port[0] = low + (port - low + 1) % span
            try:
                return await original(protocol_factory, local_addr=(local_addr[0], port), **kwargs)
            except OSError as exc:
                last_error = exc
        raise OSError(f"no free UDP port in {low}-{high} on {local_addr[0]}") from last_error

    loop.create_datagram_endpoint = ranged  # type: ignore[method-assign,assignment]
    loop._lookout_udp_ports = (low, high)  # type: ignore[attr-defined]
    log.info("ICE host candidates use UDP ports %d-%d", low, high)
