"""Detector throughput end to end (JPEG decode, letterbox, model run, postprocess) as a ratio of raw ORT.

Input: 640x480 JPEG frames of ``vtest.mp4`` (scaled; quality 80, like the media bridge sends). The
detector pipelines decode + letterbox on a helper thread beside the model run, as a worker does. Each
run alternates short slices of raw ``session.run`` and of the detector with the same thread count, so
that both see the same background load; the figures are the median of several runs with min and max,
because this machine's speed varies a lot from one minute to the next (raw ORT 50-132 img/s). Target: at least
0.85 x raw for yolox_nano.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from bench.raw import RawRunner, RawStats
from bench.stats import summary
from inference.detector import Detector, Prepared
from inference.images import decode_image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOOKOUT_SHARED_DIR", REPO.parent / "shared"))
TARGET = 0.85


def sample_jpegs(video: Path, count: int = 32, size: tuple[int, int] = (640, 480)) -> list[bytes]:
    """``count`` frames spread over the clip, scaled to ``size`` and JPEG-encoded at quality 80."""
    capture = cv2.VideoCapture(str(video))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or count
    frames: list[bytes] = []
    for index in np.linspace(0, total - 1, count).astype(int):
        capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
        ok, frame = capture.read()
        if not ok:
            continue
        resized = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        frames.append(cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
    capture.release()
    if not frames:
        raise SystemExit(f"bench: no frames could be read from {video}")
    return frames


@dataclass
class EndToEnd:
    images_per_s: float
    p50_ms: float
    n: int


class DetectorRunner:
    """The detector fed JPEG bytes: decode + prepare on a helper thread (queue of 4), infer on this one."""

    def __init__(self, detector: Detector, jpegs: list[bytes]) -> None:
        self.detector = detector
        self.jpegs = jpegs
        self.latencies_ms: list[float] = []
        self.elapsed_s = 0.0
        self._next = 0

    def measure(self, seconds: float) -> None:
        """Add about ``seconds`` of pipelined detection; the helper thread lives only this long."""
        ready: queue.Queue[Prepared] = queue.Queue(maxsize=4)
        stop = threading.Event()

        def produce() -> None:
            while not stop.is_set():
                prepared = self.detector.prepare(decode_image(self.jpegs[self._next % len(self.jpegs)]))
                self._next += 1
                while not stop.is_set():
                    try:
                        ready.put(prepared, timeout=0.05)
                        break
                    except queue.Full:
                        continue

        producer = threading.Thread(target=produce, name="bench-decode", daemon=True)
        producer.start()
        try:
            self.detector.infer([ready.get()])  # fill the pipeline before the clock starts
            started = time.perf_counter()
            deadline = started + seconds
            count = 0
            while True:
                prepared = ready.get()
                before = time.perf_counter()
                self.detector.infer([prepared])
                after = time.perf_counter()
                self.latencies_ms.append((after - before) * 1000.0)
                count += 1
                if after >= deadline and count >= 3:
                    break
            self.elapsed_s += time.perf_counter() - started
        finally:
            stop.set()
            producer.join(5)

    def stats(self) -> EndToEnd:
        return EndToEnd(
            len(self.latencies_ms) / self.elapsed_s,
            statistics.median(self.latencies_ms),
            len(self.latencies_ms),
        )


def stage_times(detector: Detector, jpegs: list[bytes], repeats: int = 3) -> dict[str, float]:
    """Median milliseconds of each stage of one frame: what a frame costs beside the model run.

    All on this one thread, with OpenCV held to one thread, the way a worker runs them.
    """
    stages: dict[str, list[float]] = {"decode": [], "letterbox": [], "model": [], "head": []}
    threads_before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        for _ in range(repeats):
            for jpeg in jpegs:
                started = time.perf_counter()
                image = decode_image(jpeg)
                decoded = time.perf_counter()
                prepared = detector.prepare(image)
                letterboxed = time.perf_counter()
                (outputs,) = detector.run([prepared])
                ran = time.perf_counter()
                detector.postprocess(outputs, prepared)
                done = time.perf_counter()
                for name, begin, end in (
                    ("decode", started, decoded),
                    ("letterbox", decoded, letterboxed),
                    ("model", letterboxed, ran),
                    ("head", ran, done),
                ):
                    stages[name].append((end - begin) * 1000.0)
    finally:
        cv2.setNumThreads(threads_before)
    return {name: statistics.median(values) for name, values in stages.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_detector", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=SHARED / "models" / "yolox_nano.onnx", help="ONNX model"
    )
    parser.add_argument(
        "--video", type=Path, default=SHARED / "data" / "video" / "vtest.mp4", help="source clip"
    )
    parser.add_argument(
        "--threads", default="1,2", help="comma-separated intra-op thread counts (default 1,2)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per thread count (default 3)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per measurement (default 4)")
    parser.add_argument(
        "--slices",
        type=int,
        default=4,
        help="each run alternates raw and detector this many times (default 4)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    jpegs = sample_jpegs(args.video)
    print(f"model {args.model.name}, {len(jpegs)} JPEG frames 640x480 of {args.video.name}, "
          f"{args.runs} runs x {args.seconds:.0f} s per setting, {os.cpu_count()} CPUs")  # fmt: skip
    results: list[dict[str, object]] = []
    report = {"model": str(args.model), "runs": args.runs, "seconds": args.seconds, "results": results}
    for threads in (int(t) for t in args.threads.split(",")):
        detector = Detector.load(args.model, threads=threads, provider="cpu")
        raws: list[RawStats] = []
        ends: list[EndToEnd] = []
        detector.warmup()
        for _ in range(args.runs):
            # Alternating short slices expose both to the same background load, so their ratio is fair.
            raw, end = RawRunner(args.model, threads), DetectorRunner(detector, jpegs)
            for _ in range(args.slices):
                raw.measure(args.seconds / args.slices)
                end.measure(args.seconds / args.slices)
            raws.append(raw.stats())
            ends.append(end.stats())
        ratios = [e.images_per_s / r.images_per_s for r, e in zip(raws, ends, strict=True)]
        print(f"\n{threads} intra-op thread{'s' if threads > 1 else ''}:")
        raw_p50, raw_p99 = summary([r.p50_ms for r in raws]), summary([r.p99_ms for r in raws])
        print(f"  raw ORT session.run  {summary([r.images_per_s for r in raws])} img/s")
        print(f"                       p50 {raw_p50} ms, p99 {raw_p99} ms")
        print(f"  detector end to end  {summary([e.images_per_s for e in ends])} img/s")
        print(f"                       p50 {summary([e.p50_ms for e in ends])} ms per infer call")
        verdict = "meets" if statistics.median(ratios) >= TARGET else "below"
        print(f"  ratio to raw         {summary(ratios, '{:.2f}')}  ({verdict} the {TARGET} target)")
        stages = stage_times(detector, jpegs)
        print(
            f"  one frame, stages    decode {stages['decode']:.2f} + letterbox {stages['letterbox']:.2f} "
            f"+ model {stages['model']:.2f} + head and NMS {stages['head']:.2f} ms (medians, one thread)"
        )
        results.append(
            {
                "threads": threads,
                "raw": [asdict(r) for r in raws],
                "detector": [asdict(e) for e in ends],
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "stages_ms": stages,
            }
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
