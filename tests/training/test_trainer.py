"""The ranks themselves (`torchrun ... -m training`): two nodes over c10d, and an elastic restart."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.processes import OUTPUT, LookoutProcess
from tests.support.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
TINY = ["--limit=4", "--batch=1", "--threads=1", "--size=256", "--lr=1e-5"]


def _torchrun(name: str, args: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
    log = OUTPUT / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    return process, log


def _finish(process: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return process.wait(timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()


def test_two_nodes_end_with_identical_weights(tmp_path: Path, coco128: Path, model_path: Path) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    common = ["--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}"]
    run = ["-m", "training", f"--data={coco128}", *TINY, "--iters=2", f"--from={model_path}"]
    nodes = [
        _torchrun(f"train-node{i}", [*common, "--rdzv-id=two-nodes", *run, f"--out={tmp_path / f'node{i}'}"])
        for i in range(2)
    ]
    codes = [_finish(process, 240) for process, _ in nodes]
    logs = [log.read_text(errors="replace") for _, log in nodes]
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    digests = [re.findall(r"rank (\d): final weights sha256 ([0-9a-f]{64})", log) for log in logs]
    assert sorted(rank for found in digests for rank, _ in found) == ["0", "1"]  # one rank per node
    (_, first), (_, second) = digests[0][0], digests[1][0]
    assert first == second
    rank0 = next(tmp_path / f"node{i}" for i in range(2) if (tmp_path / f"node{i}" / "summary.json").exists())
    summary = json.loads((rank0 / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["weights_sha256"] == first


def test_a_killed_rank_is_restarted_and_resumes_from_the_checkpoint(
    tmp_path: Path, coco128: Path, model_path: Path
) -> None:
    # Rank 1 SIGKILLs itself before step 4 on the first attempt; rank 0 has checkpointed step 2 by then.
    process = LookoutProcess(
        "train-restart",
        [
            "train",
            "--nproc-per-node=2",
            "--max-restarts=1",
            f"--data={coco128}",
            *TINY,
            "--iters=5",
            "--checkpoint-every=2",
            f"--from={model_path}",
            f"--out={tmp_path}",
        ],
        env={"LOOKOUT_TRAIN_KILL_AT": "1:3"},
    )
    try:
        code = process.process.wait(timeout=240)
    finally:
        process.stop()
    log = process.log_path.read_text(errors="replace")
    assert code == 0, log[-4000:]
    assert "rank 1: killing itself at iteration 3" in log
    assert "failed (exitcode: -9) local_rank: 1" in log  # torchrun saw the SIGKILL
    assert "rank 0: resumed from checkpoint at iteration 2" in log
    assert "rank 1: resumed from checkpoint at iteration 2" in log
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["resumed_from"] == 2 and summary["iterations"] == 5
    assert not math.isnan(summary["loss_before"])  # measured by the first attempt, kept across the restart


@pytest.mark.gpu
def test_ranks_on_cuda_use_nccl(tmp_path: Path, coco128: Path, model_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    ranks = min(2, torch.cuda.device_count())
    process, log_path = _torchrun(
        "train-cuda",
        ["--standalone", f"--nproc-per-node={ranks}", "-m", "training", f"--data={coco128}", *TINY,
         "--iters=2", f"--from={model_path}", f"--out={tmp_path}"],
    )  # fmt: skip
    code = _finish(process, 240)
    log = log_path.read_text(errors="replace")
    assert code == 0, log[-3000:]
    assert "rank 0 of" in log and "DDP over nccl on cuda:0" in log
    assert json.loads((tmp_path / "summary.json").read_text())["export_max_diff"] < 1e-3


def test_evaluation_goes_to_the_run_folder_not_beside_a_read_only_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import trainer

    shared = tmp_path / "shared"
    shared.mkdir()
    model = shared / "start.onnx"
    model.write_bytes(b"onnx")
    shared.chmod(0o555)  # a shared, read-only model folder
    run = tmp_path / "run"
    run.mkdir()
    commands: list[list[str]] = []

    def fake_eval(command: list[str], **_kwargs: object) -> subprocess.CompletedProcess[str]:
        # Stands in for `lookout eval ... --out FILE`: write its JSON where it was told to.
        commands.append(command)
        out = Path(command[command.index("--out") + 1])
        out.write_text(json.dumps({"ap": 0.25, "ap50": 0.5}))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_eval)  # the trainer calls subprocess.run
    try:
        metrics = trainer._evaluate(model, tmp_path / "data", run, "before")
    finally:
        shared.chmod(0o755)
    assert metrics == {"ap": 0.25, "ap50": 0.5}
    assert (run / "eval-before.json").is_file()
    assert sorted(p.name for p in shared.iterdir()) == ["start.onnx"]
    assert commands[0][commands[0].index("--model") + 1] == str(model)
