"""ICE helpers: loopback-only host candidates, remote-candidate filtering, NAT address, UDP port range."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aioice.ice
import pytest
from aiortc import RTCPeerConnection

from mediabridge import ice
from tests.support.redis_server import free_port

OFFER = "\r\n".join(
    [
        "v=0",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 192.0.2.7",
        "a=candidate:1 1 udp 2122260223 192.0.2.7 50000 typ host",
        "a=candidate:2 1 udp 2122194687 127.0.0.1 50001 typ host",
        "a=candidate:3 1 udp 2122129151 4f1c7a2e-1111.local 50002 typ host",
        "a=candidate:4 1 udp 1686052607 203.0.113.9 50003 typ srflx raddr 192.0.2.7 rport 50000",
        "a=rtpmap:96 VP8/90000",
        "",
    ]
)


@pytest.fixture
def restore_host_addresses() -> Iterator[None]:
    yield
    ice.restrict_host_addresses([])


def test_loopback_filter_keeps_only_loopback_candidates() -> None:
    kept = ice.keep_loopback_candidates(OFFER)
    assert "127.0.0.1 50001" in kept
    for gone in ("192.0.2.7 50000", ".local", "203.0.113.9"):
        assert gone not in kept
    assert "a=rtpmap:96 VP8/90000" in kept and kept.endswith("\r\n")


def test_loopback_only_needs_every_address_to_be_loopback() -> None:
    assert ice.loopback_only(["127.0.0.1"])
    assert not ice.loopback_only(["127.0.0.1", "192.0.2.2"])
    assert not ice.loopback_only([])


def test_advertised_address_replaces_host_candidates_only() -> None:
    out = ice.advertise_address(OFFER, "198.51.100.4")
    assert "198.51.100.4 50000 typ host" in out
    assert "203.0.113.9 50003 typ srflx" in out  # server-reflexive ones are already public
    assert "c=IN IP4 198.51.100.4" in out
    assert ice.advertise_address(OFFER, "") == OFFER


def test_rtc_configuration_has_no_servers_by_default() -> None:
    assert ice.rtc_configuration("").iceServers == []
    servers = ice.rtc_configuration("stun:stun.example.org:3478, turn:turn.example.org").iceServers
    assert servers is not None
    assert [s.urls for s in servers] == ["stun:stun.example.org:3478", "turn:turn.example.org"]


async def test_restricted_host_addresses_gather_loopback(restore_host_addresses: None) -> None:
    ice.restrict_host_addresses(["127.0.0.1"])
    assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]
    pc = RTCPeerConnection(ice.rtc_configuration(""))
    try:
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        candidates = [
            line for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate:")
        ]
        assert candidates and all(" 127.0.0.1 " in line for line in candidates)
    finally:
        await pc.close()
    with pytest.raises(ValueError):
        ice.restrict_host_addresses(["not-an-ip"])


async def test_udp_port_range_binds_inside_the_range() -> None:
    loop = asyncio.get_running_loop()
    low = free_port()
    ice.install_udp_port_range(loop, low, low + 3)
    transports = []
    try:
        for _ in range(3):
            transport, _protocol = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
            )
            transports.append(transport)
        ports = [t.get_extra_info("sockname")[1] for t in transports]
        assert len(set(ports)) == 3 and all(low <= p <= low + 3 for p in ports)
    finally:
        for t in transports:
            t.close()
    with pytest.raises(ValueError):
        ice.install_udp_port_range(loop, 5000, 4000)
