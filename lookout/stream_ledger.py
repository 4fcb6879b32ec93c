"""What `lookout stream` can say about its frames: results and drops as the server reported, and gaps.

Each session's ``stats`` messages carry that session's running totals (results, drops by reason), so
the ledger keeps the last of each session and adds them up across reconnects. A gap between two
sessions is the client's own finding: the frames its source produced while no session was live, at
the sample rate, are counted as drops with the local reason ``stream_gap`` (no server saw them).

Progress is the evidence a session works: a ``detections`` message, or ``stats`` whose totals grew.
The time of the last progress starts a gap (the frames after it ended nowhere we know of) and shows a
stall: frames sent for a while with no result or drop reported for any of them.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

GAP_REASON = "stream_gap"
"""Drop reason of the frames sampled while the stream had no session (client-side, not a wire value)."""


def wall_ms() -> float:
    return time.time() * 1000.0


@dataclass
class SessionTally:
    """One session's totals, as its last ``stats`` said (results also counted from ``detections``)."""

    session: str = ""
    sample_fps: float = 0.0
    detections: int = 0
    inferred: int = 0
    dropped: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    started_ms: float = field(default_factory=wall_ms)
    last_progress_ms: float | None = None

    @property
    def results(self) -> int:
        # stats lag the detections by up to a second; both count the same frames.
        return max(self.detections, self.inferred)

    def observe(self, message: Any) -> bool:
        """Take in one server message; True if it shows progress."""
        if message.type == "detections":
            self.detections += 1
        elif message.type == "stats":
            grew = message.inferred + message.dropped > self.inferred + self.dropped
            self.inferred, self.dropped = message.inferred, message.dropped
            self.by_reason = dict(message.by_reason)
            if not grew:
                return False
        else:
            return False
        self.last_progress_ms = wall_ms()
        return True


@dataclass(frozen=True)
class Gap:
    from_ms: float
    to_ms: float
    dropped: int
    reason: str

    def record(self) -> dict[str, Any]:
        """The JSON line written for it."""
        return {
            "event": "gap",
            "from_ms": round(self.from_ms, 1),
            "to_ms": round(self.to_ms, 1),
            "dropped": self.dropped,
            "reason": self.reason,
        }


def frames_in(from_ms: float, to_ms: float, rate_fps: float) -> int:
    """Frames sampled at ``rate_fps`` over a span (the bridge samples by arrival time at that rate)."""
    return max(0, round((to_ms - from_ms) / 1000.0 * rate_fps))


class StreamLedger:
    """Every session of one `lookout stream` run, the gaps between them, and the frames sent."""

    def __init__(self) -> None:
        self.sessions: list[SessionTally] = []
        self.gaps: list[Gap] = []
        self.frames_sent = 0
        self.last_sent_ms: float | None = None

    def new_session(self) -> SessionTally:
        tally = SessionTally()
        self.sessions.append(tally)
        return tally

    def frame_sent(self) -> None:
        self.frames_sent += 1
        self.last_sent_ms = wall_ms()

    def gap(self, from_ms: float, to_ms: float, rate_fps: float, reason: str) -> Gap:
        gap = Gap(from_ms, to_ms, frames_in(from_ms, to_ms, rate_fps), reason)
        self.gaps.append(gap)
        return gap

    def stalled_s(self, tally: SessionTally, now_ms: float) -> float:
        """How long frames have been sent with no progress reported (0 when the source is idle)."""
        since = tally.last_progress_ms or tally.started_ms
        if self.last_sent_ms is None or self.last_sent_ms <= since:
            return 0.0
        return (now_ms - since) / 1000.0

    @property
    def results(self) -> int:
        return sum(t.results for t in self.sessions)

    @property
    def by_reason(self) -> dict[str, int]:
        totals: collections.Counter[str] = collections.Counter()
        for tally in self.sessions:
            totals.update(tally.by_reason)
        gap_drops = sum(g.dropped for g in self.gaps)
        if gap_drops:
            totals[GAP_REASON] += gap_drops
        return dict(sorted(totals.items()))

    def summary(self, lost: str | None) -> dict[str, Any]:
        """The end-of-run record (``lost``: why the stream ended without recovering, else None)."""
        by_reason = self.by_reason
        return {
            "event": "summary",
            "sessions": len([t for t in self.sessions if t.session]),
            "frames_sent": self.frames_sent,
            "results": self.results,
            "dropped": sum(by_reason.values()),
            "by_reason": by_reason,
            "gaps": len(self.gaps),
            "gap_s": round(sum(g.to_ms - g.from_ms for g in self.gaps) / 1000.0, 2),
            "lost": lost,
        }


def describe(summary: dict[str, Any]) -> str:
    """The summary as one log line."""
    reasons = ", ".join(f"{reason} {count}" for reason, count in summary["by_reason"].items())
    gaps = f", {summary['gaps']} gap(s) totalling {summary['gap_s']:g} s" if summary["gaps"] else ""
    dropped = f"{summary['dropped']} dropped" + (f" ({reasons})" if reasons else "")
    return (
        f"summary: {summary['sessions']} session(s), {summary['frames_sent']} frames sent, "
        f"{summary['results']} results, {dropped}{gaps}"
    )
