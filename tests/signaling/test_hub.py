"""The hub: its shared tasks start and stop with the app, a lost bridge ends only its own sessions,
and records lists the sessions still live."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from signaling.hub import SessionHub
from signaling.sessions import LiveSession
from tests.signaling.ws_harness import signaling_settings
from tests.support.redis_server import RedisServer
from wire.bridge_rpc import SessionRecord
from wire.keys import Keys


async def test_shared_tasks_run_until_stopped_and_a_lost_bridge_ends_its_sessions_only(
    redis_server: RedisServer, redis: Redis, keys: Keys
) -> None:
    hub = SessionHub(redis, keys, signaling_settings(redis_server.url))
    sent: dict[str, list[object]] = {}
    await hub.start()
    try:
        assert len(hub._tasks) == 4 and not any(t.done() for t in hub._tasks)
        for name, bridge in (("s-a", "doomed"), ("s-b", "doomed"), ("s-c", "fine")):
            inbox = sent.setdefault(name, [])

            async def send(message: object, inbox: list[object] = inbox) -> None:
                inbox.append(message)

            session = LiveSession(
                record=SessionRecord(session=name, bridge=bridge, model="m", sample_fps=5),
                shared=hub.shared,
                send=send,
                on_end=hub.remove,
            )
            hub.add(session)
            await session.start()
        assert sorted(r.session for r in hub.records()) == ["s-a", "s-b", "s-c"]
        assert sorted(hub.results.streams) == sorted(keys.results(s) for s in ("s-a", "s-b", "s-c"))
        hub._bridge_lost("doomed")
        for _ in range(50):
            if sorted(hub.sessions) == ["s-c"]:
                break
            await asyncio.sleep(0.05)
        assert sorted(hub.sessions) == ["s-c"]
        assert [getattr(m, "code", None) for m in sent["s-a"] if hasattr(m, "code")] == ["bridge_lost"]
        assert not [m for m in sent["s-c"] if hasattr(m, "code")]
        assert hub.results.streams == [keys.results("s-c")]
    finally:
        await hub.stop()
    assert hub.sessions == {} and hub._tasks == []
    assert not await redis.exists(keys.session("s-c"))  # stopping ended the last session
