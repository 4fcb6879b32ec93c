"""bench/bench_pipeline.py: its load generators and figures, on a real Redis and an in-process worker.

No speed is asserted: only that what the bench counts adds up.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from redis.asyncio import Redis

from bench.bench_detector import sample_jpegs
from bench.bench_pipeline import (
    MODEL,
    CpuMeter,
    Run,
    closed_loop,
    cores_allow,
    cpu_per_frame,
    cpu_rows,
    main,
    open_loop,
    record,
)
from inference.detector import Detector
from inference.worker import Worker
from tests.support.processes import wait_until
from wire.config import WorkerSettings
from wire.keys import Keys
from wire.liveness import live_workers
from wire.messages import DropReason, DropRecord, DropSite, ResultMessage, Timings


def test_record_separates_latency_from_the_model_run() -> None:
    run = Run(seconds=2.0)
    result = ResultMessage(
        session="s",
        seq=0,
        received_ms=1000.0,
        model=MODEL,
        model_version="v",
        worker="w",
        width=1,
        height=1,
        timings=Timings(inference_ms=30.0),
        done_ms=1040.0,
    )
    record(run, result, arrived_ms=1045.0)
    record(run, DropRecord(session="s", seq=1, reason=DropReason.DEADLINE, site=DropSite.WORKER), 1050.0)
    assert (run.results, run.drops, run.per_s) == (1, 1, 0.5)
    assert run.latency_ms == [40.0] and run.added_ms == [15.0]


def test_cpu_meter_counts_a_busy_process_and_not_an_idle_one() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # past the interpreter's start-up
        meter = CpuMeter({"busy": busy.pid})
        meter.start()
        time.sleep(0.6)
        meter.stop()
    finally:
        busy.kill()
        busy.wait()
    assert meter.spent["busy"] > 0.1
    assert meter.spent["bench client"] < meter.spent["busy"]  # this process slept meanwhile


def test_cpu_per_frame_splits_the_workers_from_the_model_run() -> None:
    meter = CpuMeter({})
    meter.spent = {"worker 1": 2.0, "worker 2": 2.0, "redis-server": 0.1, "bench client": 0.2}
    split = cpu_per_frame(meter, Run(results=200), model_ms=15.0)
    assert split == {"model": 15.0, "worker_other": 5.0, "redis": 0.5, "client": 1.0, "total": 21.5}
    assert cpu_per_frame(None, Run(results=200), model_ms=15.0) == {}


def test_the_cores_bound_the_ratio_only_when_they_are_full() -> None:
    # 2 cores, 20 ms of CPU per frame: at most 100 frames/s, against 130 for the raw models.
    assert cores_allow(2, 20.0, 130.0) == 100 / 130
    assert cores_allow(16, 20.0, 130.0) == 1.0  # spare cores: only the models themselves bound it
    split = {"model": 15.0, "worker_other": 4.0, "redis": 0.5, "client": 1.0, "total": 20.5}
    run = {"cores": 2, "one_worker_cpu_ms": split, "two_workers_cpu_ms": split}
    (_one, _two, (name, figure)) = cpu_rows([{**run, "two_workers_cpu_bound_ratio": 0.75}])
    assert name == "2 workers on 2 cores" and "at most 0.75 x raw" in figure
    assert "needs at most 1.7 ms per frame outside the model" in figure  # 15 x (1 / 0.9 - 1)
    (*_rows, (name, figure)) = cpu_rows([{**run, "cores": 16, "two_workers_cpu_bound_ratio": 1.0}])
    assert name == "2 workers on 16 cores" and "needs" not in figure
    assert cpu_rows([{**run, "two_workers_cpu_ms": {}}]) == []


def test_missing_model_is_a_clear_exit(tmp_path: Path) -> None:
    assert main(["--model", str(tmp_path / "nope.onnx")]) == 2


async def test_load_generators_account_for_every_frame(
    redis: Redis, video_path: Path, model_path: Path
) -> None:
    frames = [(jpeg, 640, 480) for jpeg in sample_jpegs(video_path, 4)]
    settings = WorkerSettings(key_prefix="one", heartbeat_interval_s=0.2)
    worker = Worker(redis, await asyncio.to_thread(Detector.load, model_path, threads=1), settings)
    task = asyncio.create_task(worker.run())
    try:

        async def started() -> bool:
            return bool(await live_workers(redis, Keys("one"), MODEL))

        await wait_until(started, timeout=30, what="the worker to start")
        meter = CpuMeter({})
        closed = await closed_loop(redis, "one", frames, lanes=2, seconds=0.5, meter=meter)
        assert closed.results > 0 and closed.drops == 0 and closed.seconds == 0.5
        assert meter.spent["bench client"] > 0  # the window of counted results was metered
        # A deadline no frame can meet (1 µs; the settings refuse a deadline of 0 or less): every offered
        # frame must come back as a drop, none lost.
        opened = await open_loop(redis, "one", frames, rate=20, seconds=0.5, deadline_ms=0.001)
        assert opened.results == 0 and opened.drops >= 5
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)
