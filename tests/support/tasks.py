"""Background tasks for a test's duration: started on entry, cancelled and awaited on exit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from wire.tasks import cancel_and_wait


@contextlib.asynccontextmanager
async def running_tasks(*loops: Coroutine[Any, Any, Any]) -> AsyncIterator[None]:
    """Run each coroutine (a service's ``run`` loop) as a task while the block runs."""
    tasks = [asyncio.create_task(loop) for loop in loops]
    try:
        yield
    finally:
        await cancel_and_wait(*tasks)
