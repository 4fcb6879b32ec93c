"""`lookout batch FOLDER`: detect every image of a folder, through the REST API or locally, with a report.

Remote runs send each image as a raw body to ``POST /api/v1/detect`` with ``--concurrency`` requests in
flight (aiohttp); local runs use the Detector in this process on ``--concurrency`` threads. Both write
the same results file and the same timing report (lookout/report.py), so the two compare side by side.
An unreadable image is reported as that image's error; the batch goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from lookout.report import BatchReport, ImageTiming, build_report, summary_table
from runtime.bootstrap import stop_requested
from wire.config import SignalingSettings
from wire.errors import LookoutError
from wire.messages import Detection
from wire.rest import API_KEY_HEADER, DETECT_PATH, OPENAPI_PATH, DetectResponse, ErrorResponse

if TYPE_CHECKING:
    from lookout.batch_local import LocalRunner

log = logging.getLogger("lookout.batch")

MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
DEFAULT_REMOTE_CONCURRENCY = 4


class BatchError(LookoutError):
    """The batch cannot run at all (no such folder, no images, server unreachable)."""


@dataclass
class ImageResult:
    """Detections (or the error) of one image, plus its timing."""

    file: str
    timing: ImageTiming
    width: int = 0
    height: int = 0
    detections: list[Detection] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        if not self.timing.ok:
            return {"file": self.file, "error": self.timing.error}
        return {
            "file": self.file,
            "width": self.width,
            "height": self.height,
            "detections": [d.model_dump(mode="json") for d in self.detections],
        }


Detect = Callable[[Path], Awaitable[ImageResult]]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `lookout batch`."""
    parser = subparsers.add_parser(
        "batch",
        help="detect every image in a folder, through the REST API or locally, with a timing report",
        description="Detect objects in every JPEG/PNG of FOLDER, either through a Lookout server's REST API "
        "(--server URL, several requests in flight) or in this process (--local, the same Detector the "
        "workers run). Writes the detections (--out) and a timing report (--report) whose format is the same "
        "for both modes, and prints a summary. Unreadable images are reported and do not stop the batch; "
        "the exit code is 2 when any image failed. Ctrl-C or SIGTERM stops early and still writes both "
        "files.",
    )
    parser.add_argument("folder", type=Path, help="folder of .jpg/.jpeg/.png images (not recursive)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--server", metavar="URL", help="base URL of a Lookout server, e.g. http://127.0.0.1:8080"
    )
    where.add_argument("--local", action="store_true", help="run the detector in this process")
    default_model = SignalingSettings.model_fields["default_model"].default
    parser.add_argument(
        "--model", default=None, help=f"model name (default: the server's, or {default_model})"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help=f"images in flight at once (default: {DEFAULT_REMOTE_CONCURRENCY} remote, 1 local)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("results.json"), help="detections file (default: %(default)s)"
    )
    parser.add_argument(
        "--report", type=Path, default=Path("report.json"), help="timing report (default: %(default)s)"
    )
    parser.add_argument("--api-key", default=None, help="the server's API key (default: $LOOKOUT_API_KEY)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for one image (default: %(default)s)"
    )
    parser.add_argument("--model-dir", type=Path, default=None, help="local runs: where model names resolve")
    parser.add_argument("--threads", type=int, default=None, help="local runs: ONNX Runtime intra-op threads")
    parser.add_argument(
        "--provider", default=None, help="local runs: execution provider (auto, cuda, cpu, ...)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_batch)


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise BatchError(f"{folder} is not a folder")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in MEDIA_TYPES and p.is_file())
    if not images:
        raise BatchError(f"{folder} has no .jpg, .jpeg or .png images")
    return images


def run_batch(args: argparse.Namespace) -> int:
    images = list_images(args.folder)
    concurrency = args.concurrency or (1 if args.local else DEFAULT_REMOTE_CONCURRENCY)
    if concurrency < 1:
        raise BatchError("--concurrency must be at least 1")
    report, results = asyncio.run(_main(args, images, concurrency))
    write_outputs(args.out, args.report, report, results)
    print(summary_table([report]))
    print(f"wrote {args.out} and {args.report}", file=sys.stderr)
    if report.stopped:
        print(f"lookout batch: stopped after {len(results)} of {len(images)} images", file=sys.stderr)
        return 0
    return 2 if report.failed else 0


def write_outputs(out: Path, report_path: Path, report: BatchReport, results: list[ImageResult]) -> None:
    body = {
        "mode": report.mode,
        "model": report.model,
        "model_version": report.model_version,
        "images": [r.as_json() for r in sorted(results, key=lambda r: r.file)],
    }
    try:
        for path in (out, report_path):
            path.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(body, indent=1) + "\n")
        report_path.write_text(report.model_dump_json(indent=1) + "\n")
    except OSError as exc:
        raise BatchError(f"cannot write the results: {exc}") from exc


async def _main(
    args: argparse.Namespace, images: list[Path], concurrency: int
) -> tuple[BatchReport, list[ImageResult]]:
    if args.local:
        from lookout.batch_local import LocalRunner  # imports the detector: only for local runs

        runner: LocalRunner | RemoteRunner = LocalRunner(args, concurrency)
    else:
        runner = RemoteRunner(args, concurrency)
    async with runner:
        return await run_images(
            images,
            runner.detect,
            concurrency=concurrency,
            progress=not args.no_progress,
            describe=runner.describe,
        )


async def run_images(
    images: list[Path],
    detect: Detect,
    *,
    concurrency: int,
    progress: bool,
    describe: Callable[[list[ImageResult], float, bool, int], BatchReport],
) -> tuple[BatchReport, list[ImageResult]]:
    """Run ``detect`` over the images, ``concurrency`` at once, until done or SIGINT/SIGTERM."""
    # Imported off the event loop: tqdm's first import reads its package metadata from disk.
    tqdm = (await asyncio.to_thread(importlib.import_module, "tqdm")).tqdm

    queue: asyncio.Queue[Path] = asyncio.Queue()
    for path in images:
        queue.put_nowait(path)
    results: list[ImageResult] = []
    bar = tqdm(total=len(images), unit="img", disable=not progress, file=sys.stderr)

    async def lane(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                path = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            result = await detect(path)
            results.append(result)
            if not result.timing.ok:
                log.warning("%s: %s", result.file, result.timing.error)
            bar.update(1)

    started = time.perf_counter()
    with stop_requested() as stop:
        lanes: asyncio.Future[Any] = asyncio.gather(
            *(lane(stop) for _ in range(min(concurrency, len(images))))
        )
        stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([lanes, stopper], return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                log.info("stop requested: finishing the images in flight")
            await lanes  # lanes stop taking images once stop is set; in-flight ones finish
        finally:
            stopper.cancel()
            bar.close()
    wall_s = time.perf_counter() - started
    return describe(results, wall_s, stop.is_set(), len(images)), results


def _error_message(body: object) -> str:
    """The message of an API error body (``wire.rest.ErrorResponse``), or the body itself if it is not one."""
    try:
        return ErrorResponse.model_validate(body).error.message or str(body)
    except ValidationError:
        return str(body)


def failed_result(path: Path, error: str, latency_ms: float = 0.0) -> ImageResult:
    return ImageResult(
        file=path.name, timing=ImageTiming(file=path.name, ok=False, error=error, latency_ms=latency_ms)
    )


class RemoteRunner:
    """Images through the REST API: raw image bodies, ``concurrency`` requests in flight."""

    def __init__(self, args: argparse.Namespace, concurrency: int) -> None:
        self.base = str(args.server).rstrip("/")
        self.model: str | None = args.model
        self.concurrency = concurrency
        self.timeout_s: float = args.timeout
        key = args.api_key if args.api_key is not None else SignalingSettings().api_key
        self.headers = {API_KEY_HEADER: key} if key else {}
        self.model_version = ""
        self.served_model = ""
        self._session: Any = None

    async def __aenter__(self) -> RemoteRunner:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self.concurrency)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout_s), headers=self.headers
        )
        try:
            async with self._session.get(self.base + OPENAPI_PATH) as response:
                if response.status != 200:
                    raise BatchError(
                        f"{self.base} is not a Lookout server (GET {OPENAPI_PATH}: {response.status})"
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            await self._session.close()
            raise BatchError(f"cannot reach {self.base}: {exc or type(exc).__name__}") from exc
        except BatchError:
            await self._session.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def detect(self, path: Path) -> ImageResult:
        import aiohttp

        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            return failed_result(path, f"cannot read: {exc.strerror or exc}")
        params = {"id": path.name, **({"model": self.model} if self.model else {})}
        started = time.perf_counter()
        try:
            async with self._session.post(
                self.base + DETECT_PATH,
                data=data,
                params=params,
                headers={"Content-Type": MEDIA_TYPES[path.suffix.lower()]},
            ) as response:
                body = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return failed_result(
                path, f"request failed: {exc or type(exc).__name__}", (time.perf_counter() - started) * 1000
            )
        latency_ms = (time.perf_counter() - started) * 1000.0
        if status != 200:
            return failed_result(path, f"HTTP {status}: {_error_message(body)}", latency_ms)
        try:
            answer = DetectResponse.model_validate(body)
        except ValidationError as exc:
            return failed_result(path, f"the server's answer does not match the API: {exc}", latency_ms)
        t = answer.timings
        compute_ms = t.decode_ms + t.preprocess_ms + t.inference_ms + t.postprocess_ms
        self.model_version = answer.model_version
        self.served_model = answer.model
        return ImageResult(
            file=path.name,
            width=answer.width,
            height=answer.height,
            detections=answer.detections,
            timing=ImageTiming(
                file=path.name,
                ok=True,
                detections=len(answer.detections),
                latency_ms=latency_ms,
                compute_ms=compute_ms,
                inference_ms=t.inference_ms,
                queue_ms=t.queue_ms,
                transfer_ms=max(0.0, latency_ms - compute_ms - t.queue_ms),
            ),
        )

    def describe(self, results: list[ImageResult], wall_s: float, stopped: bool, images: int) -> BatchReport:
        return build_report(
            [r.timing for r in results],
            mode="remote",
            target=self.base,
            model=self.served_model or self.model or "",
            model_version=self.model_version,
            concurrency=self.concurrency,
            images=images,
            wall_s=wall_s,
            stopped=stopped,
        )
