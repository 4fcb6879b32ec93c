"""The settings of ``lookout train``: one fine-tuning run (every rank reads them) and its torchrun launch."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings

from wire.config.base import SETTINGS_CONFIG, CommonSettings, flags

NNODES = re.compile(r"^[1-9][0-9]*(:[1-9][0-9]*)?$")


class TrainRunSettings(CommonSettings):
    """The arguments of one training run: ``lookout train`` passes them on to every rank unchanged."""

    train_data: list[Path] = Field(
        default=[],
        description="Training data: a YOLO-format folder (images/ + labels/, e.g. coco128 or a hard-example "
        "store) or a COCO instances JSON; repeat the flag to combine several.",
        json_schema_extra=flags("--data"),
    )
    train_dir: Path = Field(
        default=Path("runs/train"),
        description="Run folder: checkpoint, exported model, evaluations, summary.",
        json_schema_extra=flags("--out"),
    )
    train_from: str = Field(
        default="",
        description="Starting weights: an official YOLOX .pth, an ONNX file of the same architecture, a "
        "model name looked up in the model folder, or 'none' for random weights; empty: the --name model "
        "there.",
        json_schema_extra=flags("--from"),
    )
    train_arch: str = Field(
        default="yolox_nano",
        pattern="^yolox_[a-z]+$",
        description="YOLOX size: yolox_nano, yolox_tiny, yolox_s, ...",
        json_schema_extra=flags("--arch"),
    )
    train_name: str = Field(
        default="yolox_nano",
        min_length=1,
        description="Model name to publish under.",
        json_schema_extra=flags("--name"),
    )
    train_iters: int = Field(
        default=0,
        ge=0,
        description="Optimizer steps in all; 0: use --epochs.",
        json_schema_extra=flags("--iters"),
    )
    train_epochs: int = Field(
        default=1,
        ge=1,
        description="Passes over the data when --iters is 0.",
        json_schema_extra=flags("--epochs"),
    )
    train_batch: int = Field(
        default=8, ge=1, description="Images per rank and optimizer step.", json_schema_extra=flags("--batch")
    )
    train_lr: float = Field(
        default=1e-5,
        gt=0,
        le=1,
        description="SGD learning rate of fine-tuning runs (low: no collapse).",
        json_schema_extra=flags("--lr"),
    )
    train_size: int = Field(
        default=416,
        ge=32,
        le=2048,
        multiple_of=32,
        description="Training input side in pixels (a multiple of 32).",
        json_schema_extra=flags("--size"),
    )
    train_limit: int = Field(
        default=0,
        ge=0,
        description="Use the first N images of each --data; 0: all.",
        json_schema_extra=flags("--limit"),
    )
    train_seed: int = Field(
        default=0,
        ge=0,
        description="Random seed (the same on every rank).",
        json_schema_extra=flags("--seed"),
    )
    checkpoint_every: int = Field(default=50, ge=1, description="Optimizer steps between checkpoints.")
    train_threads: int = Field(
        default=0,
        ge=0,
        description="Torch threads per rank; 0: cores / local ranks.",
        json_schema_extra=flags("--threads"),
    )
    train_eval_data: Path | None = Field(
        default=None,
        description="YOLO folder to compute COCO AP on before and after; unset: no evaluation.",
        json_schema_extra=flags("--eval-data"),
    )
    train_publish: bool = Field(
        default=False,
        description="Register the exported model as a new version in the registry.",
        json_schema_extra=flags("--publish"),
    )
    train_promote: bool = Field(
        default=False,
        description="With --publish: also promote it to the workers.",
        json_schema_extra=flags("--promote"),
    )
    train_flip: bool = Field(
        default=False, description="Random horizontal flips.", json_schema_extra=flags("--flip")
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.train_data:
            raise ValueError("train_data (--data) must name at least one folder or COCO JSON")
        if self.train_promote and not self.train_publish:
            raise ValueError("train_promote (--promote) needs train_publish (--publish)")
        return self


class TorchrunSection(BaseSettings):
    """How ``lookout train`` starts torchrun: ranks here, machines, rendezvous, restarts."""

    model_config = SETTINGS_CONFIG

    nproc_per_node: int = Field(default=1, ge=1, le=1024, description="Ranks on this machine.")
    nnodes: str = Field(default="1", description="Machines taking part, or MIN:MAX.")
    rdzv_endpoint: str = Field(
        default="",
        description="HOST:PORT of the c10d rendezvous, the same on every node (needed with --nnodes "
        "above 1).",
    )
    rdzv_id: str = Field(
        default="lookout-train", min_length=1, description="Run id shared by every node of a run."
    )
    max_restarts: int = Field(
        default=3, ge=0, description="Elastic restarts torchrun allows after a failure."
    )

    @field_validator("nnodes")
    @classmethod
    def _count_or_range(cls, value: str) -> str:
        if not NNODES.match(value):
            raise ValueError("must be a count (2) or a range MIN:MAX (1:4)")
        return value

    @model_validator(mode="after")
    def _rendezvous_when_several(self) -> Self:
        if self.nnodes != "1" and not self.rdzv_endpoint:
            raise ValueError("nnodes above 1 needs --rdzv-endpoint HOST:PORT (the same on every node)")
        return self


class TrainSettings(TrainRunSettings, TorchrunSection):
    """``lookout train``: fine-tuning runs (torchrun) and publishing to the model registry."""
