"""One rank of a fine-tuning run, as torchrun starts it (`torchrun ... -m training ARGS`).

DDP over gloo on CPU or NCCL on GPU. Every rank builds the same model from the same starting weights;
DDP keeps them identical. Rank 0 checkpoints every N steps (atomically) and, at the end, exports the
ONNX file, checks it against PyTorch, evaluates before/after and, when asked, publishes the version.
After an elastic restart every rank loads the checkpoint and continues from its iteration.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from training.checkpoint import load_checkpoint, save_checkpoint, weights_digest
from training.data import DetectionDataset, load_sources
from training.export import check_export, export_onnx
from training.model import INPUT_SIZE, build_model, freeze_batchnorm, load_pth
from training.onnx_weights import import_onnx_weights
from wire.config import TrainRunSettings
from wire.errors import LookoutError

log = logging.getLogger("lookout.train")

CHECKPOINT = "checkpoint.pt"
EXPORTED = "model.onnx"
SUMMARY = "summary.json"
KILL_ENV = "LOOKOUT_TRAIN_KILL_AT"
"""Fault injection for the restart test: ``RANK:ITER`` SIGKILLs that rank there, on the first attempt only."""


@dataclass
class Summary:
    """What a run did; rank 0 writes it to ``OUT/summary.json``."""

    world_size: int
    iterations: int
    resumed_from: int
    start: str
    samples: int
    sources: dict[str, int] = field(default_factory=dict)
    loss_before: float = math.nan
    loss_after: float = math.nan
    epoch_losses: list[float] = field(default_factory=list)
    export_max_diff: float = math.nan
    metrics_before: dict[str, float] = field(default_factory=dict)
    metrics_after: dict[str, float] = field(default_factory=dict)
    weights_sha256: str = ""
    samples_per_s: float = 0.0
    published: dict[str, Any] = field(default_factory=dict)


def _resolve_start(settings: TrainRunSettings) -> Path | None:
    if settings.train_from == "none":
        return None
    if settings.train_from:
        candidate = Path(settings.train_from)
        if candidate.exists():
            return candidate
        name = settings.train_from
    else:
        name = settings.train_name
    found = settings.model_dir / f"{name}.onnx"
    if not found.exists():
        raise LookoutError(
            f"starting weights not found: {settings.train_from or name} (nor {found}); pass --from FILE"
        )
    return found


def _collate(batch: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(np.stack([b[0] for b in batch]))
    targets = torch.from_numpy(np.stack([b[1] for b in batch]))
    return images, targets


def _fixed_batch_loss(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> float:
    """The training loss on one fixed batch, without updating anything (BN is frozen anyway)."""
    model.train()
    freeze_batchnorm(model)
    with torch.no_grad():
        return float(model(images, targets)["total_loss"])


def _maybe_kill_self(rank: int, iteration: int) -> None:
    spec = os.environ.get(KILL_ENV, "")
    if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return
    kill_rank, kill_iter = (int(part) for part in spec.split(":"))
    if rank == kill_rank and iteration == kill_iter:
        log.warning("rank %d: killing itself at iteration %d (%s)", rank, iteration, KILL_ENV)
        os.kill(os.getpid(), signal.SIGKILL)


def _evaluate(model_file: Path, data: Path, out: Path, label: str) -> dict[str, float]:
    """COCO AP of ``model_file`` on ``data``; the evaluation goes to ``out/eval-<label>.json``.

    Into the run folder, not beside the model: the starting model may sit in a shared, read-only folder.
    """
    # `lookout eval` itself, in a child process: the same evaluation users run, on the Detector the workers
    # run, without the training service importing the inference service.
    result_file = out / f"eval-{label}.json"
    command = [sys.executable, "-m", "lookout", "eval", "--model", str(model_file), "--data", str(data)]
    command += ["--threads", str(max(1, os.cpu_count() or 1)), "--out", str(result_file), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise LookoutError(f"evaluating {model_file} failed (exit {done.returncode}): {last}")
    result = json.loads(result_file.read_text())
    return {"ap": float(result["ap"]), "ap50": float(result["ap50"])}


def _publish(
    settings: TrainRunSettings, path: Path, metrics: dict[str, float], parent: str
) -> dict[str, Any]:
    import asyncio

    from redis.asyncio import Redis

    from runtime.redis_url import client_options
    from wire import registry
    from wire.keys import Keys

    async def run() -> dict[str, Any]:
        redis = Redis.from_url(settings.redis_url, **client_options(settings))
        keys = Keys(settings.key_prefix)
        try:
            entry = await registry.register(
                redis, keys, settings.registry_dir, settings.train_name, path, metrics=metrics, parent=parent
            )
            if settings.train_promote:
                await registry.promote(redis, keys, settings.train_name, entry.version)
            return {**entry.model_dump(), "promoted": bool(settings.train_promote)}
        finally:
            await redis.aclose()

    return asyncio.run(run())


def run(settings: TrainRunSettings) -> int:
    """Train on this rank; returns the exit code."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if "MASTER_ADDR" not in os.environ:  # plain `python -m training`: a world of one
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1")
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if cuda else "cpu")
    torch.set_num_threads(settings.train_threads or max(1, (os.cpu_count() or 1) // local_world))
    _init_process_group("nccl" if cuda else "gloo", rank, world)
    log.info("rank %d of %d: DDP over %s on %s", rank, world, "nccl" if cuda else "gloo", device)
    try:
        return _train(settings, rank, world, device)
    finally:
        dist.destroy_process_group()


def _init_process_group(backend: str, rank: int, world: int) -> None:
    """Join the process group through torchrun's store, under a prefix of this restart attempt.

    After an elastic restart the store can still hold the dead attempt's gloo addresses under the same
    keys; a new rank that read one of those would dial a closed port. The prefix keeps attempts apart.
    """
    from datetime import timedelta

    from torch.distributed.rendezvous import rendezvous

    timeout = timedelta(minutes=10)
    store, _rank, _world = next(rendezvous("env://", rank=rank, world_size=world, timeout=timeout))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    prefixed = dist.PrefixStore(f"lookout/attempt-{attempt}", store)  # type: ignore[attr-defined]
    dist.init_process_group(backend, store=prefixed, rank=rank, world_size=world, timeout=timeout)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _train(settings: TrainRunSettings, rank: int, world: int, device: torch.device) -> int:
    out: Path = settings.train_dir
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.train_seed)
    np.random.seed(settings.train_seed + rank)
    samples = load_sources(settings.train_data, settings.train_limit or None)
    sources = {str(path): sum(1 for s in samples if s.source == path) for path in settings.train_data}
    dataset = DetectionDataset(samples, settings.train_size, flip=settings.train_flip)
    start = _resolve_start(settings)
    model = build_model(settings.train_arch)
    if start is None:
        log.info("rank %d: starting from random weights", rank)
    elif start.suffix == ".onnx":
        count = import_onnx_weights(model, start, INPUT_SIZE)
        log.info("rank %d: imported %d convolutions from %s", rank, count, start)
    else:
        load_pth(model, start)
        log.info("rank %d: loaded %s", rank, start)
    model.to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=settings.train_lr, momentum=0.9, weight_decay=5e-4, nesterov=True
    )
    checkpoint = out / CHECKPOINT
    resumed = load_checkpoint(checkpoint, model, optimizer)
    done = resumed.iteration if resumed else 0
    if resumed:
        log.info("rank %d: resumed from checkpoint at iteration %d", rank, done)

    sampler: DistributedSampler[int] = DistributedSampler(
        dataset,  # type: ignore[arg-type]
        num_replicas=world,
        rank=rank,
        shuffle=True,
        seed=settings.train_seed,
    )
    loader: DataLoader[Any] = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=settings.train_batch,
        sampler=sampler,
        collate_fn=_collate,
        drop_last=True,
    )
    per_epoch = len(loader)
    if per_epoch == 0:
        raise LookoutError(
            f"{len(dataset)} images are fewer than --batch {settings.train_batch} x {world} ranks"
        )
    total = settings.train_iters or settings.train_epochs * per_epoch
    fixed_images, fixed_targets = _collate(
        [dataset[i] for i in range(min(len(dataset), settings.train_batch))]
    )
    summary = Summary(
        world_size=world,
        iterations=total,
        resumed_from=done,
        start=str(start or "random"),
        samples=len(dataset),
        sources=sources,
    )
    summary_path = out / SUMMARY
    if rank == 0:
        previous = json.loads(summary_path.read_text()) if resumed and summary_path.exists() else {}
        summary.loss_before = previous.get("loss_before", math.nan)
        if not resumed:
            summary.loss_before = _fixed_batch_loss(model, fixed_images.to(device), fixed_targets.to(device))
            summary_path.write_text(json.dumps(asdict(summary), indent=2))

    model.train()
    freeze_batchnorm(model)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    progress = None
    if rank == 0:
        from tqdm import tqdm

        progress = tqdm(total=total, initial=done, desc="train", unit="step", dynamic_ncols=True)
    started = time.monotonic()
    steps_here = 0
    epoch = done // per_epoch
    while done < total:
        sampler.set_epoch(epoch)
        epoch_loss = torch.zeros(2, device=device)
        for images, targets in islice(loader, done % per_epoch, None):
            if done >= total:
                break
            _maybe_kill_self(rank, done)
            losses = ddp(images.to(device), targets.to(device))
            optimizer.zero_grad(set_to_none=True)
            losses["total_loss"].backward()
            optimizer.step()
            done += 1
            steps_here += 1
            if steps_here == 1:  # the first step pays for lazy initialisation: time the rest
                started = time.monotonic()
            epoch_loss += torch.stack([losses["total_loss"].detach(), torch.ones((), device=device)])
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{float(losses['total_loss']):.3f}", epoch=epoch)
            if rank == 0 and (done % settings.checkpoint_every == 0 or done == total):
                save_checkpoint(
                    checkpoint,
                    model,
                    optimizer,
                    done,
                    epoch,
                    {"settings": settings.model_dump(mode="json", exclude={"influx_token"})},
                )
        dist.all_reduce(epoch_loss)
        mean = float(epoch_loss[0] / max(1.0, float(epoch_loss[1])))
        summary.epoch_losses.append(mean)
        if rank == 0:
            log.info(
                "epoch %d: mean loss %.4f over %d steps of %d ranks",
                epoch,
                mean,
                int(epoch_loss[1]) // world,
                world,
            )
        epoch += 1
    elapsed = time.monotonic() - started
    if progress is not None:
        progress.close()
    timed = steps_here - 1
    summary.samples_per_s = (
        timed * settings.train_batch * world / elapsed if timed > 0 and elapsed > 0 else 0.0
    )
    summary.weights_sha256 = weights_digest(model)
    log.info("rank %d: final weights sha256 %s", rank, summary.weights_sha256)
    if rank == 0:
        _finish(settings, model.cpu(), summary, start, fixed_images, fixed_targets)
    return 0


def _finish(
    settings: TrainRunSettings,
    model: nn.Module,
    summary: Summary,
    start: Path | None,
    fixed_images: torch.Tensor,
    fixed_targets: torch.Tensor,
) -> None:
    out: Path = settings.train_dir
    summary.loss_after = _fixed_batch_loss(model, fixed_images, fixed_targets)
    log.info("loss on a fixed batch: %.4f before, %.4f after", summary.loss_before, summary.loss_after)
    exported = out / EXPORTED
    export_onnx(model, exported, INPUT_SIZE)
    checks = fixed_images if fixed_images.shape[-1] == INPUT_SIZE else None
    inputs = (
        checks.numpy() if checks is not None else np.random.default_rng(0).uniform(0, 255, (2, 3, 416, 416))
    )
    summary.export_max_diff = check_export(model, exported, inputs.astype(np.float32))
    log.info("exported %s: ONNX Runtime matches PyTorch within %.2e", exported, summary.export_max_diff)
    if settings.train_eval_data is not None:
        if start is not None and start.suffix == ".onnx":
            summary.metrics_before = _evaluate(start, settings.train_eval_data, out, "before")
        summary.metrics_after = _evaluate(exported, settings.train_eval_data, out, "after")
        log.info(
            "COCO AP on %s: before %s, after %s",
            settings.train_eval_data,
            summary.metrics_before,
            summary.metrics_after,
        )
    if settings.train_publish:
        from wire.registry import sha256_file

        parent = f"{start.name}@{sha256_file(start)[:12]}" if start is not None else ""
        summary.published = _publish(settings, exported, summary.metrics_after, parent)
        log.info(
            "published %s %s%s",
            settings.train_name,
            summary.published["version"],
            " (promoted)" if settings.train_promote else "",
        )
    (out / SUMMARY).write_text(json.dumps(asdict(summary), indent=2))
