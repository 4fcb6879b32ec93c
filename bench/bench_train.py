"""Training throughput: samples/s of 1 rank vs 2 ranks (DDP over gloo, 1 thread each) on this CPU.

Reported as a scaling efficiency, ``sps(2 ranks) / (2 x sps(1 rank))`` (1.0 = perfect), and each
throughput also as a ratio to the physical limit measured in the same run: raw ONNX Runtime
``session.run`` of the same model on one thread (``bench.raw.measure_raw``). A training step costs a
forward, a backward and an optimizer step, so expect a small fraction of inference speed. Each run
goes through `torchrun --standalone -m training` exactly as `lookout train` starts it; the first step
of every run is left out of the timing (lazy initialisation). On a 2-core machine two ranks can at
best double one rank's speed when nothing else runs: the figure also shows how busy the machine is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.raw import measure_raw

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOOKOUT_SHARED_DIR", REPO.parent / "shared"))


def run_ranks(ranks: int, args: argparse.Namespace, out: Path) -> float:
    """samples/s of one short run with ``ranks`` ranks of one thread each."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
        "-m", "training", f"--data={args.data}", f"--from={args.model}", f"--out={out}",
        f"--iters={args.iters}", f"--batch={args.batch}", f"--size={args.size}", "--threads=1",
        f"--limit={args.batch * ranks * args.iters}", f"--checkpoint-every={args.iters}",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{ranks}-rank run failed:\n{done.stderr[-3000:]}")
    return float(json.loads((out / "summary.json").read_text())["samples_per_s"])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_train", description=__doc__)
    parser.add_argument("--model", type=Path, default=SHARED / "models" / "yolox_nano.onnx")
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "coco-subset" / "coco128")
    parser.add_argument("--iters", type=int, default=6, help="steps per run (the first is not timed)")
    parser.add_argument("--batch", type=int, default=2, help="images per rank and step")
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--raw-seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    raw = measure_raw(args.model, threads=1, seconds=args.raw_seconds)
    with tempfile.TemporaryDirectory() as tmp:
        one = run_ranks(1, args, Path(tmp) / "one")
        two = run_ranks(2, args, Path(tmp) / "two")
    efficiency = two / (2 * one) if one > 0 else 0.0
    figures = {
        "raw_ort_images_per_s_1_thread": raw.images_per_s,
        "train_samples_per_s_1_rank": one,
        "train_samples_per_s_2_ranks": two,
        "ratio_to_raw_1_rank": one / raw.images_per_s,
        "ratio_to_raw_2_ranks": two / raw.images_per_s,
        "scaling_efficiency": efficiency,
    }
    print(f"raw ORT session.run (1 thread): {raw.describe()}")
    print(f"train, 1 rank : {one:6.2f} samples/s = {figures['ratio_to_raw_1_rank']:.3f} x raw")
    print(f"train, 2 ranks: {two:6.2f} samples/s = {figures['ratio_to_raw_2_ranks']:.3f} x raw")
    print(f"scaling efficiency (2 ranks / 2 x 1 rank): {efficiency:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
