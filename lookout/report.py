"""The timing report of a batch run, in one format for local and remote runs so that they compare.

Per image: latency (what the caller waited), compute (decode + preprocess + inference + postprocess),
the model run alone, queue (waiting for a worker) and transfer (the rest: HTTP, JSON, Redis, delivery;
about zero for local runs). Totals: wall time, throughput, and p50/p99/mean/max of each of those.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

STAGES = ("latency_ms", "compute_ms", "inference_ms", "queue_ms", "transfer_ms")


class ImageTiming(BaseModel):
    """How one image went."""

    file: str = Field(description="File name inside the folder.")
    ok: bool = Field(description="Whether detections came back.")
    error: str = Field(default="", description="Why not, when not.")
    detections: int = Field(default=0, description="How many objects were found.")
    latency_ms: float = Field(default=0.0, description="From starting the image to having its detections.")
    compute_ms: float = Field(default=0.0, description="Decode + preprocess + inference + postprocess.")
    inference_ms: float = Field(default=0.0, description="The model run alone.")
    queue_ms: float = Field(default=0.0, description="Waiting for a worker (remote runs).")
    transfer_ms: float = Field(
        default=0.0, description="latency - compute - queue: moving bytes and messages."
    )


class Distribution(BaseModel):
    p50: float
    p99: float
    mean: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution:
        if not values:
            return cls(p50=0.0, p99=0.0, mean=0.0, max=0.0)
        import numpy as np  # here, not at the top: `lookout --help` imports this module

        array = np.asarray(values, dtype=np.float64)
        return cls(
            p50=float(np.percentile(array, 50)),
            p99=float(np.percentile(array, 99)),
            mean=float(array.mean()),
            max=float(array.max()),
        )


class BatchReport(BaseModel):
    """A whole batch run (``--report``)."""

    mode: str = Field(description="local (the Detector in this process) or remote (the REST API).")
    target: str = Field(description="The server URL, or the model file for local runs.")
    model: str = Field(description="Model name.")
    model_version: str = Field(default="", description="Version that produced the detections.")
    concurrency: int = Field(description="Images in flight at once.")
    images: int = Field(description="Images in the folder.")
    ok: int = Field(description="Images with detections back.")
    failed: int = Field(description="Images that could not be read or detected.")
    detections: int = Field(description="Objects found over all images.")
    wall_s: float = Field(description="Wall time of the whole run.")
    throughput_per_s: float = Field(description="Successful images per second of wall time.")
    stopped: bool = Field(default=False, description="The run was interrupted (Ctrl-C or SIGTERM).")
    latency_ms: Distribution
    compute_ms: Distribution
    inference_ms: Distribution
    queue_ms: Distribution
    transfer_ms: Distribution
    per_image: list[ImageTiming]


def build_report(
    timings: Sequence[ImageTiming],
    *,
    mode: str,
    target: str,
    model: str,
    model_version: str,
    concurrency: int,
    images: int,
    wall_s: float,
    stopped: bool = False,
) -> BatchReport:
    done = [t for t in timings if t.ok]
    return BatchReport(
        mode=mode,
        target=target,
        model=model,
        model_version=model_version,
        concurrency=concurrency,
        images=images,
        ok=len(done),
        failed=len(timings) - len(done),
        detections=sum(t.detections for t in done),
        wall_s=wall_s,
        throughput_per_s=len(done) / wall_s if wall_s > 0 else 0.0,
        stopped=stopped,
        per_image=sorted(timings, key=lambda t: t.file),
        **{stage: Distribution.of([getattr(t, stage) for t in done]) for stage in STAGES},
    )


def summary_table(reports: Sequence[BatchReport]) -> str:
    """The reports side by side, one column each: what `lookout batch` and bench_batch print."""
    rows: list[tuple[str, list[str]]] = [
        ("mode", [r.mode for r in reports]),
        ("images ok / failed", [f"{r.ok} / {r.failed}" for r in reports]),
        ("concurrency", [str(r.concurrency) for r in reports]),
        ("wall s", [f"{r.wall_s:.2f}" for r in reports]),
        ("throughput img/s", [f"{r.throughput_per_s:.1f}" for r in reports]),
    ]
    for stage in STAGES:
        name = stage.removesuffix("_ms")
        rows.append((f"{name} p50 / p99 ms", [_pair(getattr(r, stage)) for r in reports]))
    rows.append(("detections", [str(r.detections) for r in reports]))
    width = max(len(name) for name, _ in rows)
    column = max(14, *(len(v) for _, values in rows for v in values))
    lines = [f"{name:<{width}}  " + "  ".join(f"{v:>{column}}" for v in values) for name, values in rows]
    return "\n".join(lines)


def _pair(distribution: Distribution) -> str:
    return f"{distribution.p50:.1f} / {distribution.p99:.1f}"
