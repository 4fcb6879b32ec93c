"""Which of the bridge's sessions have lost their owner: the rule of the bridge's session watchdog.

Signaling owns each session's record (``wire.bridge_rpc``): it saves it before the offer with a TTL of
``session_ttl_s`` and refreshes it every ``session_refresh_interval(ttl)`` (a third of the TTL), saving
it again when Redis lost it (a restart, a flush). The record expiring is how a bridge learns that the
owner died, since nobody else would tell it. But a record can also be missing for a while when its
owner is alive: after a Redis restart it is gone until the owner's next refresh, which may come a whole
refresh interval later, and a refresh can fail once more while the owner's connection pool reconnects.

The rule: a session is closed as orphaned only when its record has been seen missing, with Redis
answering, for longer than twice the owner's refresh interval (one interval, plus one more for a
refresh that failed while reconnecting), counted from the first check that found it missing. A record
found again resets the count; so does a Redis outage (the owner cannot save anything meanwhile, so time
without Redis is never held against it). The owner's refresh interval is taken from the longest TTL the
bridge has seen on the record (so a signaling replica run with another ``session_ttl_s`` is judged by
its own), and never below the bridge's own setting. An explicit end (signaling's hangup request, or the
peer connection closing) closes a session at once, without this rule. With the defaults (TTL 10 s) an
orphaned session closes 10 s + 6.7 s (plus up to one check interval) after its owner's last refresh.
"""

from __future__ import annotations

from wire.config import session_refresh_interval


def missing_grace_s(refresh_s: float) -> float:
    """How long a record refreshed every ``refresh_s`` may be missing before its session is orphaned."""
    return 2 * refresh_s


class OrphanCheck:
    """Tracks since when each session's record has been missing; says which have been for too long."""

    def __init__(self, session_ttl_s: float) -> None:
        self.session_ttl_s = session_ttl_s
        """The TTL the bridge's settings expect; a longer one seen on a record counts instead."""
        self._missing_since: dict[str, float] = {}
        self._owner_ttl_s: dict[str, float] = {}

    def grace_s(self, session: str) -> float:
        """How long ``session``'s record may be missing."""
        ttl_s = max(self.session_ttl_s, self._owner_ttl_s.get(session, 0.0))
        return missing_grace_s(session_refresh_interval(ttl_s))

    def orphaned(self, session: str, *, ttl_s: float | None, now: float) -> bool:
        """Note one check of ``session``'s record at monotonic ``now``: its remaining TTL in seconds
        (None: missing; 0 or less: no expiry) ; True when the session must close."""
        if ttl_s is not None:
            self._missing_since.pop(session, None)
            if ttl_s > 0:
                self._owner_ttl_s[session] = max(ttl_s, self._owner_ttl_s.get(session, 0.0))
            return False
        since = self._missing_since.setdefault(session, now)
        return now - since > self.grace_s(session)

    def missing_for(self, session: str, now: float) -> float:
        """Seconds ``session``'s record has been seen missing (0 when it was found at the last check)."""
        since = self._missing_since.get(session)
        return 0.0 if since is None else now - since

    def forget(self, session: str) -> None:
        """The session ended: stop tracking it."""
        self._missing_since.pop(session, None)
        self._owner_ttl_s.pop(session, None)

    def outage(self) -> None:
        """Redis could not be asked: no record can be saved meanwhile, so every count starts again."""
        self._missing_since.clear()
