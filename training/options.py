"""The arguments of one training run, shared by `lookout train` and `torchrun ... -m training`."""

from __future__ import annotations

import argparse
from pathlib import Path

from wire.config import TrainSettings


def add_run_arguments(parser: argparse.ArgumentParser, settings: TrainSettings) -> None:
    """Arguments every rank reads; `lookout train` passes them through to torchrun unchanged."""
    parser.add_argument(
        "--data",
        type=Path,
        action="append",
        required=True,
        metavar="PATH",
        help="training data: a YOLO-format folder (images/ + labels/, e.g. coco128 or a hard-example "
        "store) or a COCO instances JSON; repeat to combine several",
    )
    parser.add_argument(
        "--out", type=Path, default=settings.train_dir, help=f"run folder (default: {settings.train_dir})"
    )
    parser.add_argument(
        "--from",
        dest="start",
        default=None,
        metavar="MODEL",
        help="starting weights: an official YOLOX .pth, an ONNX file of the same architecture, or a "
        "model name looked up in $LOOKOUT_MODEL_DIR (default: the --name model there)",
    )
    parser.add_argument(
        "--arch", default="yolox_nano", help="YOLOX size: yolox_nano, yolox_tiny, yolox_s, ..."
    )
    parser.add_argument(
        "--name", default="yolox_nano", help="model name to publish under (default: yolox_nano)"
    )
    parser.add_argument("--iters", type=int, default=0, help="optimizer steps in all; 0: use --epochs")
    parser.add_argument("--epochs", type=int, default=1, help="passes over the data when --iters is 0")
    parser.add_argument("--batch", type=int, default=settings.train_batch, help="images per rank and step")
    parser.add_argument(
        "--lr", type=float, default=settings.train_lr, help="SGD learning rate (low: fine-tuning)"
    )
    parser.add_argument(
        "--size", type=int, default=416, help="training input side in pixels (multiple of 32)"
    )
    parser.add_argument("--limit", type=int, default=0, help="use the first N images of each --data; 0: all")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same on every rank)")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=settings.checkpoint_every,
        help="save a checkpoint every N steps",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads per rank; 0: cores / local ranks"
    )
    parser.add_argument(
        "--eval-data", type=Path, default=None, help="YOLO folder to compute COCO AP on before and after"
    )
    parser.add_argument(
        "--publish", action="store_true", help="register the exported model as a new version in the registry"
    )
    parser.add_argument(
        "--promote", action="store_true", help="with --publish: also promote it to the workers"
    )
    parser.add_argument("--redis-url", default=settings.redis_url, help="Redis of the registry")
    parser.add_argument(
        "--registry-dir", type=Path, default=settings.registry_dir, help="file store of versions"
    )
    parser.add_argument("--flip", action="store_true", help="random horizontal flips")
