"""The live sessions of one replica and what they share: one reader, one pub/sub, one upkeep, the limits.

Redis connections per replica are constant, not per session (``signaling.redis_client`` states the
budget): every session's results come through the one ``ResultsReader``, its bridge's events through
the one ``SessionEvents``, and its record's refresh and its bridge's liveness through one
``SessionUpkeep``. ``Admission`` holds the join limits, and ``offer_slots`` bounds the offers waiting
for a bridge's answer (each holds a connection while it waits).
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis

from signaling.admission import Admission
from signaling.redis_client import offer_slots
from signaling.results_reader import ResultsReader
from signaling.session_events import SessionEvents
from signaling.sessions import LiveSession, SharedRedis
from signaling.upkeep import SessionUpkeep
from wire.bridge_rpc import SessionRecord
from wire.config import SignalingSettings
from wire.keys import Keys
from wire.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class SessionHub:
    """The sessions this replica serves (ended on shutdown) and the shared tasks that feed them."""

    def __init__(self, redis: Redis, keys: Keys, settings: SignalingSettings) -> None:
        self.sessions: dict[str, LiveSession] = {}
        self.upkeep = SessionUpkeep(
            redis,
            keys,
            settings,
            records=self.records,
            is_live=lambda session: session in self.sessions,
            bridge_lost=self._bridge_lost,
        )
        self.results = ResultsReader(redis, on_reconnect=self.upkeep.refresh_soon)
        self.events = SessionEvents(redis)
        self.shared = SharedRedis(redis, keys, settings, self.results, self.events)
        self.admission = Admission(settings)
        self.offers = asyncio.Semaphore(offer_slots(settings))
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for name, coro in (
            ("results", self.results.run()),
            ("events", self.events.run()),
            ("records", self.upkeep.run_records()),
            ("bridges", self.upkeep.run_bridges()),
        ):
            self._tasks.append(asyncio.create_task(coro, name=f"signaling-{name}"))

    async def stop(self) -> None:
        await self.end_all()
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()

    def records(self) -> list[SessionRecord]:
        return [session.record for session in self.sessions.values() if not session.ended]

    def add(self, session: LiveSession) -> None:
        self.sessions[session.id] = session

    def remove(self, session: LiveSession) -> None:
        self.sessions.pop(session.id, None)

    async def end_all(self) -> None:
        await asyncio.gather(*(s.end() for s in list(self.sessions.values())), return_exceptions=True)

    def _bridge_lost(self, bridge: str) -> None:
        for session in list(self.sessions.values()):
            if session.bridge == bridge:
                session.bridge_lost()
