"""Outage: one log line when Redis goes away, one when it is back, and retries that back off."""

from __future__ import annotations

import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from inference.outage import Outage


async def test_an_outage_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.outage")
    outage = Outage("reading frames", log, max_delay_s=0.01)
    with caplog.at_level(logging.INFO, logger="test.outage"):
        outage.ok()  # nothing was wrong: nothing to say
        for _ in range(3):
            await outage.failed(RedisConnectionError("connection refused"))
        assert outage.down
        outage.ok()
        outage.ok()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "redis unavailable while reading frames (connection refused)" in messages[0]
    assert messages[1].startswith("reconnected to redis (reading frames) after")
    assert not outage.down


async def test_note_logs_without_waiting(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage("heartbeats", logging.getLogger("test.outage"))
    with caplog.at_level(logging.WARNING, logger="test.outage"):
        outage.note(OSError("down"))
        outage.note(OSError("down"))
    assert len(caplog.records) == 1 and outage.down
