"""Stopping asyncio tasks that talk to Redis.

redis-py's asyncio client can swallow a cancellation that lands at the wrong moment of a command (seen
with redis-py 8.1 right after a command that raised; upstream redis/redis-py#2028 and #2551), and the
task then runs on as if nothing happened. ``cancel_and_wait`` cancels again until the task really ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Task[Any], retry_s: float = 0.1) -> None:
    """Cancel ``tasks`` and return once all have ended, re-cancelling any that swallowed a cancellation."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=retry_s)
    for task in tasks:  # retrieve outcomes so that asyncio does not log "exception never retrieved"
        if task.done() and not task.cancelled():
            with contextlib.suppress(Exception):
                task.result()
