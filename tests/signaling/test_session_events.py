"""The shared pub/sub of session events: one connection for many channels, (un)watched at will, and
subscribed again after a real Redis restart."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from signaling.session_events import SessionEvents
from tests.support.processes import wait_until
from tests.support.redis_server import RedisServer
from tests.support.tasks import running_tasks


async def subscribers(redis: Redis, channel: str) -> int:
    counts = await redis.pubsub_numsub(channel)
    return int(counts[0][1]) if counts else 0


async def test_many_channels_on_one_connection_each_to_its_sink(redis: Redis) -> None:
    events = SessionEvents(redis)
    got: dict[str, list[bytes]] = {f"events:{i}": [] for i in range(30)}
    async with running_tasks(events.run()):
        for channel, inbox in got.items():
            await events.watch(channel, inbox.append)  # returns once subscribed
        for channel in got:
            assert await subscribers(redis, channel) == 1
        pubsub_clients = [c for c in await redis.client_list() if int(c.get("sub", 0)) > 0]
        assert len(pubsub_clients) == 1 and int(pubsub_clients[0]["sub"]) == 30
        for i, channel in enumerate(got):
            await redis.publish(channel, f"m{i}")

        async def delivered() -> bool:
            return all(inbox == [f"m{i}".encode()] for i, inbox in enumerate(got.values()))

        await wait_until(delivered, timeout=10, what="every channel's message delivered")


async def test_unwatch_unsubscribes(redis: Redis) -> None:
    events = SessionEvents(redis)
    inbox: list[bytes] = []
    async with running_tasks(events.run()):
        await events.watch("events:a", inbox.append)
        events.unwatch("events:a")

        async def unsubscribed() -> bool:
            return await subscribers(redis, "events:a") == 0

        await wait_until(unsubscribed, timeout=10, what="the channel unsubscribed")
        await redis.publish("events:a", "late")
        await asyncio.sleep(0.3)
        assert inbox == [] and events.subscribed == set()


async def test_watched_channels_are_subscribed_again_after_a_redis_restart(
    private_redis: RedisServer,
) -> None:
    redis = Redis.from_url(private_redis.url, socket_connect_timeout=1)
    events = SessionEvents(redis)
    inbox: list[bytes] = []
    try:
        async with running_tasks(events.run()):
            await events.watch("events:s", inbox.append)
            await asyncio.to_thread(private_redis.stop)
            await wait_until(lambda: _async(events.outage.down), timeout=10, what="the outage noticed")
            await asyncio.to_thread(private_redis.start)
            admin = Redis.from_url(private_redis.url)

            async def resubscribed() -> bool:
                return await subscribers(admin, "events:s") == 1

            await wait_until(resubscribed, timeout=15, what="the channel subscribed again")
            await admin.publish("events:s", "after")
            await wait_until(lambda: _async(inbox == [b"after"]), timeout=10, what="the message after")
            await admin.aclose()
    finally:
        await redis.aclose()


async def _async(value: bool) -> bool:
    return value
