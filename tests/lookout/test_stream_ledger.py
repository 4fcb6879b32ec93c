"""The accounting of `lookout stream`: sessions' stats added up, gaps counted as drops, stalls."""

from __future__ import annotations

from lookout.stream_ledger import GAP_REASON, SessionTally, StreamLedger, describe, frames_in, wall_ms
from wire.signaling import StatsMessage


def stats(inferred: int, dropped: int, **by_reason: int) -> StatsMessage:
    return StatsMessage(inferred=inferred, dropped=dropped, by_reason=by_reason)


def test_frames_of_a_gap_are_its_length_at_the_sample_rate() -> None:
    assert frames_in(1000.0, 4000.0, 10.0) == 30
    assert frames_in(1000.0, 1040.0, 10.0) == 0
    assert frames_in(4000.0, 1000.0, 10.0) == 0  # clocks that went backwards count nothing


def test_stats_that_grow_are_progress_and_repeated_ones_are_not() -> None:
    tally = SessionTally()
    assert tally.observe(stats(3, 1, superseded=1))
    assert tally.last_progress_ms is not None
    assert not tally.observe(stats(3, 1, superseded=1))
    assert (tally.inferred, tally.dropped, tally.by_reason) == (3, 1, {"superseded": 1})


def test_sessions_and_gaps_add_up_in_the_summary() -> None:
    ledger = StreamLedger()
    for _ in range(12):
        ledger.frame_sent()
    one = ledger.new_session()
    one.session = "a"
    one.observe(stats(5, 2, superseded=2))
    two = ledger.new_session()
    two.session = "b"
    two.observe(stats(4, 1, in_flight_limit=1))
    gap = ledger.gap(10_000.0, 12_500.0, 10.0, "closed: signaling closed the connection")
    assert gap.record() == {
        "event": "gap",
        "from_ms": 10_000.0,
        "to_ms": 12_500.0,
        "dropped": 25,
        "reason": "closed: signaling closed the connection",
    }
    summary = ledger.summary(lost=None)
    assert summary == {
        "event": "summary",
        "sessions": 2,
        "frames_sent": 12,
        "results": 9,
        "dropped": 28,
        "by_reason": {"in_flight_limit": 1, GAP_REASON: 25, "superseded": 2},
        "gaps": 1,
        "gap_s": 2.5,
        "lost": None,
    }
    line = describe(summary)
    assert "9 results" in line and "stream_gap 25" in line and "1 gap(s) totalling 2.5 s" in line


def test_results_counted_from_detections_when_the_stats_lag() -> None:
    tally = SessionTally()
    tally.observe(stats(2, 0))
    for _ in range(5):
        tally.detections += 1
    assert tally.results == 5


def test_a_stall_is_frames_sent_after_the_last_progress() -> None:
    ledger = StreamLedger()
    tally = ledger.new_session()
    tally.started_ms = wall_ms() - 20_000
    assert ledger.stalled_s(tally, wall_ms()) == 0.0  # nothing sent: an idle source is no stall
    ledger.frame_sent()
    assert ledger.stalled_s(tally, wall_ms()) >= 19.0
    tally.observe(stats(1, 0))
    assert ledger.stalled_s(tally, wall_ms()) == 0.0
