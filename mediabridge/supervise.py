"""Long-lived tasks that never stop in silence: a crash is logged with its traceback, then handled.

The bridge's loops (heartbeats, requests, the session watchdog, the drop tally's flusher) must run as
long as the bridge does: ``forever`` restarts one that raised, after a pause that grows while it keeps
failing. A session's own tasks (its sampler, its track reader) cannot simply start again mid-frame:
``watch`` logs the crash and hands it to the session, which closes with the reason. Redis outages never
get here: each loop rides them out itself (``runtime.redis.Outage``); what arrives here is a bug.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn

log = logging.getLogger(__name__)

RESTART_DELAY_S = 0.5
"""Pause before the first restart of a crashed loop; it doubles while the loop keeps crashing."""
MAX_RESTART_DELAY_S = 10.0
HEALTHY_RUN_S = 30.0
"""A loop that ran this long before it crashed starts again after the shortest pause."""


async def forever(what: str, loop: Callable[[], Awaitable[object]]) -> NoReturn:
    """Run ``loop()`` until cancelled; if it raises or returns, log it and start it again."""
    delay = RESTART_DELAY_S
    while True:
        started = time.monotonic()
        try:
            await loop()
        except Exception:
            log.exception("%s crashed; restarting it in %.1f s", what, delay)
        else:
            log.error("%s ended although it should run until stopped; restarting it in %.1f s", what, delay)
        if time.monotonic() - started >= HEALTHY_RUN_S:
            delay = RESTART_DELAY_S
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RESTART_DELAY_S)


def watch(
    task: asyncio.Task[None], what: str, on_crash: Callable[[BaseException], Coroutine[Any, Any, None]]
) -> asyncio.Task[None]:
    """Log ``task``'s crash with its traceback and await ``on_crash(exc)`` then; returns ``task``.

    The callback runs in a task of its own, kept referenced until it ends.
    """

    def done(finished: asyncio.Task[None]) -> None:
        if finished.cancelled() or finished.exception() is None:
            return
        exc = finished.exception()
        assert exc is not None
        log.error("%s crashed", what, exc_info=exc)
        handler = asyncio.get_running_loop().create_task(on_crash(exc), name=f"crash:{what}")
        _handlers.add(handler)
        handler.add_done_callback(_handlers.discard)

    task.add_done_callback(done)
    return task


_handlers: set[asyncio.Task[None]] = set()
"""Crash handlers still running (asyncio keeps only weak references to tasks)."""
