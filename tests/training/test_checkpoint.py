"""Checkpoints are atomic and restore model, optimizer and iteration; digests compare weights."""

from __future__ import annotations

from pathlib import Path

import torch

from training.checkpoint import load_checkpoint, save_checkpoint, weights_digest


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


def test_round_trip(tmp_path: Path) -> None:
    model = _model(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model, optimizer, iteration=7, epoch=2, extra={"note": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left behind

    other = _model(1)
    assert weights_digest(other) != weights_digest(model)
    other_optimizer = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    resumed = load_checkpoint(path, other, other_optimizer)
    assert resumed is not None and (resumed.iteration, resumed.epoch) == (7, 2)
    assert weights_digest(other) == weights_digest(model)
    assert other_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()


def test_no_checkpoint_means_a_fresh_start(tmp_path: Path) -> None:
    model = _model(0)
    assert load_checkpoint(tmp_path / "none.pt", model, torch.optim.SGD(model.parameters(), lr=0.1)) is None
