"""The frame backbone end to end: `lookout worker` processes fed through Redis, as ratios of raw ORT.

Starts a private redis-server and real worker processes (one ONNX Runtime thread each), submits 640x480
JPEG frames of ``vtest.mp4`` through ``wire.client.FrameClient`` and reports:

* throughput of 1 worker and of 2 workers (closed loop, enough frames in flight to keep them busy) as a
  ratio of raw ``session.run`` with the same threads, measured right before (2 raw sessions side by side
  for 2 workers). Target: at least 0.9.
* batch 1 against batch 4 (one worker).
* added latency: what the pipeline adds to the model run (capture to result at the client, minus the
  result's ``inference_ms``), p50 and p99, one frame in flight.
* overload: frames offered at 3x the measured capacity with a deadline of one single-frame inference;
  the issue's bound is p99(result - capture) < 3 x single-frame inference (the median ``inference_ms``
  measured at light load in this same run).
* where the CPU goes (Linux): CPU seconds per result of the workers, the redis-server and this bench
  client while the pipeline runs, beside the raw model run. When the workers already fill every core,
  throughput is cores / CPU per frame, so this shows how far below 1.0 the ratio must stay on this
  machine, and which part the rest is spent in.

Each figure is one run by default; ``--repeat N`` gives the median with min and max, which is what to
quote on this machine (its speed varies from minute to minute: raw ONNX Runtime on one thread has
measured anywhere from 50 to 132 img/s on these machines).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.bench_detector import sample_jpegs
from bench.raw import RawRunner
from bench.stats import percentile, summary
from tests.support.processes import LookoutProcess
from tests.support.redis_server import RedisServer
from wire.client import FrameClient
from wire.config import StreamSettings
from wire.keys import Keys
from wire.liveness import live_workers
from wire.messages import DropRecord, ResultMessage, now_ms

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOOKOUT_SHARED_DIR", REPO.parent / "shared"))
MODEL = "yolox_nano"
TARGET = 0.9
Frames = list[tuple[bytes, int, int]]


@dataclass
class Run:
    """What one measurement of the pipeline saw."""

    results: int = 0
    drops: int = 0
    seconds: float = 0.0
    latency_ms: list[float] = field(default_factory=list, repr=False)  # capture -> result published
    added_ms: list[float] = field(default_factory=list, repr=False)  # capture -> client, minus inference_ms
    inference_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def per_s(self) -> float:
        return self.results / self.seconds if self.seconds else 0.0


class CpuMeter:
    """CPU seconds the given processes and this one spend between ``start`` and ``stop`` (from /proc)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.spent: dict[str, float] = {name: 0.0 for name in [*pids, "bench client"]}
        self._started: dict[str, float] | None = None

    @staticmethod
    def available() -> bool:
        return Path("/proc/self/stat").exists()

    def _now(self) -> dict[str, float]:
        readings = {name: _process_cpu_s(pid) for name, pid in self.pids.items()}
        readings["bench client"] = time.process_time()  # the raw sessions are idle while the pipeline runs
        return readings

    def start(self) -> None:
        self._started = self._now()

    def stop(self) -> None:
        if self._started is None:
            return
        for name, value in self._now().items():
            self.spent[name] += value - self._started[name]
        self._started = None


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads together."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Raw:
    """``copies`` bare 1-thread sessions run side by side: the physical limit of as many 1-thread workers."""

    def __init__(self, model: Path, copies: int) -> None:
        self.runners = [RawRunner(model, 1) for _ in range(copies)]

    def measure(self, seconds: float) -> None:
        threads = [threading.Thread(target=r.measure, args=(seconds,)) for r in self.runners]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    @property
    def per_s(self) -> float:
        return sum(r.stats().images_per_s for r in self.runners)

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.stats().p50_ms for r in self.runners)


async def interleaved(
    redis: Redis,
    prefix: str,
    frames: Frames,
    raw: Raw,
    lanes: int,
    seconds: float,
    slices: int = 3,
    meter: CpuMeter | None = None,
) -> Run:
    """Alternate slices of raw ORT and of the pipeline, so that both see the same background load."""
    total = Run()
    for _ in range(slices):
        await asyncio.to_thread(raw.measure, seconds / slices)
        part = await closed_loop(redis, prefix, frames, lanes, seconds / slices, meter)
        total.results += part.results
        total.seconds += part.seconds
        total.drops += part.drops
    return total


@contextmanager
def workers(server: RedisServer, prefix: str, count: int, batch: int) -> Iterator[list[LookoutProcess]]:
    env = {"LOOKOUT_MODEL_DIR": str(SHARED / "models"), "LOOKOUT_RESULT_STREAM_MAXLEN": "1000"}
    started = [
        LookoutProcess(
            f"bench-{prefix}-{i}",
            [
                "worker",
                "--redis",
                server.url,
                "--key-prefix",
                prefix,
                "--threads",
                "1",
                "--batch",
                str(batch),
            ],
            env=env,
        )
        for i in range(count)
    ]
    try:
        yield started
    finally:
        for process in started:
            process.stop()


async def wait_for_workers(redis: Redis, prefix: str, count: int, processes: list[LookoutProcess]) -> None:
    ends = time.monotonic() + 120
    while len(await live_workers(redis, Keys(prefix), MODEL)) < count:
        for process in processes:
            if not process.alive():
                raise SystemExit(f"bench: a worker exited:\n{process.log()[-2000:]}")
        if time.monotonic() > ends:
            raise SystemExit("bench: the workers did not start within 120 s")
        await asyncio.sleep(0.2)


def client(redis: Redis, prefix: str, deadline_ms: float) -> FrameClient:
    settings = StreamSettings(key_prefix=prefix, frame_stream_maxlen=100_000, frame_deadline_ms=deadline_ms)
    return FrameClient(redis, keys=Keys(prefix), settings=settings)


def record(run: Run, outcome: ResultMessage | DropRecord, arrived_ms: float) -> None:
    if isinstance(outcome, ResultMessage):
        run.results += 1
        run.latency_ms.append(outcome.done_ms - outcome.received_ms)  # the result, as the worker published it
        run.added_ms.append(arrived_ms - outcome.received_ms - outcome.timings.inference_ms)
        run.inference_ms.append(outcome.timings.inference_ms)
    else:
        run.drops += 1


async def closed_loop(
    redis: Redis, prefix: str, frames: Frames, lanes: int, seconds: float, meter: CpuMeter | None = None
) -> Run:
    """``lanes`` frames always in flight for ``seconds`` (after half a second of warm-up)."""
    run = Run()
    loop = asyncio.get_running_loop()
    warm_until = loop.time() + 0.5
    stop_at = warm_until + seconds
    if meter is not None:  # the CPU of exactly the window whose results are counted
        loop.call_at(warm_until, meter.start)
        loop.call_at(stop_at, meter.stop)
    async with client(redis, prefix, deadline_ms=60_000) as frames_client:

        async def lane(index: int) -> None:
            while loop.time() < stop_at:
                jpeg, width, height = frames[index % len(frames)]
                index += lanes
                outcome = await frames_client.detect(
                    jpeg, model=MODEL, width=width, height=height, timeout_s=60
                )
                if warm_until <= loop.time() <= stop_at:
                    record(run, outcome, now_ms())

        await asyncio.gather(*(lane(i) for i in range(lanes)))
    run.seconds = seconds
    return run


async def open_loop(
    redis: Redis, prefix: str, frames: Frames, rate: float, seconds: float, deadline_ms: float
) -> Run:
    """Frames offered at ``rate`` per second whatever happens to them; each waited for to its end."""
    run = Run(seconds=seconds)
    loop = asyncio.get_running_loop()
    async with client(redis, prefix, deadline_ms=deadline_ms) as frames_client:
        waits = []

        async def follow(seq: int, future: asyncio.Future[ResultMessage | DropRecord]) -> None:
            outcome = await frames_client.wait(seq, future, model=MODEL, timeout_s=60)
            record(run, outcome, now_ms())

        begin = loop.time()
        sent = 0
        while loop.time() - begin < seconds:
            jpeg, width, height = frames[sent % len(frames)]
            seq, future = await frames_client.submit(jpeg, model=MODEL, width=width, height=height)
            waits.append(asyncio.create_task(follow(seq, future)))
            sent += 1
            await asyncio.sleep(max(0.0, begin + sent / rate - loop.time()))
        await asyncio.gather(*waits)
    return run


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    frames = [(jpeg, 640, 480) for jpeg in sample_jpegs(args.video, 32)]
    server = RedisServer()
    server.start()
    redis = Redis.from_url(server.url)
    report: dict[str, Any] = {"model": args.model.name, "target": TARGET, "runs": []}
    try:
        with workers(server, "one", 1, 1) as one, workers(server, "two", 2, 1) as two:
            with workers(server, "batch4", 1, 4) as batched:
                await wait_for_workers(redis, "one", 1, one)
                await wait_for_workers(redis, "two", 2, two)
                await wait_for_workers(redis, "batch4", 1, batched)
                pids = {"one": _pids(server, one), "two": _pids(server, two)}
                for repeat in range(args.repeat):
                    print(f"run {repeat + 1} of {args.repeat} ...", flush=True)
                    report["runs"].append(await one_round(redis, frames, args, pids))
    finally:
        await redis.aclose()
        server.stop()
    return report


def _pids(server: RedisServer, processes: list[LookoutProcess]) -> dict[str, int]:
    assert server.process is not None
    return {**{f"worker {i + 1}": p.pid for i, p in enumerate(processes)}, "redis-server": server.process.pid}


def cpu_per_frame(meter: CpuMeter | None, run: Run, model_ms: float) -> dict[str, float]:
    """Milliseconds of CPU per result: the model run (raw p50), the rest of the workers, redis, client.

    "The rest of the workers" is their CPU beyond the raw model run: decoding, letterboxing, the head,
    Redis and asyncio, and whatever the model run itself loses to sharing its core and caches with them.
    """
    if meter is None or not run.results:
        return {}
    per = {name: spent * 1000.0 / run.results for name, spent in meter.spent.items()}
    workers_ms = sum(value for name, value in per.items() if name.startswith("worker"))
    return {
        "model": model_ms,
        "worker_other": workers_ms - model_ms,
        "redis": per["redis-server"],
        "client": per["bench client"],
        "total": workers_ms + per["redis-server"] + per["bench client"],
    }


def cores_allow(cores: int, cpu_ms_per_frame: float, raw_per_s: float) -> float:
    """The ratio to raw that the cores allow.

    Frames/s can reach at most cores / CPU per frame (every core busy), and the 1-thread models at most
    their raw rate: the lower of the two.
    """
    return min(1.0, cores * 1000.0 / cpu_ms_per_frame / raw_per_s)


async def one_round(
    redis: Redis, frames: Frames, args: argparse.Namespace, pids: dict[str, dict[str, int]]
) -> dict[str, Any]:
    seconds = args.seconds
    raw_one, raw_two, raw_batch = Raw(args.model, 1), Raw(args.model, 2), Raw(args.model, 1)
    metered = CpuMeter.available()
    meter_one = CpuMeter(pids["one"]) if metered else None
    meter_two = CpuMeter(pids["two"]) if metered else None
    single = await interleaved(redis, "one", frames, raw_one, lanes=4, seconds=seconds, meter=meter_one)
    double = await interleaved(redis, "two", frames, raw_two, lanes=8, seconds=seconds, meter=meter_two)
    batch4 = await interleaved(redis, "batch4", frames, raw_batch, lanes=12, seconds=seconds)
    raw1, raw1_p50, raw2 = raw_one.per_s, raw_one.p50_ms, raw_two.per_s
    light = await closed_loop(redis, "one", frames, lanes=1, seconds=seconds / 2)
    inference_ms = statistics.median(light.inference_ms)
    # A frame may wait one inference before its own starts: accepted ones end within about 2.5 of them.
    deadline_ms = inference_ms
    overload = await open_loop(redis, "one", frames, 3 * single.per_s, seconds, deadline_ms)
    p99 = percentile(overload.latency_ms, 0.99)
    cores = len(os.sched_getaffinity(0))
    two_cpu = cpu_per_frame(meter_two, double, raw_two.p50_ms)
    return {
        "cores": cores,
        "one_worker_cpu_ms": cpu_per_frame(meter_one, single, raw1_p50),
        "two_workers_cpu_ms": two_cpu,
        "two_workers_cpu_bound_ratio": cores_allow(cores, two_cpu["total"], raw2) if two_cpu else None,
        "raw_1_thread_per_s": raw1,
        "raw_1_thread_p50_ms": raw1_p50,
        "raw_2x1_thread_per_s": raw2,
        "one_worker_per_s": single.per_s,
        "one_worker_ratio": single.per_s / raw1,
        "two_workers_per_s": double.per_s,
        "two_workers_ratio": double.per_s / raw2,
        "batch4_per_s": batch4.per_s,
        "batch4_ratio": batch4.per_s / raw_batch.per_s,
        "added_p50_ms": percentile(light.added_ms, 0.5),
        "added_p99_ms": percentile(light.added_ms, 0.99),
        "single_inference_ms": inference_ms,
        "overload_offered_per_s": 3 * single.per_s,
        "overload_deadline_ms": deadline_ms,
        "overload_results": overload.results,
        "overload_drops": overload.drops,
        "overload_p99_ms": p99,
        "overload_bound_ms": 3 * inference_ms,
        "overload_p99_ratio_to_bound": p99 / (3 * inference_ms),
    }


def cpu_rows(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Where the CPU of a frame goes, and the ratio that the cores allow (Linux only)."""
    if not all(r["two_workers_cpu_ms"] for r in runs):
        return []
    rows = []
    for label, key in (("1 worker", "one_worker_cpu_ms"), ("2 workers", "two_workers_cpu_ms")):

        def part(name: str, key: str = key) -> str:
            return summary([r[key][name] for r in runs])

        rows.append(
            (
                f"CPU per frame, {label}",
                f"raw model run {part('model')} + rest of the workers {part('worker_other')} "
                f"+ redis {part('redis')} + bench client {part('client')} = {part('total')} ms",
            )
        )
    cores = runs[0]["cores"]
    allowed = summary([r["two_workers_cpu_bound_ratio"] for r in runs], "{:.2f}")
    figure = f"the cores allow at most {allowed} x raw"
    if cores <= 2:  # the two models fill every core: the rest of a frame's work must fit beside them
        needed = summary([r["two_workers_cpu_ms"]["model"] * (1 / TARGET - 1) for r in runs])
        figure += f"; {TARGET} needs at most {needed} ms per frame outside the model"
    rows.append((f"2 workers on {cores} cores", figure))
    return rows


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_pipeline", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=SHARED / "models" / "yolox_nano.onnx", help="ONNX model"
    )
    parser.add_argument(
        "--video", type=Path, default=SHARED / "data" / "video" / "vtest.mp4", help="frames from"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per measurement (default 5)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every measurement (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    for needed in (args.model, args.video):
        if not needed.exists():
            print(f"bench_pipeline: {needed} is missing", file=sys.stderr)
            return 2
    # SIGTERM unwinds like Ctrl-C, so that the worker processes and the redis-server are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = asyncio.run(measure(args))
    except KeyboardInterrupt:
        print("bench_pipeline: interrupted", file=sys.stderr)
        return 130
    runs = report["runs"]

    def of(name: str, form: str = "{:.1f}") -> str:
        return summary([r[name] for r in runs], form)

    rows = [
        ("raw ORT 1 thread", f"{of('raw_1_thread_per_s')} img/s (p50 {of('raw_1_thread_p50_ms')} ms)"),
        (
            "1 worker, batch 1",
            f"{of('one_worker_per_s')} frames/s = {of('one_worker_ratio', '{:.2f}')} x raw",
        ),
        ("raw ORT 2 x 1 thread", f"{of('raw_2x1_thread_per_s')} img/s"),
        (
            "2 workers, batch 1",
            f"{of('two_workers_per_s')} frames/s = {of('two_workers_ratio', '{:.2f}')} x raw",
        ),
        ("1 worker, batch 4", f"{of('batch4_per_s')} frames/s = {of('batch4_ratio', '{:.2f}')} x raw"),
        ("added latency", f"p50 {of('added_p50_ms')} ms, p99 {of('added_p99_ms')} ms beyond the model run"),
        (
            f"overload 3x, deadline {of('overload_deadline_ms', '{:.0f}')} ms",
            f"p99 {of('overload_p99_ms')} ms vs 3 x {of('single_inference_ms')} ms inference = "
            f"{of('overload_p99_ratio_to_bound', '{:.2f}')} of the bound",
        ),
        ("", f"{of('overload_drops', '{:.0f}')} dropped, {of('overload_results', '{:.0f}')} inferred"),
    ]
    rows += cpu_rows(runs)
    print(f"\nmodel {args.model.name}, 640x480 JPEG frames of {args.video.name}, 1 ORT thread per worker")
    for name, figure in rows:
        print(f"  {name:<34} {figure}")
    ratio = statistics.median(r["one_worker_ratio"] for r in runs)
    within = statistics.median(r["overload_p99_ratio_to_bound"] for r in runs) < 1.0
    print(
        f"  verdict: 1 worker {'meets' if ratio >= TARGET else 'misses'} the {TARGET} target; "
        f"overload p99 {'within' if within else 'over'} the 3 x inference bound"
    )
    if args.json:
        args.json.write_text(
            json.dumps({**report, "args": {k: str(v) for k, v in vars(args).items()}}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
