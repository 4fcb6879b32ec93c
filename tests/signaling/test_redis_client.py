"""Signaling's Redis client: bounded (bursts queue, never open more), blocking reads as long as an
offer's wait, and a pool that heals after a real Redis restart without failing the first request."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from signaling.redis_client import CLIENT_NAME, signaling_redis
from tests.signaling.ws_harness import signaling_settings
from tests.support.redis_server import RedisServer


async def named_connections(admin: Redis) -> int:
    return sum(1 for c in await admin.client_list() if c.get("name") == CLIENT_NAME)


async def test_a_burst_queues_for_the_pool_instead_of_opening_more(private_redis: RedisServer) -> None:
    # A Redis of its own: other tests' replicas (closing their pools) must not be counted.
    redis = signaling_redis(signaling_settings(private_redis.url, redis_max_connections=8))
    admin = Redis.from_url(private_redis.url)
    try:
        # 40 blocking commands at once: 8 run, the others wait for a connection, all succeed.
        results = await asyncio.gather(*(redis.blpop([f"empty:{i}"], timeout=0.3) for i in range(40)))
        assert results == [None] * 40
        assert 0 < await named_connections(admin) <= 8
    finally:
        await redis.aclose()
        await admin.aclose()


async def test_a_blocking_read_may_last_as_long_as_an_offer_waits(redis_server: RedisServer) -> None:
    # redis-py's default socket timeout (5 s) cut a bridge's answer short: an offer to a slow bridge
    # failed as "Redis unavailable" (internal) instead of bridge_timeout. Signaling's reads outlast it.
    redis = signaling_redis(signaling_settings(redis_server.url, offer_timeout_s=6.0))
    try:
        started = time.monotonic()
        assert await redis.blpop(["never-answered"], timeout=6) is None
        assert time.monotonic() - started >= 5.9
    finally:
        await redis.aclose()


async def test_the_pool_heals_after_a_redis_restart(private_redis: RedisServer) -> None:
    redis = signaling_redis(signaling_settings(private_redis.url))
    try:
        await asyncio.gather(*(redis.set(f"k{i}", i) for i in range(8)))  # several pooled connections
        await asyncio.to_thread(private_redis.restart)
        started = time.monotonic()
        # Every pooled socket is dead; the first commands after the restart still succeed, promptly.
        assert await asyncio.gather(*(redis.ping() for _ in range(8))) == [True] * 8
        assert await redis.set("after", 1)
        assert time.monotonic() - started < 2
    finally:
        await redis.aclose()
