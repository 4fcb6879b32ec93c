"""The physical limit every speed figure is compared with: bare ONNX Runtime ``session.run`` on the model.

The session is created the way a worker's is (exactly ``threads`` intra-op threads, one inter-op thread,
sequential execution, all graph optimisations) and fed one pre-made input tensor over and over, so the
figure contains nothing but the model run.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.stats import percentile


@dataclass(frozen=True)
class RawStats:
    images_per_s: float
    p50_ms: float
    p99_ms: float
    n: int
    """Model runs measured (one image each)."""
    threads: int = 1

    def describe(self) -> str:
        return (
            f"{self.images_per_s:6.1f} img/s, p50 {self.p50_ms:5.1f} ms, p99 {self.p99_ms:5.1f} ms "
            f"({self.n} runs, {self.threads} thread{'s' if self.threads != 1 else ''})"
        )


def raw_session(model_path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])


class RawRunner:
    """One bare session and its input, measured in as many slices as the caller wants."""

    def __init__(self, model_path: Path, threads: int, *, warmup: int = 5) -> None:
        self.threads = threads
        self.session = raw_session(Path(model_path), threads)
        spec = self.session.get_inputs()[0]
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
        self.feed = {spec.name: np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)}
        self.latencies_ms: list[float] = []
        self.elapsed_s = 0.0
        for _ in range(warmup):
            self.session.run(None, self.feed)

    def measure(self, seconds: float) -> None:
        """Add about ``seconds`` of back-to-back runs (at least 3) to the tally."""
        started = time.perf_counter()
        deadline = started + seconds
        count = 0
        while True:
            before = time.perf_counter()
            self.session.run(None, self.feed)
            after = time.perf_counter()
            self.latencies_ms.append((after - before) * 1000.0)
            count += 1
            if after >= deadline and count >= 3:
                break
        self.elapsed_s += time.perf_counter() - started

    def stats(self) -> RawStats:
        ordered = sorted(self.latencies_ms)
        return RawStats(
            images_per_s=len(ordered) / self.elapsed_s,
            p50_ms=statistics.median(ordered),
            p99_ms=percentile(ordered, 0.99),
            n=len(ordered),
            threads=self.threads,
        )


def measure_raw(model_path: Path, threads: int, seconds: float = 5.0) -> RawStats:
    """Run the bare session for about ``seconds`` on a batch-1 input; latency percentiles per call."""
    runner = RawRunner(model_path, threads)
    runner.measure(seconds)
    return runner.stats()
