"""Who may join: a join rate per client address, and caps on live sessions per client and per replica.

A join costs no bridge slot and no key by default, so without these one client could hold every
session a replica can serve. The client address is the TCP peer (``request.remote``); behind a reverse
proxy every client shares the proxy's address, so raise ``max_sessions_per_client`` and
``joins_per_minute_per_client`` there (or let the proxy limit per client). The counts are this
replica's own: each replica of a cluster enforces the limits on what it serves.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from wire.config import SignalingSettings
from wire.signaling import ErrorCode

RATE_WINDOW_S = 60.0
"""The window of ``joins_per_minute_per_client``."""

SWEEP_ABOVE = 10_000
"""With more clients than this in the rate table, idle ones are swept out (bounded memory)."""


class Refused(Exception):
    """A join the limits refuse, with the error code the client gets."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Seat:
    """One admitted session's place in the counts; ``release`` (idempotent) gives it back."""

    def __init__(self, admission: Admission, client: str) -> None:
        self._admission = admission
        self.client = client
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._give_back(self.client)


class Admission:
    """The join limits of one replica."""

    def __init__(self, settings: SignalingSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.live = 0
        self._per_client: dict[str, int] = {}
        self._joins: dict[str, deque[float]] = {}

    def sessions_of(self, client: str) -> int:
        return self._per_client.get(client, 0)

    def note_join(self, client: str) -> None:
        """Count a join attempt of ``client``; Refused(rate_limited) past ``joins_per_minute_per_client``."""
        now = self.clock()
        if len(self._joins) > SWEEP_ABOVE:
            self._sweep(now)
        joins = self._joins.setdefault(client, deque())
        while joins and now - joins[0] > RATE_WINDOW_S:
            joins.popleft()
        limit = self.settings.joins_per_minute_per_client
        if len(joins) >= limit:
            raise Refused(
                ErrorCode.RATE_LIMITED,
                f"more than {limit} joins within a minute from {client}; wait a little",
            )
        joins.append(now)

    def take_seat(self, client: str) -> Seat:
        """A place for one more session of ``client``; Refused(too_many_sessions) when a cap is reached."""
        cap = self.settings.max_sessions_per_replica
        if self.live >= cap:
            raise Refused(
                ErrorCode.TOO_MANY_SESSIONS, f"this server serves {cap} sessions already; try again later"
            )
        limit = self.settings.max_sessions_per_client
        if self.sessions_of(client) >= limit:
            raise Refused(
                ErrorCode.TOO_MANY_SESSIONS,
                f"{client} holds {limit} live sessions already; end one (bye) before joining again",
            )
        self.live += 1
        self._per_client[client] = self.sessions_of(client) + 1
        return Seat(self, client)

    def _give_back(self, client: str) -> None:
        self.live -= 1
        left = self.sessions_of(client) - 1
        if left > 0:
            self._per_client[client] = left
        else:
            self._per_client.pop(client, None)

    def _sweep(self, now: float) -> None:
        for client in [c for c, joins in self._joins.items() if not joins or now - joins[-1] > RATE_WINDOW_S]:
            del self._joins[client]
