"""The sampler: sample rate, latest-frame-wins, in-flight limit, every accepted frame ends once, and a
Redis outage lived through (frames counted as ``redis_unavailable``, publishing resumed).

A fake publisher stands in for FrameClient here (no Redis): it records submissions and drops and lets
the test decide when a worker "answers", and when "Redis" is down. The real FrameClient path through a
real Redis restart is in tests/mediabridge/test_outage.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from mediabridge.sampler import Sampler, encode_jpeg
from tests.support.processes import wait_until
from wire.messages import DropReason, DropRecord, DropSite, ResultMessage


class Frame:
    def __init__(self, width: int = 64, height: int = 48) -> None:
        self.width, self.height = width, height

    def to_ndarray(self, **kwargs: Any) -> np.ndarray[Any, Any]:
        assert kwargs == {"format": "bgr24"}
        return np.full((self.height, self.width, 3), 128, np.uint8)


class FakePublisher:
    session = "s-test"

    def __init__(self) -> None:
        self.seq = 0
        self.submitted: dict[int, asyncio.Future[ResultMessage | DropRecord]] = {}
        self.meta: dict[int, dict[str, Any]] = {}
        self.drops: list[tuple[int, DropReason, DropSite]] = []
        self.down = False
        """While True, submit and drop raise what redis-py raises when the server is gone."""
        self.failed_submits = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq - 1

    async def submit(self, jpeg: bytes, **kw: Any) -> tuple[int, asyncio.Future[ResultMessage | DropRecord]]:
        assert jpeg[:2] == b"\xff\xd8"
        if self.down:
            self.failed_submits += 1
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        future: asyncio.Future[ResultMessage | DropRecord] = asyncio.get_running_loop().create_future()
        self.submitted[kw["seq"]] = future
        self.meta[kw["seq"]] = kw
        return kw["seq"], future

    async def wait(self, seq: int, future: asyncio.Future[Any], *, model: str, timeout_s: float) -> Any:
        return await asyncio.wait_for(future, timeout_s)

    async def drop(
        self, seq: int, *, model: str, reason: DropReason, site: DropSite, detail: str = ""
    ) -> None:
        if self.down:
            raise RedisConnectionError("Connection refused.")
        self.drops.append((seq, reason, site))

    def answer(self, seq: int) -> None:
        self.submitted[seq].set_result(
            ResultMessage(
                session=self.session,
                seq=seq,
                received_ms=0,
                model="m",
                model_version="1",
                worker="w",
                width=64,
                height=48,
            )
        )


class HeldDrops:
    """Stands in for the bridge's DropTally."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, DropReason]] = Counter()

    def count(self, model: str, reason: DropReason) -> None:
        self.counts[(model, reason)] += 1


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait for the sampler's tasks (encoding runs in a thread) without assuming how fast they are."""
    await wait_until(lambda: _now(predicate), timeout=20, interval=0.01, what=what)


async def _now(predicate: Callable[[], bool]) -> bool:
    return predicate()


def make_sampler(publisher: FakePublisher, held: HeldDrops | None = None) -> Sampler:
    return Sampler(
        publisher,
        held_drops=held or HeldDrops(),
        model="m",
        sample_fps=10,
        in_flight=2,
        jpeg_quality=80,
        deadline_ms=5000,
    )


@pytest.fixture
async def running() -> Any:
    publisher = FakePublisher()
    sampler = make_sampler(publisher)
    task = asyncio.create_task(sampler.run())
    yield publisher, sampler
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await sampler.close()


def test_encode_jpeg_gives_a_jpeg_of_the_frame_size() -> None:
    jpeg, width, height = encode_jpeg(Frame(64, 48), 80)
    assert jpeg[:2] == b"\xff\xd8" and (width, height) == (64, 48)


async def test_samples_at_the_session_rate_from_a_faster_stream(running: Any) -> None:
    _, sampler = running
    # 30 frames at 30 fps (received times are given, so this does not depend on the machine's speed).
    accepted = [sampler.push(Frame(), 1000.0 + i * 1000 / 30) for i in range(30)]
    assert sum(accepted) == 10  # 10 fps out of 30
    assert accepted[0] and not accepted[1] and not accepted[2] and accepted[3]


async def test_capture_time_and_deadline_are_stamped_from_the_receive_time(running: Any) -> None:
    publisher, sampler = running
    sampler.push(Frame(), 1234.0)
    await until(lambda: 0 in publisher.meta, "frame 0 submitted")
    assert publisher.meta[0]["received_ms"] == 1234.0
    assert publisher.meta[0]["deadline_ms"] == 1234.0 + 5000


async def test_in_flight_limit_drops_and_counts_instead_of_queueing(running: Any) -> None:
    publisher, sampler = running
    sampler.push(Frame(), 1000.0)
    sampler.push(Frame(), 1100.0)
    # (the second push may replace the first before the publisher took it: then it counts as superseded)
    await until(
        lambda: len(publisher.submitted) + len(publisher.drops) == 2 and sampler.in_flight >= 1, "out"
    )
    if publisher.drops:
        assert publisher.drops == [(0, DropReason.SUPERSEDED, DropSite.BRIDGE)]
        sampler.push(Frame(), 1200.0)
    await until(lambda: sampler.in_flight == 2, "two frames in flight")
    published = sorted(publisher.submitted)
    drops_before = len(publisher.drops)
    # Nobody answers: later frames wait in a one-slot mailbox and each replaces the one before.
    for i in range(4):
        sampler.push(Frame(), 2000.0 + i * 100)
    await until(lambda: len(publisher.drops) == drops_before + 3, "three counted drops")
    new_drops = publisher.drops[drops_before:]
    assert [r for _, r, _ in new_drops] == [DropReason.IN_FLIGHT_LIMIT] * 3
    assert all(site == DropSite.BRIDGE for _, _, site in publisher.drops)
    newest = publisher.seq - 1
    assert newest not in publisher.submitted
    # A result frees a slot: the newest waiting frame goes out, not an old one.
    publisher.answer(published[0])
    await until(lambda: newest in publisher.submitted, "the newest frame published")
    # Every accepted frame is accounted for: published or dropped, none twice.
    ended = set(publisher.submitted) | {seq for seq, _, _ in publisher.drops}
    assert len(ended) == sampler.accepted == len(publisher.submitted) + len(publisher.drops)


async def test_a_frame_waiting_at_close_is_counted_as_shutdown(running: Any) -> None:
    publisher, sampler = running
    sampler.push(Frame(), 1000.0)
    await until(lambda: sampler.in_flight == 1, "one frame in flight")
    sampler.push(Frame(), 1100.0)
    await until(lambda: sampler.in_flight == 2, "two frames in flight")
    sampler.push(Frame(), 1200.0)  # waits for a slot
    await sampler.close()
    assert (2, DropReason.SHUTDOWN, DropSite.BRIDGE) in publisher.drops
    assert not sampler.push(Frame(), 99999.0)  # closed: nothing more is accepted


async def test_a_redis_outage_counts_every_sampled_frame_and_publishing_resumes_after() -> None:
    publisher, held = FakePublisher(), HeldDrops()
    sampler = make_sampler(publisher, held)
    task = asyncio.create_task(sampler.run())
    clock = 1000.0

    def feed(frames: int) -> None:
        nonlocal clock
        for _ in range(frames):
            assert sampler.push(Frame(), clock)  # one frame per sample interval: each is accepted
            clock += 100.0

    try:
        feed(1)
        await until(lambda: 0 in publisher.submitted, "frame 0 published")
        publisher.answer(0)
        publisher.down = True
        feed(1)
        await until(lambda: sampler.redis_down, "the outage noticed")
        # Sample through the outage, at about the real rate, so that the publisher retries meanwhile.
        for _ in range(11):
            feed(1)
            await asyncio.sleep(0.05)
        await until(lambda: publisher.failed_submits >= 2, "publishing retried")
        await until(lambda: sampler.accepted == 1 + sampler.dropped + sampler.in_flight, "frames ended")
        unavailable = held.counts[("m", DropReason.REDIS_UNAVAILABLE)]
        assert unavailable == 12 == sampler.drops_by_reason[DropReason.REDIS_UNAVAILABLE]
        assert set(held.counts) == {("m", DropReason.REDIS_UNAVAILABLE)}  # no superseded, none recorded
        assert publisher.drops == [] and sampler.published == 1
        assert not task.done()  # lived through it

        publisher.down = False
        back = time.monotonic()
        feed(1)
        await until(lambda: sampler.published == 2, "publishing resumed")
        assert time.monotonic() - back < 2.0  # the retry pause grows to 1 s at most
        assert not sampler.redis_down
        assert sampler.accepted == sampler.published + sampler.dropped
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sampler.close()


async def test_a_drop_whose_record_redis_cannot_take_is_held_with_its_reason(running: Any) -> None:
    publisher, sampler = running
    sampler.push(Frame(), 1000.0)
    await until(lambda: sampler.in_flight == 1, "one frame in flight")
    sampler.push(Frame(), 1100.0)
    await until(lambda: sampler.in_flight == 2, "two frames in flight")
    sampler.push(Frame(), 1200.0)  # waits for a slot
    publisher.down = True
    await sampler.close()  # its shutdown drop cannot be written
    assert publisher.drops == []
    assert sampler.held_drops.counts == {("m", DropReason.SHUTDOWN): 1}


async def test_a_publish_that_fails_for_another_reason_ends_its_frame_and_raises() -> None:
    publisher = FakePublisher()
    sampler = make_sampler(publisher)

    async def broken(jpeg: bytes, **kw: Any) -> Any:
        raise ValueError("a bug")

    publisher.submit = broken  # type: ignore[method-assign]
    task = asyncio.create_task(sampler.run())
    sampler.push(Frame(), 1000.0)
    with pytest.raises(ValueError, match="a bug"):
        await asyncio.wait_for(task, 20)
    await sampler.close()
    assert publisher.drops == [(0, DropReason.SHUTDOWN, DropSite.BRIDGE)]
    assert sampler.in_flight == 0 and not sampler.push(Frame(), 99999.0)


async def test_outcomes_are_tallied_for_the_accounting_line(running: Any) -> None:
    publisher, sampler = running
    sampler.push(Frame(), 1000.0)
    await until(lambda: 0 in publisher.submitted, "frame 0 published")
    publisher.answer(0)
    await until(lambda: sampler.results == 1, "its result counted")
    sampler.push(Frame(), 1100.0)
    await until(lambda: 1 in publisher.submitted, "frame 1 published")
    publisher.submitted[1].set_result(
        DropRecord(session="s-test", seq=1, model="m", reason=DropReason.DEADLINE, site=DropSite.WORKER)
    )
    await until(lambda: sampler.later_drops[DropReason.DEADLINE] == 1, "its drop counted")
    assert sampler.accounting() == (
        "2 sampled; 0 dropped at the bridge; 2 published: 1 results, 1 dropped (deadline 1), "
        "0 unresolved at close (client timeouts)"
    )


async def _close_like_a_session(sampler: Sampler, task: asyncio.Task[None]) -> None:
    """What ``PeerSession.close`` does: cancel the sampler's run task, then close the sampler."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await sampler.close()


def _ended(publisher: FakePublisher, sampler: Sampler) -> int:
    """Frames that ended: results, drops recorded at the bridge, and later drops (timeouts, workers)."""
    return sampler.results + sum(sampler.later_drops.values()) + len(publisher.drops)


async def test_a_frame_being_published_when_the_session_closes_is_seen_through() -> None:
    """The run task cancelled while its frame's XADD is out (a close lands mid-publish): the frame is not
    lost. The publish finishes, and the frame ends as what became of it (here: the worker's result)."""
    publisher = FakePublisher()
    sampler = make_sampler(publisher)
    xadd_sent, xadd_answers = asyncio.Event(), asyncio.Event()
    real_submit = publisher.submit

    async def slow_submit(jpeg: bytes, **kw: Any) -> Any:
        xadd_sent.set()
        await xadd_answers.wait()
        return await real_submit(jpeg, **kw)

    publisher.submit = slow_submit  # type: ignore[method-assign]
    task = asyncio.create_task(sampler.run())
    assert sampler.push(Frame(), 1000.0)
    await asyncio.wait_for(xadd_sent.wait(), 20)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    xadd_answers.set()
    closing = asyncio.create_task(sampler.close())
    await until(lambda: 0 in publisher.submitted, "the publish finished")
    publisher.answer(0)
    await asyncio.wait_for(closing, 20)
    assert sampler.accepted == 1 and _ended(publisher, sampler) == 1, sampler.accounting()
    assert sampler.results == 1 and sampler.in_flight == 0


async def test_a_frame_being_encoded_when_the_session_closes_is_counted_as_shutdown() -> None:
    publisher = FakePublisher()
    sampler = make_sampler(publisher)
    encoding, release = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    class SlowFrame(Frame):
        def to_ndarray(self, **kwargs: Any) -> np.ndarray[Any, Any]:
            loop.call_soon_threadsafe(encoding.set)
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(20)
            return super().to_ndarray(**kwargs)

    task = asyncio.create_task(sampler.run())
    assert sampler.push(SlowFrame(), 1000.0)
    await asyncio.wait_for(encoding.wait(), 20)
    await _close_like_a_session(sampler, task)
    release.set()
    assert publisher.drops == [(0, DropReason.SHUTDOWN, DropSite.BRIDGE)], sampler.accounting()
    assert sampler.accepted == 1 and _ended(publisher, sampler) == 1 and not publisher.submitted
