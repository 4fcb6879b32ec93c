"""20,000 requests naming made-up models leave no Redis key and no metric series behind.

Before the fix every new name added a drop tally (``drops:{name}``, never expiring), a frame-in and a
drop series, and the monitor's per-model gauges: /metrics grew to 8 MB. Now a name is used only once
it exists (``signaling.known_models``); any other is a 404 ``unknown_model`` and touches nothing.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from prometheus_client import REGISTRY
from pytest_aiohttp import AiohttpClient
from redis.asyncio import Redis

from signaling.app import create_app
from signaling.monitor import MONITOR
from tests.signaling.ws_harness import Client, signaling_settings
from tests.support.redis_server import RedisServer
from wire.keys import Keys

NAMES = 20_000
IN_FLIGHT = 64
SAMPLE = re.compile(r"^([^\s{]+(?:\{[^}]*\})?) ")


async def unknown(client: Client, name: str) -> int:
    async with client.post(
        "/api/v1/detect",
        params={"model": name},
        data=b"\xff\xd8 junk",
        headers={"Content-Type": "image/jpeg"},
    ) as response:
        body = await response.json()
        assert response.status == 404 and body["error"]["code"] == "unknown_model", body
        return response.status


async def metrics(client: Client) -> tuple[int, set[str]]:
    """/metrics in bytes, and its series (name and labels; values and the process' own figures aside)."""
    text = await (await client.get("/metrics")).text()
    series = {m.group(1) for line in text.splitlines() if (m := SAMPLE.match(line))}
    return len(text.encode()), {s for s in series if not s.startswith(("process_", "python_gc_"))}


async def test_unknown_model_names_leave_no_key_and_no_series(
    aiohttp_client: AiohttpClient, redis_server: RedisServer, redis: Redis, keys: Keys
) -> None:
    settings: dict[str, Any] = {"monitor_interval_s": 0.2, "scale_window_s": 5.0, "default_model": "served"}
    client: Client = await aiohttp_client(create_app(signaling_settings(redis_server.url, **settings)))
    assert client.app is not None
    monitor = client.app[MONITOR]
    for i in range(10):  # the 404 status series appears with the first of them; from then on it only counts
        await unknown(client, f"warm-up-{i}")
    await monitor.refresh()
    keys_before = await redis.dbsize()
    bytes_before, series_before = await metrics(client)

    started = time.monotonic()
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> int:
        async with gate:
            return await unknown(client, f"made-up-model-{i}")

    statuses = await asyncio.gather(*(one(i) for i in range(NAMES)))
    elapsed = time.monotonic() - started
    await monitor.refresh()  # the gauges see whatever the requests left in Redis

    keys_after = await redis.dbsize()
    bytes_after, series_after = await metrics(client)
    print(
        f"{NAMES} unknown names in {elapsed:.1f} s: Redis keys {keys_before} -> {keys_after}, "
        f"/metrics {bytes_before} -> {bytes_after} bytes"
    )
    assert statuses == [404] * NAMES
    assert keys_after == keys_before
    assert series_after == series_before
    # The same series; only values grow: the 404 counter gains digits (10 -> 20010), and the process' own
    # memory, CPU and GC figures change width. A few hundred bytes at most, nothing per name.
    assert abs(bytes_after - bytes_before) < 400, (bytes_before, bytes_after)
    assert not await redis.keys(f"{keys.prefix}:*made-up*")
    assert not [s for m in REGISTRY.collect() for s in m.samples if "made-up" in str(s.labels)]
