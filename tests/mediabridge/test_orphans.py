"""The watchdog's rule: a record missing for less than the grace (being saved again) closes nothing."""

from __future__ import annotations

from mediabridge.orphans import OrphanCheck, missing_grace_s
from wire.config import BridgeSettings


def test_the_grace_is_two_refresh_intervals_of_the_owner() -> None:
    settings = BridgeSettings(session_ttl_s=10.0)
    assert settings.session_refresh_s == 10.0 / 3
    assert missing_grace_s(settings.session_refresh_s) == 20.0 / 3
    assert BridgeSettings(session_ttl_s=0.3).session_refresh_s == 0.2  # never a busy refresh


def test_a_record_missing_for_less_than_the_grace_is_not_an_orphan() -> None:
    check = OrphanCheck(grace_s=6.0)
    assert not check.orphaned("s", alive=True, now=0.0)
    assert not check.orphaned("s", alive=False, now=1.0)  # Redis restarted: gone until re-saved
    assert not check.orphaned("s", alive=False, now=7.0)  # exactly at the grace: still tolerated
    assert check.missing_for("s", 7.0) == 6.0
    assert not check.orphaned("s", alive=True, now=7.5)  # re-saved
    assert check.missing_for("s", 8.0) == 0.0
    assert not check.orphaned("s", alive=False, now=8.0)  # missing again: counted afresh
    assert check.orphaned("s", alive=False, now=14.5)


def test_an_outage_restarts_every_count_and_sessions_are_counted_apart() -> None:
    check = OrphanCheck(grace_s=2.0)
    assert not check.orphaned("a", alive=False, now=0.0)
    assert not check.orphaned("b", alive=True, now=0.0)
    check.outage()  # nobody could save anything meanwhile
    assert not check.orphaned("a", alive=False, now=10.0)
    assert not check.orphaned("b", alive=False, now=11.0)
    assert check.orphaned("a", alive=False, now=12.5)
    assert not check.orphaned("b", alive=False, now=12.5)
    check.forget("a")
    assert check.missing_for("a", 13.0) == 0.0
