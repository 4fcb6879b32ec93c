"""Supervision: a crashed loop is logged with its traceback and starts again; a crashed session task
hands its exception to the session."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from mediabridge import supervise


async def test_a_crashing_loop_is_logged_and_restarted(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervise, "RESTART_DELAY_S", 0.01)
    runs = 0
    third = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            third.set()
            await asyncio.Event().wait()  # runs on, as a healthy loop does
        raise RuntimeError(f"crash {runs}")

    caplog.set_level(logging.ERROR, logger="mediabridge.supervise")
    task = asyncio.create_task(supervise.forever("the test loop", loop))
    try:
        await asyncio.wait_for(third.wait(), 10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    crashes = [r for r in caplog.records if "the test loop crashed" in r.getMessage()]
    assert len(crashes) == 2
    assert crashes[0].exc_info is not None and "crash 1" in str(crashes[0].exc_info[1])


async def test_a_loop_that_returns_is_restarted_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervise, "RESTART_DELAY_S", 0.01)
    runs = 0
    again = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            again.set()

    task = asyncio.create_task(supervise.forever("the returning loop", loop))
    try:
        await asyncio.wait_for(again.wait(), 10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_watched_task_that_crashes_calls_its_handler(caplog: pytest.LogCaptureFixture) -> None:
    handled: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def on_crash(exc: BaseException) -> None:
        handled.set_result(exc)

    async def crashing() -> None:
        raise KeyError("gone")

    async def cancelled() -> None:
        await asyncio.Event().wait()

    caplog.set_level(logging.ERROR, logger="mediabridge.supervise")
    supervise.watch(asyncio.create_task(crashing()), "the crashing task", on_crash)
    quiet = supervise.watch(asyncio.create_task(cancelled()), "the cancelled task", on_crash)
    exc = await asyncio.wait_for(handled, 10)
    assert isinstance(exc, KeyError)
    quiet.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await quiet
    await asyncio.sleep(0)
    messages = [r.getMessage() for r in caplog.records]
    assert "the crashing task crashed" in messages and "the cancelled task crashed" not in messages
