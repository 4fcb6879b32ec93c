"""Which of the bridge's sessions have lost their owner: the rule of the bridge's session watchdog.

Signaling owns each session's record (``wire.bridge_rpc``): it saves it before the offer and refreshes
it every ``session_refresh_s`` (a third of ``session_ttl_s``), saving it again when Redis lost it (a
restart, a flush). The record expiring is how a bridge learns that the owner died, since nobody else
would tell it. But a record can also be missing for a moment while its owner is alive: after a Redis
restart it is gone until the owner's next refresh, which may come a whole refresh interval later, and a
refresh can fail once more while the owner's connection pool reconnects.

The rule: a session is closed as orphaned only when its record has been seen missing, with Redis
answering, for longer than ``grace_s = 2 * session_refresh_s`` (one refresh interval, plus one more for a
refresh that failed while reconnecting), counted from the first check that found it missing. A record
found again resets the count; so does a Redis outage (the owner cannot save anything meanwhile, so time
without Redis is never held against it). An explicit end (signaling's hangup request, or the peer
connection closing) closes a session at once, without this rule. With the defaults (TTL 10 s) an
orphaned session closes 10 s + 6.7 s (plus up to one check interval) after its owner's last refresh.
"""

from __future__ import annotations


def missing_grace_s(session_refresh_s: float) -> float:
    """How long a session's record may be missing before the session counts as orphaned."""
    return 2 * session_refresh_s


class OrphanCheck:
    """Tracks since when each session's record has been missing; says which have been for too long."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._missing_since: dict[str, float] = {}

    def orphaned(self, session: str, *, alive: bool, now: float) -> bool:
        """Note one check of ``session``'s record (at monotonic ``now``); True when it must close."""
        if alive:
            self._missing_since.pop(session, None)
            return False
        since = self._missing_since.setdefault(session, now)
        return now - since > self.grace_s

    def missing_for(self, session: str, now: float) -> float:
        """Seconds ``session``'s record has been seen missing (0 when it was found at the last check)."""
        since = self._missing_since.get(session)
        return 0.0 if since is None else now - since

    def forget(self, session: str) -> None:
        """The session ended: stop tracking it."""
        self._missing_since.pop(session, None)

    def outage(self) -> None:
        """Redis could not be asked: no record can be saved meanwhile, so every count starts again."""
        self._missing_since.clear()
