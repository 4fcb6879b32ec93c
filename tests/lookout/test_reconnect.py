"""The reconnect schedule and the per-session track, in process (reconnects themselves: test_stream.py)."""

from __future__ import annotations

import asyncio
import random

import pytest
from aiortc.mediastreams import MediaStreamError, VideoStreamTrack

from lookout.reconnect import (
    INITIAL_DELAY_S,
    JITTER,
    MAX_DELAY_S,
    PERMANENT_CODES,
    SessionTrack,
    backoff_delay,
    drain,
    wants_reconnect,
)


def test_the_delay_starts_at_the_initial_step_and_doubles() -> None:
    no_jitter = [backoff_delay(attempt, jitter=0.0) for attempt in range(6)]
    assert no_jitter == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]


def test_the_delay_never_passes_the_cap_even_for_huge_attempt_numbers() -> None:
    assert {backoff_delay(attempt, jitter=0.0) for attempt in (6, 50, 10_000)} == {MAX_DELAY_S}


@pytest.mark.parametrize("attempt", [0, 1, 3, 10])
def test_jitter_stays_within_its_range_below_the_step(attempt: int) -> None:
    rng = random.Random(attempt)
    step = min(MAX_DELAY_S, INITIAL_DELAY_S * 2**attempt)
    delays = [backoff_delay(attempt, rng=rng) for _ in range(2000)]
    assert all(step * (1 - JITTER) <= delay <= step for delay in delays)
    # Spread over the range rather than stuck at one end: clients lost together do not return together.
    assert max(delays) - min(delays) > 0.8 * JITTER * step


def test_the_extremes_of_the_random_draw_give_the_ends_of_the_range() -> None:
    class Fixed(random.Random):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.value = value

        def random(self) -> float:
            return self.value

    assert backoff_delay(2, rng=Fixed(0.0)) == 2.0
    assert backoff_delay(2, rng=Fixed(1.0)) == pytest.approx(2.0 * (1 - JITTER))


def test_cameras_reconnect_by_default_and_files_do_not() -> None:
    assert wants_reconnect("rtsp://cam.local/stream") and wants_reconnect("/dev/video0")
    assert not wants_reconnect("clip.mp4") and not wants_reconnect("https://host/video.mp4")


def test_refusals_a_retry_cannot_fix_are_permanent_and_losses_are_not() -> None:
    assert {"unauthorized", "unknown_model", "bad_sdp"} <= PERMANENT_CODES
    transient = {"bridge_lost", "no_bridge", "no_worker", "internal", "closed", "unreachable"}
    assert not transient & PERMANENT_CODES


async def test_a_session_track_relays_frames_and_stopping_it_leaves_the_source_running() -> None:
    source = VideoStreamTrack()
    sent: list[int] = []
    first = SessionTrack(source, lambda: sent.append(1))
    frame = await first.recv()
    assert frame.width > 0 and sent == [1]
    first.stop()  # what aiortc's sender does when its peer connection closes
    assert source.readyState == "live"
    with pytest.raises(MediaStreamError):
        await first.recv()
    second = SessionTrack(source, lambda: sent.append(2))
    await second.recv()
    assert sent == [1, 2]
    source.stop()


async def test_draining_reads_the_source_until_cancelled_and_ends_with_the_source() -> None:
    source = VideoStreamTrack()
    task = asyncio.create_task(drain(source))
    await asyncio.sleep(0.1)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    source.stop()
    await asyncio.wait_for(drain(source), 1.0)  # an ended source: returns, no error
