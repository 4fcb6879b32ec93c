"""runtime/bootstrap.py: the stop signals, Redis ping, metrics port and ids every service starts with."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from runtime.bootstrap import stop_requested


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_either_signal_sets_the_event_and_the_handlers_go_afterwards(sig: signal.Signals) -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a script's background job starts
    try:
        with stop_requested() as stop:
            assert not stop.is_set()
            os.kill(os.getpid(), sig)
            await asyncio.wait_for(stop.wait(), 5)
        assert not asyncio.get_running_loop().remove_signal_handler(sig)  # none left to remove
    finally:
        signal.signal(signal.SIGINT, before)
