"""wire/config/training.py: every training knob is typed and checked, alone and together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from wire.config import TorchrunSection, TrainRunSettings, TrainSettings


def message(cls: type[Any], **values: Any) -> str:
    with pytest.raises(ValidationError) as exc:
        cls(**values)
    return str(exc.value.errors()[0]["msg"])


def test_a_run_needs_data_and_promote_needs_publish(tmp_path: Path) -> None:
    assert "must name at least one folder" in message(TrainRunSettings)
    assert "needs train_publish" in message(TrainRunSettings, train_data=[tmp_path], train_promote=True)
    run = TrainRunSettings(train_data=[tmp_path], train_publish=True, train_promote=True)
    assert run.train_promote and run.train_data == [tmp_path]


@pytest.mark.parametrize(
    "values",
    [{"train_size": 100}, {"train_size": 16}, {"train_lr": 0}, {"train_batch": 0}, {"train_arch": "resnet"}],
)
def test_bad_run_values_are_refused(tmp_path: Path, values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TrainRunSettings(train_data=[tmp_path], **values)


def test_several_nodes_need_a_rendezvous() -> None:
    assert "needs --rdzv-endpoint" in message(TorchrunSection, nnodes="2")
    assert TorchrunSection(nnodes="1:4", rdzv_endpoint="h:29400").nnodes == "1:4"
    assert "must be a count (2) or a range" in message(TorchrunSection, nnodes="many")


def test_the_data_comes_from_a_json_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOOKOUT_TRAIN_DATA", f'["{tmp_path}"]')
    assert TrainSettings().train_data == [tmp_path]
