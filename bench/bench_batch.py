"""`lookout batch` on the whole of coco128, locally and through the REST API, side by side, as ratios of
raw ONNX Runtime ``session.run`` measured in the same run with the same thread count.

Local: the Detector in this process (decode, letterbox, run, postprocess), one image at a time.
Remote: raw image bodies to ``POST /api/v1/detect`` of a real `lookout signaling`, through Redis to
real `lookout worker` processes (a private redis-server), ``--concurrency`` requests in flight so the
workers never wait for the next image. Ratios: throughput / raw images per second (1.0 = the model run
is the only cost), and p50 latency / raw p50 (what everything else adds to one image).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from contextlib import AbstractContextManager
from pathlib import Path

from bench.raw import RawStats, measure_raw
from lookout.batch import RemoteRunner, list_images, run_images
from lookout.batch_local import LocalRunner
from lookout.report import BatchReport, summary_table
from tests.signaling.rest_harness import rest_stack

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOOKOUT_SHARED_DIR", REPO.parent / "shared"))
MODEL_DIR = SHARED / "models"
IMAGES = SHARED / "data" / "coco-subset" / "coco128" / "images" / "train2017"


def server(workers: int, threads: int) -> AbstractContextManager[str]:
    """A private redis, ``workers`` workers and one signaling process; yields the base URL."""
    return rest_stack("bench-batch", MODEL_DIR, workers, "--threads", str(threads))


async def run_local(images: list[Path], threads: int) -> BatchReport:
    args = argparse.Namespace(model="yolox_nano", model_dir=MODEL_DIR, threads=threads, provider="cpu")
    async with LocalRunner(args, 1) as runner:
        report, _ = await run_images(
            images, runner.detect, concurrency=1, progress=False, describe=runner.describe
        )
    return report


async def run_remote(images: list[Path], url: str, concurrency: int) -> BatchReport:
    args = argparse.Namespace(server=url, model="yolox_nano", timeout=120.0, api_key="")
    async with RemoteRunner(args, concurrency) as runner:
        await run_images(
            images[:8], runner.detect, concurrency=concurrency, progress=False, describe=runner.describe
        )
        report, _ = await run_images(
            images, runner.detect, concurrency=concurrency, progress=False, describe=runner.describe
        )
    return report


def ratios(report: BatchReport, raw: RawStats, workers: int) -> str:
    capacity = raw.images_per_s * workers
    name = f"{report.mode} x{report.concurrency}"
    throughput, latency, run = report.throughput_per_s, report.latency_ms.p50, report.inference_ms.p50
    return (
        f"{name:>9}: {throughput:5.1f} img/s = {throughput / capacity:.2f} x raw ({capacity:.1f}/s);"
        f" p50 latency {latency:6.1f} ms = {latency / raw.p50_ms:.2f} x raw p50 ({raw.p50_ms:.1f} ms);"
        f" model run p50 {run:.1f} ms = {run / raw.p50_ms:.2f} x raw"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench batch", description=__doc__)
    parser.add_argument("--images", type=Path, default=IMAGES, help="folder of images (default: coco128)")
    parser.add_argument(
        "--threads", type=int, default=1, help="ONNX Runtime threads, everywhere (default: 1)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes for the remote run (default: 1)"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="remote requests in flight (default: 2)")
    parser.add_argument(
        "--raw-seconds", type=float, default=4.0, help="seconds of raw session.run (default: 4)"
    )
    args = parser.parse_args(argv)
    images = list_images(args.images)
    model = MODEL_DIR / "yolox_nano.onnx"
    print(f"{len(images)} images from {args.images}; {args.threads} ORT thread(s); {args.workers} worker(s)")
    # The machine's speed drifts by 2x from minute to minute (raw ORT 50-132 img/s), so each run is
    # compared with a raw measurement taken right before it, not with one figure for the whole bench.
    raws: list[RawStats] = []

    def raw_now(what: str) -> None:
        raws.append(measure_raw(model, args.threads, args.raw_seconds))
        print(f"raw ORT session.run before {what}: {raws[-1].describe()}", flush=True)

    raw_now("local")
    local = asyncio.run(run_local(images, args.threads))
    with server(args.workers, args.threads) as url:
        # One image in flight shows what HTTP + Redis add to one image; several keep the workers busy.
        raw_now("remote x1")
        one = asyncio.run(run_remote(images, url, 1))
        raw_now(f"remote x{args.concurrency}")
        many = asyncio.run(run_remote(images, url, args.concurrency))
    print()
    print(summary_table([local, one, many]))
    print()
    for report, raw in zip((local, one, many), raws, strict=True):
        print(ratios(report, raw, args.workers if report.mode == "remote" else 1))
    objects = {(r.ok, r.detections) for r in (local, one, many)}
    if len(objects) != 1:
        print(f"MISMATCH: (images ok, objects found) differ between the runs: {sorted(objects)}")
        return 1
    print(f"all runs found the same {local.detections} objects in {local.ok} images")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
