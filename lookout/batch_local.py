"""`lookout batch --local`: the images through the Detector in this process, on ``--concurrency`` threads."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from lookout.batch import ImageResult, failed_result
from lookout.report import BatchReport, ImageTiming, build_report
from wire.config import SignalingSettings, WorkerSettings


class LocalRunner:
    """Images through the Detector in this process, on ``concurrency`` threads."""

    def __init__(self, args: argparse.Namespace, concurrency: int) -> None:
        defaults = WorkerSettings()
        self.model_name: str = args.model or SignalingSettings().default_model
        self.model_dir: Path = args.model_dir or defaults.model_dir
        self.threads: int = args.threads or defaults.threads
        self.provider: str = args.provider or defaults.provider
        self.concurrency = concurrency
        self._detector: Any = None
        self._pool: Any = None

    async def __aenter__(self) -> LocalRunner:
        from concurrent.futures import ThreadPoolExecutor

        from inference.detector import Detector

        self._detector = await asyncio.to_thread(
            Detector.load,
            self.model_name,
            model_dir=self.model_dir,
            threads=self.threads,
            provider=self.provider,
        )
        await asyncio.to_thread(self._detector.warmup)  # as a worker does before its first frame
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="detect")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)

    async def detect(self, path: Path) -> ImageResult:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._detect, path)

    def _detect(self, path: Path) -> ImageResult:
        from inference.errors import DetectorError
        from inference.images import decode_image

        started = time.perf_counter()
        try:
            data = path.read_bytes()  # locally, reading the file is the "transfer"
        except OSError as exc:
            return failed_result(path, f"cannot read: {exc.strerror or exc}")
        detector = self._detector
        read = time.perf_counter()
        try:
            image = decode_image(data)
            prepared = detector.prepare(image)
            ran_from = time.perf_counter()
            outputs = detector.run([prepared])[0]
            ran_to = time.perf_counter()
            detections = detector.postprocess(outputs, prepared)
        except DetectorError as exc:
            return failed_result(path, str(exc), (time.perf_counter() - started) * 1000)
        done = time.perf_counter()
        latency_ms = (done - started) * 1000.0
        compute_ms = (done - read) * 1000.0
        return ImageResult(
            file=path.name,
            width=int(image.shape[1]),
            height=int(image.shape[0]),
            detections=detections,
            timing=ImageTiming(
                file=path.name,
                ok=True,
                detections=len(detections),
                latency_ms=latency_ms,
                compute_ms=compute_ms,
                inference_ms=(ran_to - ran_from) * 1000.0,
                queue_ms=0.0,
                transfer_ms=max(0.0, latency_ms - compute_ms),
            ),
        )

    def describe(self, results: list[ImageResult], wall_s: float, stopped: bool, images: int) -> BatchReport:
        detector = self._detector
        return build_report(
            [r.timing for r in results],
            mode="local",
            target=str(detector.path),
            model=detector.name,
            model_version=detector.version,
            concurrency=self.concurrency,
            images=images,
            wall_s=wall_s,
            stopped=stopped,
        )
