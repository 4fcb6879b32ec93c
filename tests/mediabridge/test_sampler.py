"""The sampler: sample rate, latest-frame-wins, in-flight limit, every accepted frame ends once.

A fake publisher stands in for FrameClient here (no Redis): it records submissions and drops and lets
the test decide when a worker "answers". The real FrameClient path is covered by the live tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

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

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq - 1

    async def submit(self, jpeg: bytes, **kw: Any) -> tuple[int, asyncio.Future[ResultMessage | DropRecord]]:
        assert jpeg[:2] == b"\xff\xd8"
        future: asyncio.Future[ResultMessage | DropRecord] = asyncio.get_running_loop().create_future()
        self.submitted[kw["seq"]] = future
        self.meta[kw["seq"]] = kw
        return kw["seq"], future

    async def wait(self, seq: int, future: asyncio.Future[Any], *, model: str, timeout_s: float) -> Any:
        return await asyncio.wait_for(future, timeout_s)

    async def drop(
        self, seq: int, *, model: str, reason: DropReason, site: DropSite, detail: str = ""
    ) -> None:
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


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait for the sampler's tasks (encoding runs in a thread) without assuming how fast they are."""
    await wait_until(lambda: _now(predicate), timeout=20, interval=0.01, what=what)


async def _now(predicate: Callable[[], bool]) -> bool:
    return predicate()


@pytest.fixture
async def running() -> Any:
    publisher = FakePublisher()
    sampler = Sampler(publisher, model="m", sample_fps=10, in_flight=2, jpeg_quality=80, deadline_ms=5000)
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
