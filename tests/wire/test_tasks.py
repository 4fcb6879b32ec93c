"""cancel_and_wait: a task that swallows a cancellation (as redis-py sometimes does) is still stopped."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from wire.tasks import cancel_and_wait


async def test_a_swallowed_cancellation_is_repeated() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed == 0:
                    swallowed += 1
                    continue  # what a library bug looks like from outside
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await cancel_and_wait(task, retry_s=0.05)
    assert task.cancelled() and swallowed == 1


async def test_finished_and_failed_tasks_are_fine() -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    done = asyncio.create_task(asyncio.sleep(0))
    failed = asyncio.create_task(fail())
    await asyncio.sleep(0.01)
    await cancel_and_wait(done, failed)
    assert done.done() and failed.done()


async def test_a_redis_reader_cancelled_right_after_a_failed_command_stops(redis: Redis) -> None:
    # redis-py 8.1 loses a cancellation that lands here (see wire/tasks.py); the helper must not.
    ready = asyncio.Event()

    async def reader() -> None:
        try:
            await redis.xinfo_stream("no-such-stream")
        except Exception:
            pass
        ready.set()
        while True:
            await redis.xread({"no-such-stream": "0-0"}, block=200)

    task = asyncio.create_task(reader())
    await ready.wait()
    await asyncio.wait_for(cancel_and_wait(task), timeout=30)
    assert task.done()
