"""Ending: the one retry-through-an-outage loop, giving up, and publication through it (no Redis needed).

The publication itself (ack and publish in one script, exactly once) is tested on a real Redis in
tests/wire/test_outcomes.py and through the worker in test_worker.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

import inference.ending
from inference.consumer import StreamConsumer
from inference.ending import Ending, GaveUpError, retry
from inference.scheduler import Job
from runtime.redis import Outage
from wire.config import WorkerSettings
from wire.keys import Keys
from wire.messages import DropReason, DropSite, FrameMessage

log = logging.getLogger("test.ending")


class Flaky:
    """A Redis step that fails as if the server were down ``failures`` times, then returns ``value``."""

    def __init__(self, failures: int, value: Any = "done") -> None:
        self.failures = failures
        self.value = value
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise RedisConnectionError("Connection refused")
        return self.value


def quick_outage(what: str = "testing") -> Outage:
    return Outage(what, log, max_delay_s=0.001)  # waits 0.1 s once, then 1 ms


async def test_a_step_is_retried_through_an_outage_until_it_works(caplog: pytest.LogCaptureFixture) -> None:
    step = Flaky(failures=3)
    with caplog.at_level(logging.INFO, logger="test.ending"):
        assert await retry(step, quick_outage("publishing outcomes"), lambda: False) == "done"
    assert step.calls == 4
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2  # the outage is logged once when it starts and once when it ends
    assert messages[0].startswith("redis unavailable while publishing outcomes")
    assert messages[1].startswith("reconnected to redis (publishing outcomes)")


async def test_giving_up_stops_the_retries() -> None:
    step = Flaky(failures=100)
    attempts_allowed = 3
    with pytest.raises(GaveUpError):
        await retry(step, quick_outage(), lambda: step.calls >= attempts_allowed)
    assert step.calls == attempts_allowed


async def test_the_first_attempt_is_made_even_when_giving_up_already() -> None:
    works = Flaky(failures=0)
    assert await retry(works, quick_outage(), lambda: True) == "done"
    fails = Flaky(failures=1)
    with pytest.raises(GaveUpError):
        await retry(fails, quick_outage(), lambda: True)
    assert fails.calls == 1


async def test_giving_up_during_the_wait_means_no_further_attempt() -> None:
    step = Flaky(failures=100)
    flag = {"up": False}
    outage = quick_outage()
    real_failed = outage.failed

    async def failed_then_give_up(exc: BaseException) -> None:
        await real_failed(exc)
        flag["up"] = True  # the worker gave up while this step was waiting to retry

    outage.failed = failed_then_give_up  # type: ignore[method-assign]
    with pytest.raises(GaveUpError):
        await retry(step, outage, lambda: flag["up"])
    assert step.calls == 1


async def test_errors_other_than_redis_being_down_are_not_retried() -> None:
    async def refused() -> None:
        raise ResponseError("WRONGTYPE")

    with pytest.raises(ResponseError):
        await retry(refused, quick_outage(), lambda: False)


def ending() -> Ending:
    consumer = StreamConsumer(redis=None, stream="frames", name="w1")  # type: ignore[arg-type]
    return Ending(None, Keys(), WorkerSettings(), consumer, model="m", worker_id="w1", log=log)  # type: ignore[arg-type]


def test_giving_up_starts_at_the_deadline_set_once() -> None:
    end = ending()
    assert not end.giving_up()
    end.give_up_at(time.monotonic() + 60)
    assert not end.giving_up()
    end.give_up_at(time.monotonic() - 0.001)
    assert end.giving_up()


def test_outcomes_are_signed_by_the_worker() -> None:
    frame = FrameMessage(
        session="s", seq=4, received_ms=10.0, deadline_ms=99.0, model="m", width=2, height=3, image=b"x"
    )
    drop = ending().drop(frame, DropReason.DEADLINE, "late")
    assert (drop.session, drop.seq, drop.received_ms, drop.model) == ("s", 4, 10.0, "m")
    assert (drop.reason, drop.site, drop.worker, drop.detail) == (
        DropReason.DEADLINE,
        DropSite.WORKER,
        "w1",
        "late",
    )
    job = Job(entry_id="1-0", frame=frame, read_ms=frame.submitted_ms + 7, decode_ms=1.5, preprocess_ms=2.5)
    result = ending().result(job, [], version="v2", inference_ms=3.0, postprocess_ms=4.0, batch_size=2)
    assert (result.model_version, result.worker, result.batch_size, result.width, result.height) == (
        "v2",
        "w1",
        2,
        2,
        3,
    )
    assert result.timings.queue_ms == pytest.approx(7.0)
    assert (result.timings.decode_ms, result.timings.inference_ms, result.timings.postprocess_ms) == (
        1.5,
        3.0,
        4.0,
    )


async def test_publication_retries_through_an_outage_and_acks_each_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[Sequence[Any]] = []
    flaky = Flaky(failures=2, value=[True, False])

    async def publish_outcomes(redis: Any, keys: Keys, items: Sequence[Any], **limits: Any) -> list[bool]:
        calls.append(items)
        result: list[bool] = await flaky()
        return result

    monkeypatch.setattr(inference.ending, "publish_outcomes", publish_outcomes)
    monkeypatch.setattr(inference.ending, "Outage", lambda what, log: quick_outage(what))
    end = ending()
    frame = FrameMessage(
        session="s", seq=0, received_ms=0, deadline_ms=1, model="m", width=1, height=1, image=b"x"
    )
    outcomes = [(f"{i}-0", end.drop(frame, DropReason.DEADLINE, "late")) for i in range(2)]
    assert await end.publish(outcomes) == [True, False]
    assert flaky.calls == 3
    assert [ack.entry_id for _outcome, ack in calls[-1]] == ["0-0", "1-0"]
    assert {(ack.stream, ack.group) for _outcome, ack in calls[-1]} == {("frames", "workers")}


async def test_a_publication_given_up_on_leaves_its_entries_unended(monkeypatch: pytest.MonkeyPatch) -> None:
    down = Flaky(failures=10**6)

    async def publish_outcomes(*args: Any, **kwargs: Any) -> list[bool]:
        result: list[bool] = await down()
        return result

    async def count_drop(*args: Any, **kwargs: Any) -> bool:
        result: bool = await down()
        return result

    monkeypatch.setattr(inference.ending, "publish_outcomes", publish_outcomes)
    monkeypatch.setattr(inference.ending, "count_drop", count_drop)
    end = ending()
    end.give_up_at(time.monotonic())
    frame = FrameMessage(
        session="s", seq=0, received_ms=0, deadline_ms=1, model="m", width=1, height=1, image=b"x"
    )
    assert await end.publish([("1-0", end.drop(frame, DropReason.SHUTDOWN, "stopped"))]) == [False]
    assert await end.count_unroutable("2-0", DropReason.SHUTDOWN) is False
    assert down.calls == 2  # one attempt each, no retry
