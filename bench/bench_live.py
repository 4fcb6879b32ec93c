"""Glass-to-glass latency of the live path at 1, 2 and 4 concurrent WebRTC streams, against raw ORT.

It starts the real stack with `lookout up` (embedded Redis, signaling, one bridge, workers with one ONNX
Runtime thread each, ICE on loopback), then publishes ``vtest.mp4`` from N aiortc clients at once
(``lookout.webrtc_client``). Latency per result = the client's wall clock when the ``detections``
message arrives - ``received_ms`` (stamped by the bridge when the frame arrived: on loopback that is the
sender's clock within a few ms). The share that is inference is the worker's ``timings.inference_ms``;
"overhead" is latency minus that, per frame (target: p50 <= 15 ms on loopback). Raw ORT (bench/raw.py,
same thread count) is measured in the same run, before and after the streams, so every figure can be
read as a ratio of the physical limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.raw import RawStats, measure_raw
from bench.stats import percentile
from lookout.up import free_port

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOOKOUT_SHARED_DIR", REPO.parent / "shared"))
TARGET_OVERHEAD_MS = 15.0


@dataclass
class Level:
    streams: int
    results: int
    results_per_s: float
    dropped: int
    p50_ms: float
    p99_ms: float
    inference_p50_ms: float
    worker_p50_ms: float
    overhead_p50_ms: float
    inference_share: float


def start_stack(workers: int, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "LOOKOUT_MODEL_DIR": str(SHARED / "models"),
        "LOOKOUT_ICE_HOST_ADDRESSES": "127.0.0.1",
        "LOOKOUT_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("wb")
    process = subprocess.Popen(
        [
            *[sys.executable, "-m", "lookout", "up", "--host", "127.0.0.1", "--port", str(port)],
            *["--workers", str(workers), "--bridges", "1"],
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if "lookout up: ready" in log_path.read_text(errors="replace"):
            return process, f"http://127.0.0.1:{port}"
        if process.poll() is not None:
            break
        time.sleep(0.3)
    process.kill()
    raise SystemExit(f"bench: the stack did not come up; see {log_path}")


async def run_level(
    url: str, video: Path, streams: int, warmup_s: float, seconds: float, fps: float
) -> Level:
    from lookout.webrtc_client import LiveClient, LoopingVideoTrack

    latencies: list[float] = []
    inference: list[float] = []
    worker: list[float] = []
    overhead: list[float] = []
    measuring = False

    def on_message(message: Any) -> None:
        if measuring and message.type == "detections":
            latency = time.time() * 1000.0 - message.received_ms
            t = message.timings
            latencies.append(latency)
            inference.append(t.inference_ms)
            worker.append(t.decode_ms + t.preprocess_ms + t.inference_ms + t.postprocess_ms)
            overhead.append(latency - t.inference_ms)

    clients = [
        LiveClient(url, on_message=on_message, ice_host_addresses=["127.0.0.1"]) for _ in range(streams)
    ]
    try:
        for client in clients:
            await client.connect()
            await client.join(sample_fps=10)
            await client.offer(LoopingVideoTrack(video, fps=fps))
        await asyncio.sleep(warmup_s)
        dropped_before = sum(_dropped(c) for c in clients)
        measuring = True
        started = time.monotonic()
        await asyncio.sleep(seconds)
        measuring = False
        elapsed = time.monotonic() - started
        dropped = sum(_dropped(c) for c in clients) - dropped_before
    finally:
        for client in clients:
            await client.close()
    p50 = percentile(latencies, 0.5)
    return Level(
        streams=streams,
        results=len(latencies),
        results_per_s=len(latencies) / elapsed,
        dropped=dropped,
        p50_ms=p50,
        p99_ms=percentile(latencies, 0.99),
        inference_p50_ms=percentile(inference, 0.5),
        worker_p50_ms=percentile(worker, 0.5),
        overhead_p50_ms=percentile(overhead, 0.5),
        inference_share=statistics.median(
            [i / lat for i, lat in zip(inference, latencies, strict=True) if lat > 0]
        )
        if latencies
        else float("nan"),
    )


def _dropped(client: Any) -> int:
    stats = client.of_type("stats")
    return int(stats[-1].dropped) if stats else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_live", description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="1,2,4", help="concurrent stream counts (default: 1,2,4)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per level (default: 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring (default: 2)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1) - 1), help="workers")
    parser.add_argument(
        "--fps",
        type=float,
        default=15.0,
        help="frames per second each sender encodes (default: 15; the bridge samples 10 of them)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    model = SHARED / "models" / "yolox_nano.onnx"
    video = SHARED / "data" / "video" / "vtest.mp4"
    if not model.exists() or not video.exists():
        print(f"bench_live: needs {model} and {video}", file=sys.stderr)
        return 2
    counts = [int(n) for n in args.streams.split(",") if n.strip()]

    raw_before = measure_raw(model, threads=1, seconds=3.0)
    process, url = start_stack(args.workers, REPO / "test-output" / "logs" / "bench_live_up.log")
    try:
        levels = [asyncio.run(run_level(url, video, n, args.warmup, args.seconds, args.fps)) for n in counts]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    raw_after = measure_raw(model, threads=1, seconds=3.0)
    report(levels, raw_before, raw_after, args.workers, args.fps)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "raw_before": asdict(raw_before),
                    "raw_after": asdict(raw_after),
                    "workers": args.workers,
                    "levels": [asdict(level) for level in levels],
                },
                indent=2,
            )
        )
    return 0


def report(levels: list[Level], raw_before: RawStats, raw_after: RawStats, workers: int, fps: float) -> None:
    raw_p50 = statistics.mean([raw_before.p50_ms, raw_after.p50_ms])
    raw_rate = statistics.mean([raw_before.images_per_s, raw_after.images_per_s])
    print(f"raw ORT, 1 thread: before {raw_before.describe()}")
    print(f"                   after  {raw_after.describe()}")
    print(
        f"live path: {workers} worker(s) x 1 thread, 1 bridge; each stream sends vtest.mp4 480x360 at "
        f"{fps:.0f} fps (VP8), sampled at 10 fps; senders, bridge and workers share this machine"
    )
    print(
        f"{'streams':>7} {'results/s':>9} {'x raw':>6} {'drops':>5} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'p50/raw':>7} {'infer p50':>9} {'share':>6} {'overhead p50':>12}"
    )
    for lv in levels:
        print(
            f"{lv.streams:>7} {lv.results_per_s:>9.1f} {lv.results_per_s / (raw_rate * workers):>6.2f} "
            f"{lv.dropped:>5} {lv.p50_ms:>7.1f} {lv.p99_ms:>7.1f} {lv.p50_ms / raw_p50:>7.2f} "
            f"{lv.inference_p50_ms:>9.1f} {lv.inference_share:>6.0%} {lv.overhead_p50_ms:>10.1f} ms"
            + ("" if lv.overhead_p50_ms <= TARGET_OVERHEAD_MS else "  (over the 15 ms target)")
        )
    print("x raw: results/s over (raw img/s x workers); p50/raw: latency p50 over raw session.run p50.")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
