"""`lookout train` and `lookout models ...` as a user runs them: real torchrun, real model, real Redis.

One fine-tune (2 ranks, gloo, 8 coco128 images, 4 steps) is shared by the assertions of this module.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from lookout.cli import main
from tests.support.images import imread
from tests.support.processes import LookoutProcess
from tests.support.redis_server import RedisServer
from wire import registry
from wire.keys import Keys


@pytest.fixture(scope="module")
def registry_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def finetuned(
    tmp_path_factory: pytest.TempPathFactory,
    registry_redis: RedisServer,
    model_path: Path,
    coco128: Path,
    images_dir: Path,
) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("finetune")
    store = out / "registry"
    hard = _hard_example_store(out / "hard", model_path, images_dir)
    process = LookoutProcess(
        "train-finetune",
        [
            "train",
            "--nproc-per-node=2",
            "--threads=1",
            f"--data={coco128}",
            f"--data={hard}",  # a hard-example store as part of the data: 6 + 2 images
            "--limit=6",
            "--batch=2",
            "--iters=4",
            "--lr=1e-5",
            f"--from={model_path}",
            f"--out={out / 'run'}",
            f"--eval-data={coco128}",
            "--publish",
            f"--redis-url={registry_redis.url}",
            f"--registry-dir={store}",
        ],
    )
    try:
        code = process.process.wait(timeout=280)
    finally:
        process.stop()
    log = process.log_path.read_text(errors="replace")
    assert code == 0, log[-4000:]
    summary = json.loads((out / "run" / "summary.json").read_text())
    return {
        "summary": summary,
        "log": log,
        "out": out / "run",
        "store": store,
        "redis": registry_redis,
        "hard": hard,
    }


def _hard_example_store(root: Path, model_path: Path, images_dir: Path) -> Path:
    """What a worker's sampler writes: the model's own detections on two frames, as pseudo-labels."""
    from inference.detector import Detector
    from inference.hard_examples import HardExampleSampler
    from wire.messages import ResultMessage

    detector = Detector.load(model_path, threads=1)
    sampler = HardExampleSampler(root, low=0.3, high=0.9, every=1)
    for seq, name in enumerate(["dog.jpg", "bus.jpg"]):
        image = imread(images_dir / name)
        result = ResultMessage(
            session="cam", seq=seq, received_ms=0, model="yolox_nano", model_version="v0", worker="w",
            width=image.shape[1], height=image.shape[0], detections=detector.detect(image),
        )  # fmt: skip
        sampler(image, result)
    assert sampler.saved == 2
    return root


def test_two_ranks_over_gloo_and_a_progress_bar(finetuned: dict[str, Any]) -> None:
    assert finetuned["summary"]["world_size"] == 2
    assert "--standalone" in finetuned["log"] and "--nproc-per-node=2" in finetuned["log"]
    assert "train: 100%" in finetuned["log"]  # rank 0's tqdm bar
    assert "epoch 0: mean loss" in finetuned["log"]
    assert len(finetuned["summary"]["epoch_losses"]) == 2  # 8 images / (2 ranks x 2) = 2 steps per epoch


def test_a_hard_example_store_is_part_of_the_data(finetuned: dict[str, Any], coco128: Path) -> None:
    assert finetuned["summary"]["sources"] == {str(coco128): 6, str(finetuned["hard"]): 2}


def test_loss_goes_down_on_a_fixed_batch(finetuned: dict[str, Any]) -> None:
    summary = finetuned["summary"]
    assert summary["loss_after"] < summary["loss_before"]


def test_ap_holds(finetuned: dict[str, Any]) -> None:
    before, after = finetuned["summary"]["metrics_before"], finetuned["summary"]["metrics_after"]
    assert before["ap"] == pytest.approx(0.329, abs=0.005)  # the starting model's AP (SOURCES.md)
    assert after["ap"] >= before["ap"] - 0.03


def test_export_keeps_the_workers_layout(finetuned: dict[str, Any]) -> None:
    import onnx

    graph = onnx.load(str(finetuned["out"] / "model.onnx")).graph

    def dims(value: onnx.ValueInfoProto) -> list[int]:
        return [d.dim_value for d in value.type.tensor_type.shape.dim]

    assert [(i.name, dims(i)) for i in graph.input] == [("images", [1, 3, 416, 416])]
    assert [(o.name, dims(o)) for o in graph.output] == [("output", [1, 3549, 85])]  # raw head, no decode
    assert not list(finetuned["out"].glob("*.onnx.data"))  # one self-contained file
    assert finetuned["summary"]["export_max_diff"] < 1e-3  # checked against PyTorch in ONNX Runtime


def test_export_runs_in_the_workers_detector(finetuned: dict[str, Any], images_dir: Path) -> None:
    from inference.detector import Detector

    detector = Detector.load(finetuned["out"] / "model.onnx", threads=1)
    assert detector.input_size == (416, 416)
    found = detector.detect(imread(images_dir / "dog.jpg"))
    assert {"dog", "bicycle", "car"} <= {d.label for d in found}


def test_published_with_metrics_and_parent(finetuned: dict[str, Any]) -> None:
    async def check() -> None:
        redis = Redis.from_url(finetuned["redis"].url)
        try:
            (entry,) = await registry.list_versions(redis, Keys(), "yolox_nano")
            assert await registry.promoted(redis, Keys(), "yolox_nano") is None  # promotion is separate
        finally:
            await redis.aclose()
        assert entry.metrics["ap"] == finetuned["summary"]["metrics_after"]["ap"]
        assert entry.parent.startswith("yolox_nano.onnx@695e750a5d57")
        stored = registry.resolve_path(entry, finetuned["store"])
        assert (
            entry.sha256
            == registry.sha256_file(stored)
            == registry.sha256_file(finetuned["out"] / "model.onnx")
        )

    asyncio.run(check())


def test_models_register_list_promote_rollback(
    finetuned: dict[str, Any], model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = finetuned["redis"].url
    store = str(finetuned["store"])
    assert main(["models", "register", "yolox_nano", str(model_path), "--metric", "ap=0.329", "--redis", url,
                 "--registry-dir", store]) == 0  # fmt: skip
    assert "registered yolox_nano v2" in capsys.readouterr().out
    assert main(["models", "promote", "yolox_nano", "v1", "--redis", url]) == 0
    assert main(["models", "promote", "yolox_nano", "v2", "--redis", url]) == 0
    assert main(["models", "list", "--redis", url]) == 0
    listing = capsys.readouterr().out
    assert "* yolox_nano       v2" in listing and "  yolox_nano       v1" in listing and "0.329" in listing
    assert main(["models", "rollback", "yolox_nano", "--redis", url]) == 0
    assert "rolled back yolox_nano to v1" in capsys.readouterr().out


def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dead = "redis://127.0.0.1:1/0"
    assert main(["models", "list", "--redis", dead]) == 2
    assert "lookout: error: cannot reach the registry's Redis" in capsys.readouterr().err
    assert main(["models", "promote", "nothing", "v1", "--redis", dead]) == 2
    capsys.readouterr()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    assert main(["models", "register", "m", str(bad), "--redis", dead]) == 2
    assert "is not a valid ONNX model" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lookout: error: training data not found") and err.count("\n") == 1
    assert main(["train", "--data", str(tmp_path), "--nnodes", "2"]) == 2
    assert "--rdzv-endpoint" in capsys.readouterr().err


def test_registry_errors_from_the_cli(finetuned: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    url = finetuned["redis"].url
    assert main(["models", "promote", "yolox_nano", "v99", "--redis", url]) == 2
    assert "has no version 'v99'" in capsys.readouterr().err


def test_help_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["train"], ["models", "list"], ["models", "promote"], ["models", "rollback"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "torchrun" in text and "--max-restarts" in text and "rollback" in text
    assert shutil.which("torchrun") or True  # lookout train runs torch.distributed.run itself
