"""`lookout detect`, `lookout eval` and `lookout models pull`.

Heavy modules (onnxruntime, cv2, pycocotools) are imported inside each command so that `lookout --help`
stays fast. Every command exits 0 on success and on a requested stop (Ctrl-C, SIGTERM), and prints one
`lookout: error: ...` line with a non-zero code for anything the user can fix.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from wire.config import WorkerSettings

log = logging.getLogger("lookout.detect")

_DEFAULTS = WorkerSettings.model_fields


def _default(name: str) -> Any:
    return _DEFAULTS[name].default


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt, so that it stops a command the same clean way as Ctrl-C."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _add_model_options(parser: argparse.ArgumentParser, *, conf: float, nms: float) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help=f"model name looked up in --model-dir, or an .onnx path (default: {_default('model')})",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="folder of named models (default: $LOOKOUT_MODEL_DIR or ./models)",
    )
    parser.add_argument("--conf", type=float, default=conf, help=f"score threshold (default: {conf})")
    parser.add_argument("--nms", type=float, default=nms, help=f"IoU threshold of the NMS (default: {nms})")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="ONNX Runtime intra-op threads (default: $LOOKOUT_THREADS or 1)",
    )
    parser.add_argument(
        "--provider",
        default=None,
        choices=("auto", "tensorrt", "cuda", "cpu", "torch"),
        help="execution provider; auto picks TensorRT, then CUDA, then CPU (default: auto)",
    )


def _load_detector(args: argparse.Namespace) -> Any:
    from inference.detector import Detector

    settings = WorkerSettings()
    for name, value in (("conf", args.conf), ("nms", args.nms)):
        if not 0.0 <= value <= 1.0:
            from inference.errors import DetectorError

            raise DetectorError(f"--{name} must be between 0 and 1, got {value}")
    return Detector.load(
        args.model or settings.model,
        model_dir=args.model_dir or settings.model_dir,
        threads=args.threads or settings.threads,
        provider=args.provider or settings.provider,
        conf=args.conf,
        nms=args.nms,
    )


# --- lookout detect ---------------------------------------------------------------------------
def _expand(inputs: list[Path]) -> list[Path]:
    """Files as given; a folder stands for the images directly inside it."""
    from wire.limits import IMAGE_SUFFIXES

    paths: list[Path] = []
    for item in inputs:
        if item.is_dir():
            paths.extend(sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            paths.append(item)
    return paths


def _detection_json(detection: Any) -> dict[str, Any]:
    return {
        "label": detection.label,
        "class_id": detection.class_id,
        "score": round(detection.score, 4),
        "box": [round(v, 1) for v in detection.box],
    }


def run_detect(args: argparse.Namespace) -> int:
    from concurrent.futures import Future, ThreadPoolExecutor

    import cv2

    from inference.annotate import draw_detections
    from inference.errors import ImageError
    from inference.images import read_image

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # our error line says it better
    detector = _load_detector(args)
    detector.warmup()  # so that the first image's inference_ms is not the session's lazy start-up
    settings = WorkerSettings()
    paths = _expand(args.images)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    limits = {"max_bytes": settings.max_image_bytes, "max_side": settings.max_image_side}

    def load(path: Path) -> tuple[Any, Any] | str:
        try:
            image = read_image(path, **limits)
            return image, detector.prepare(image)
        except ImageError as exc:
            return str(exc)

    failed = done = 0
    written: set[str] = set()
    with _stop_on_sigterm(), ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode") as pool:
        # Decoding runs up to four images ahead of the model, on the pool's threads.
        queue: list[tuple[Path, Future[tuple[Any, Any] | str]]] = []
        writes: list[Future[bool]] = []
        index = 0
        try:
            while index < len(paths) or queue:
                while index < len(paths) and len(queue) < 4:
                    queue.append((paths[index], pool.submit(load, paths[index])))
                    index += 1
                path, future = queue.pop(0)
                loaded = future.result()
                if isinstance(loaded, str):
                    failed += 1
                    print(f"lookout: error: {loaded}", file=sys.stderr, flush=True)
                    print(json.dumps({"image": str(path), "error": loaded}), flush=True)
                    continue
                image, prepared = loaded
                started = time.perf_counter()
                detections = detector.infer([prepared])[0]
                elapsed_ms = (time.perf_counter() - started) * 1000.0
                record = {
                    "image": str(path),
                    "width": int(image.shape[1]),
                    "height": int(image.shape[0]),
                    "detections": [_detection_json(d) for d in detections],
                    "inference_ms": round(elapsed_ms, 2),
                }
                print(json.dumps(record), flush=True)
                done += 1
                if args.out:
                    name = path.name if path.name not in written else f"{index}-{path.name}"
                    written.add(name)
                    target = args.out / Path(name).with_suffix(".jpg")
                    writes.append(pool.submit(cv2.imwrite, str(target), draw_detections(image, detections)))
            for write in writes:
                write.result()
        except KeyboardInterrupt:
            for _, pending in queue:
                pending.cancel()
            log.warning("stopped on request after %d of %d images", done + failed, len(paths))
            return 0
    if args.out:
        log.info("annotated images written to %s", args.out)
    if failed:
        log.error("%d of %d images could not be processed", failed, len(paths))
        return 2
    return 0


# --- lookout eval -----------------------------------------------------------------------------
def run_eval(args: argparse.Namespace) -> int:
    from inference.evaluate import evaluate

    detector = _load_detector(args)
    with _stop_on_sigterm():
        try:
            result = evaluate(detector, args.data, conf=args.conf, nms=args.nms, progress=not args.quiet)
        except KeyboardInterrupt:
            log.warning("evaluation stopped on request; no result written")
            return 0
    print(result.table(), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        log.info("results written to %s", args.out)
    return 0


# --- lookout models pull ----------------------------------------------------------------------
def run_pull(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from inference.model_store import pull

    bars: list[Any] = []

    def progress(done: int, total: int | None) -> Any:
        bar = tqdm(total=total, unit="B", unit_scale=True, desc=args.name, initial=done)
        bars.append(bar)
        return bar.update

    model_dir = args.dir or WorkerSettings().model_dir
    with _stop_on_sigterm():
        try:
            path = pull(args.name, model_dir, sha256=args.sha256, url=args.url, progress=progress)
        except KeyboardInterrupt:
            log.warning("download stopped on request; nothing saved")
            return 0
        finally:
            for bar in bars:
                bar.close()
    print(path)
    return 0


# --- registration -----------------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `lookout detect` and `lookout eval`."""
    detect = subparsers.add_parser(
        "detect",
        help="detect objects in image files, one JSON line per image",
        description="Run the detector on image files (or folders of them) and print one JSON line per "
        'image: {"image", "width", "height", "detections": [{"label", "class_id", "score", "box": '
        '[x1,y1,x2,y2]}], "inference_ms"}. An unreadable image prints an error line (and a JSON line '
        'with "error") and the others are still processed; the exit code is then 2.',
    )
    detect.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files or folders")
    _add_model_options(detect, conf=_default("conf"), nms=_default("nms"))
    detect.add_argument("--out", type=Path, default=None, help="folder to write annotated copies into")
    detect.set_defaults(func=run_detect)

    evaluation = subparsers.add_parser(
        "eval",
        help="COCO AP of a model on a dataset (pycocotools)",
        description="Measure COCO AP and AP50 on a YOLO-format folder (images/ + labels/) or a folder with "
        "a COCO instances JSON under annotations/. Prints a table; --out also writes it as JSON.",
    )
    evaluation.add_argument("--data", type=Path, required=True, help="dataset folder")
    _add_model_options(evaluation, conf=0.01, nms=0.65)
    evaluation.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    evaluation.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluation.set_defaults(func=run_eval)


def register_models(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `lookout models pull`."""
    from inference.model_store import KNOWN_MODELS, YOLOX_PINS

    pull = subparsers.add_parser(
        "pull",
        help="download an official model release asset, verified against a sha256",
        description="Download NAME.onnx (YOLOX release 0.1.1rc0 on GitHub) into --dir, atomically: a "
        "temporary file, checked against the sha256, then renamed; a file that does not match is "
        f"discarded. {', '.join(YOLOX_PINS)} have a pinned sha256 and need no option; the other names, "
        "and any other file (--url with a NAME of your own), need --sha256. YOLOv7 publishes only .pt "
        "weights: pulling a yolov7 name explains how to export it.",
    )
    pull.add_argument("name", metavar="NAME", help=f"one of {', '.join(KNOWN_MODELS)}")
    pull.add_argument(
        "--dir", type=Path, default=None, help="target folder (default: $LOOKOUT_MODEL_DIR or ./models)"
    )
    pull.add_argument(
        "--sha256",
        default=None,
        help="expected sha256 of the file, 64 hex digits (default: the name's pin; required without one)",
    )
    pull.add_argument(
        "--url",
        default=None,
        help="download from this URL instead (default: the release); a mirror still has to match the pin",
    )
    pull.set_defaults(func=run_pull)
