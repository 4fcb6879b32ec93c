"""The watchdog's rule: a record missing for less than the grace (being saved again) closes nothing."""

from __future__ import annotations

import pytest

from mediabridge.orphans import OrphanCheck, missing_grace_s
from wire.config import BridgeSettings


def test_the_grace_is_two_refresh_intervals_of_the_owner() -> None:
    settings = BridgeSettings(session_ttl_s=10.0)
    assert settings.session_refresh_s == pytest.approx(10.0 / 3)
    assert missing_grace_s(settings.session_refresh_s) == pytest.approx(20.0 / 3)
    assert OrphanCheck(10.0).grace_s("s") == pytest.approx(20.0 / 3)
    assert BridgeSettings(session_ttl_s=0.3).session_refresh_s == 0.2  # never a busy refresh


def test_a_record_missing_for_less_than_the_grace_is_not_an_orphan() -> None:
    check = OrphanCheck(session_ttl_s=9.0)  # refreshed every 3 s: 6 s of grace
    assert not check.orphaned("s", ttl_s=9.0, now=0.0)
    assert not check.orphaned("s", ttl_s=None, now=1.0)  # Redis restarted: gone until re-saved
    assert not check.orphaned("s", ttl_s=None, now=7.0)  # exactly at the grace: still tolerated
    assert check.missing_for("s", 7.0) == 6.0
    assert not check.orphaned("s", ttl_s=8.5, now=7.5)  # re-saved
    assert check.missing_for("s", 8.0) == 0.0
    assert not check.orphaned("s", ttl_s=None, now=8.0)  # missing again: counted afresh
    assert check.orphaned("s", ttl_s=None, now=14.5)


def test_an_owner_with_a_longer_ttl_is_judged_by_its_own_refresh_interval() -> None:
    check = OrphanCheck(session_ttl_s=3.0)  # the bridge's setting: 2 s of grace
    assert not check.orphaned("slow", ttl_s=29.5, now=0.0)  # its signaling uses a 30 s TTL
    assert not check.orphaned("fast", ttl_s=2.5, now=0.0)
    assert check.grace_s("slow") == pytest.approx(2 * 29.5 / 3)
    assert check.grace_s("fast") == pytest.approx(2.0)  # never below the bridge's own setting
    assert not check.orphaned("slow", ttl_s=None, now=1.0)
    assert not check.orphaned("fast", ttl_s=None, now=1.0)
    assert not check.orphaned("slow", ttl_s=None, now=8.0)
    assert check.orphaned("fast", ttl_s=None, now=8.0)
    assert not check.orphaned("none", ttl_s=0.0, now=9.0)  # a record without expiry is alive


def test_an_outage_restarts_every_count_and_sessions_are_counted_apart() -> None:
    check = OrphanCheck(session_ttl_s=3.0)
    assert not check.orphaned("a", ttl_s=None, now=0.0)
    assert not check.orphaned("b", ttl_s=3.0, now=0.0)
    check.outage()  # nobody could save anything meanwhile
    assert not check.orphaned("a", ttl_s=None, now=10.0)
    assert not check.orphaned("b", ttl_s=None, now=11.0)
    assert check.orphaned("a", ttl_s=None, now=12.5)
    assert not check.orphaned("b", ttl_s=None, now=12.5)
    check.forget("a")
    assert check.missing_for("a", 13.0) == 0.0
