"""Atomic training checkpoints, so that an elastic restart resumes where the run was."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class Resumed:
    """Where a run restarts: the iteration after the checkpoint."""

    iteration: int
    epoch: int


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    epoch: int,
    extra: dict[str, Any],
) -> None:
    """Write to a temporary file, then rename: a crash mid-write leaves the previous checkpoint intact."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "iteration": iteration,
            "epoch": epoch,
            "extra": extra,
        },
        tmp,
    )
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> Resumed | None:
    """Restore ``model`` and ``optimizer`` from ``path`` when it exists."""
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return Resumed(iteration=int(state["iteration"]), epoch=int(state["epoch"]))


def weights_digest(model: nn.Module) -> str:
    """sha256 of every parameter and buffer, in name order: equal digests mean identical weights."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
