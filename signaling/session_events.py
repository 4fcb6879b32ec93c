"""One pub/sub connection for the session events of every session of this replica.

Bridges publish what happens to a peer connection on ``Keys.session_events(session)``. A pub/sub per
session held one Redis connection per joined socket; here one task owns one ``PubSub``, subscribes and
unsubscribes channels as sessions come and go, and hands each message to its session's sink.

All pub/sub IO happens on that task (redis-py's ``PubSub`` is not meant to be shared between tasks):
``watch`` registers a sink and waits until the task has subscribed it. After a Redis outage the task
drops its ``PubSub`` and subscribes every watched channel again on a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, NoReturn

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from runtime.redis import REDIS_DOWN_ERRORS, Outage

log = logging.getLogger(__name__)

EventSink = Callable[[bytes], None]
"""Receives one message's data. Called on the listener's task: it must not block or await."""

SUBSCRIBE_WAIT_S = 2.0
"""``watch`` waits at most this long for the subscription (during an outage it is made on reconnect)."""


class SessionEvents:
    """Subscribes the channels of live sessions on one connection and dispatches their messages."""

    def __init__(self, redis: Redis, *, poll_s: float = 0.1) -> None:
        self.redis = redis
        self.poll_s = poll_s
        """How long one read waits for a message; (un)subscriptions are applied between reads."""
        self.outage = Outage("listening to session events", log)
        self._sinks: dict[str, EventSink] = {}
        self._subscribed: set[str] = set()
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._changed = asyncio.Event()

    @property
    def subscribed(self) -> set[str]:
        """The channels subscribed on the current connection."""
        return set(self._subscribed)

    async def watch(self, channel: str, sink: EventSink) -> None:
        """Send ``channel``'s messages to ``sink``; returns once subscribed (or after SUBSCRIBE_WAIT_S)."""
        self._sinks[channel] = sink
        if channel in self._subscribed:
            return
        future = self._waiting.get(channel)
        if future is None:
            future = self._waiting[channel] = asyncio.get_running_loop().create_future()
        self._changed.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(future), SUBSCRIBE_WAIT_S)

    def unwatch(self, channel: str) -> None:
        self._sinks.pop(channel, None)
        self._changed.set()

    async def run(self) -> NoReturn:
        """Listen until cancelled."""
        pubsub: PubSub | None = None
        try:
            while True:
                try:
                    if pubsub is None:
                        pubsub = self.redis.pubsub()
                        self._subscribed.clear()
                    await self._apply(pubsub)
                    if not self._subscribed:
                        self._changed.clear()
                        await self._changed.wait()
                        continue
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.poll_s)
                except REDIS_DOWN_ERRORS as exc:
                    await self._drop(pubsub)
                    pubsub = None
                    await self.outage.failed(exc)
                    continue
                self.outage.ok()
                if message is not None:
                    self._dispatch(message)
        finally:
            await self._drop(pubsub)

    async def _apply(self, pubsub: PubSub) -> None:
        wanted = set(self._sinks)
        added = sorted(wanted - self._subscribed)
        removed = sorted(self._subscribed - wanted)
        if added:
            await pubsub.subscribe(*added)
            self._subscribed.update(added)
            for channel in added:
                future = self._waiting.pop(channel, None)
                if future is not None and not future.done():
                    future.set_result(None)
        if removed:
            await pubsub.unsubscribe(*removed)
            self._subscribed.difference_update(removed)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        channel = message["channel"]
        sink = self._sinks.get(channel.decode() if isinstance(channel, bytes) else str(channel))
        if sink is None:
            return  # unwatched while the message was on its way
        try:
            sink(message["data"])
        except Exception:  # one session's bug must not stop the others' events
            log.exception("handling an event on %s failed", channel)

    async def _drop(self, pubsub: PubSub | None) -> None:
        self._subscribed.clear()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
