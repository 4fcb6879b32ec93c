"""Join limits: a join rate per client address, session caps per client and per replica."""

from __future__ import annotations

from typing import Any

import pytest

from signaling.admission import RATE_WINDOW_S, Admission, Refused
from wire.config import SignalingSettings
from wire.signaling import ErrorCode


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def admission(clock: Clock, **overrides: Any) -> Admission:
    return Admission(SignalingSettings(**overrides), clock=clock)


def test_joins_per_minute_per_client_across_its_sockets() -> None:
    clock = Clock()
    limits = admission(clock, joins_per_minute_per_client=3)
    for _ in range(3):
        limits.note_join("10.0.0.1")
    with pytest.raises(Refused) as refused:
        limits.note_join("10.0.0.1")
    assert refused.value.code == ErrorCode.RATE_LIMITED and "10.0.0.1" in str(refused.value)
    limits.note_join("10.0.0.2")  # another client has its own budget
    clock.now += RATE_WINDOW_S + 0.1
    limits.note_join("10.0.0.1")  # the window slid past the earlier joins


def test_sessions_per_client_and_overall_are_capped_and_released() -> None:
    limits = admission(Clock(), max_sessions_per_replica=3, max_sessions_per_client=2)
    first, second = limits.take_seat("a"), limits.take_seat("a")
    with pytest.raises(Refused) as per_client:
        limits.take_seat("a")
    assert per_client.value.code == ErrorCode.TOO_MANY_SESSIONS and "a holds 2" in str(per_client.value)
    third = limits.take_seat("b")
    with pytest.raises(Refused) as overall:
        limits.take_seat("c")
    assert overall.value.code == ErrorCode.TOO_MANY_SESSIONS and "3 sessions" in str(overall.value)
    first.release()
    first.release()  # idempotent: one seat is given back once
    assert limits.live == 2 and limits.sessions_of("a") == 1
    limits.take_seat("c")
    second.release()
    third.release()
    assert limits.sessions_of("a") == 0 and limits.sessions_of("b") == 0


def test_the_rate_table_of_idle_clients_is_swept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("signaling.admission.SWEEP_ABOVE", 100)
    clock = Clock()
    limits = admission(clock)
    for i in range(101):
        limits.note_join(f"10.0.{i // 256}.{i % 256}")
    clock.now += RATE_WINDOW_S + 1
    limits.note_join("10.9.9.9")
    assert len(limits._joins) == 1  # the idle ones are gone: memory stays bounded


def test_the_record_ttl_must_span_three_refreshes() -> None:
    with pytest.raises(ValueError, match="session_ttl_s"):
        SignalingSettings(session_ttl_s=2.0, session_refresh_interval_s=1.0)
    SignalingSettings(session_ttl_s=3.5, session_refresh_interval_s=1.0)
