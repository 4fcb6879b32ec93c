"""`lookout train` (fine-tuning through torchrun) and `lookout models list|promote|rollback|register`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from runtime.settings_cli import add_settings_arguments, load_settings
from training.options import run_argv
from wire.config import RegistrySection, TrainSettings
from wire.errors import LookoutError

log = logging.getLogger("lookout.train")

T = TypeVar("T")


class TrainingFailedError(LookoutError):
    """torchrun ended with an error (the ranks' log says why)."""


class RedisUnavailableError(LookoutError):
    """The registry's Redis cannot be reached."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `lookout train`."""
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a YOLOX model with torchrun (DDP) and optionally publish it to the registry",
        description="Fine-tune YOLOX (pixeltable-yolox model and loss) on YOLO-format folders or COCO "
        "JSON, starting from an official .pth or from the deployed ONNX model itself. Runs torchrun: "
        "one process per --nproc-per-node, DDP over gloo (CPU) or NCCL (GPU); across machines with "
        "--nnodes and a c10d --rdzv-endpoint. Checkpoints every --checkpoint-every steps; a restarted "
        "rank resumes from the checkpoint. At the end rank 0 exports OUT/model.onnx (the workers' "
        "layout), checks it against PyTorch, evaluates before/after on --eval-data (into OUT) and, with "
        "--publish, registers a new version. The same run also starts as `torchrun ... -m training`.",
    )
    add_settings_arguments(parser, TrainSettings)
    parser.set_defaults(func=run_train)


def torchrun_argv(settings: TrainSettings, args: argparse.Namespace) -> list[str]:
    """torchrun's command line: its own options from ``settings``, then a rank's run flags from ``args``."""
    launcher = [sys.executable, "-m", "torch.distributed.run"]
    if settings.nnodes == "1" and not settings.rdzv_endpoint:
        launcher += ["--standalone", "--nnodes=1"]
    else:
        launcher += [
            f"--nnodes={settings.nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={settings.rdzv_endpoint}",
            f"--rdzv-id={settings.rdzv_id}",
        ]
    launcher += [f"--nproc-per-node={settings.nproc_per_node}", f"--max-restarts={settings.max_restarts}"]
    return [*launcher, "-m", "training", *run_argv(settings, args)]


def run_train(args: argparse.Namespace) -> int:
    settings = load_settings(TrainSettings, args, command="train")
    try:
        import torch  # noqa: F401
        import yolox.models  # noqa: F401
    except ImportError as exc:
        raise LookoutError(
            f"training needs the train extra ({exc.name} is missing): pip install -e '.[train]'"
        ) from None
    wanted = [*settings.train_data, *([settings.train_eval_data] if settings.train_eval_data else [])]
    missing = [str(path) for path in wanted if not path.exists()]
    if missing:
        raise LookoutError(f"training data not found: {', '.join(missing)}")
    command = torchrun_argv(settings, args)
    log.info("starting: %s", " ".join(command))
    process = subprocess.Popen(command)
    stopping: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        # torchrun passes the signal on to every rank and waits for them: the run stops cleanly.
        stopping.append(signum)
        if process.poll() is None:
            process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopping:
        log.info("training stopped on request (%s)", signal.Signals(stopping[0]).name)
        return 0
    if code != 0:
        raise TrainingFailedError(f"training failed: torchrun exited with {code} (the log above says why)")
    summary = settings.train_dir / "summary.json"
    log.info("training done: %s", summary)
    return 0


# --- lookout models ... ----------------------------------------------------------------------------
def register_models(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `lookout models list|promote|rollback|register`."""

    def common(parser: argparse.ArgumentParser) -> None:
        add_settings_arguments(parser, RegistrySection)

    listing = subparsers.add_parser(
        "list",
        help="list registered model versions",
        description="Every version of every model (or of NAME).",
    )
    listing.add_argument("name", nargs="?", default=None, metavar="NAME", help="only this model")
    common(listing)
    listing.set_defaults(func=run_list)

    promote = subparsers.add_parser(
        "promote",
        help="make a version the one workers serve",
        description="Set NAME's promoted version; running workers load it beside the old one, warm it up "
        "and switch between batches. The previous version goes on the rollback history.",
    )
    promote.add_argument("name", metavar="NAME")
    promote.add_argument("version", metavar="VERSION", help="a version from `lookout models list`")
    common(promote)
    promote.set_defaults(func=run_promote)

    rollback = subparsers.add_parser(
        "rollback", help="promote again the version served before", description="Undo the last promotion."
    )
    rollback.add_argument("name", metavar="NAME")
    common(rollback)
    rollback.set_defaults(func=run_rollback)

    add = subparsers.add_parser(
        "register",
        help="add an ONNX file to the registry as a new version",
        description="Check that FILE is an ONNX model, copy it into the registry store "
        "($LOOKOUT_REGISTRY_DIR) as NAME's next version and index it. It is not promoted.",
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument("file", type=Path, metavar="FILE")
    add.add_argument("--metric", action="append", default=[], metavar="KEY=VALUE", help="e.g. ap=0.33")
    add.add_argument("--parent", default="", help="version or file it was trained from")
    common(add)
    add.set_defaults(func=run_register)


def _with_registry(args: argparse.Namespace, action: Callable[[Any, Any], Awaitable[T]]) -> T:
    settings = load_settings(RegistrySection, args, command="models")
    from redis.asyncio import Redis

    from runtime.redis import REDIS_DOWN_ERRORS
    from runtime.redis_url import client_options, redact_url
    from wire.keys import Keys

    async def run() -> T:
        redis = Redis.from_url(settings.redis_url, socket_connect_timeout=5, **client_options(settings))
        try:
            return await action(redis, Keys(settings.key_prefix))
        except REDIS_DOWN_ERRORS as exc:
            raise RedisUnavailableError(
                f"cannot reach the registry's Redis at {redact_url(settings.redis_url)}: {exc}"
            ) from exc
        finally:
            await redis.aclose()

    return asyncio.run(run())


def run_list(args: argparse.Namespace) -> int:
    from wire import registry

    async def action(redis: Any, keys: Any) -> list[tuple[Any, str | None]]:
        names = [args.name] if args.name else await registry.model_names(redis, keys)
        rows = []
        for name in names:
            current = await registry.promoted(redis, keys, name)
            for entry in await registry.list_versions(redis, keys, name):
                rows.append((entry, current.version if current else None))
        return rows

    rows = _with_registry(args, action)
    if not rows:
        print("no model versions registered" + (f" for {args.name}" if args.name else ""))
        return 0
    print(f"{'':2}{'NAME':<16} {'VERSION':<8} {'SHA256':<12} {'AP':>6} {'AP50':>6}  {'CREATED':<19}  PARENT")
    for entry, current in rows:
        mark = "* " if entry.version == current else "  "
        created = datetime.fromtimestamp(entry.created / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        ap = entry.metrics.get("ap")
        ap50 = entry.metrics.get("ap50")
        print(
            f"{mark}{entry.name:<16} {entry.version:<8} {entry.sha256[:12]:<12} "
            f"{'-' if ap is None else f'{ap:.3f}':>6} {'-' if ap50 is None else f'{ap50:.3f}':>6}  "
            f"{created:<19}  {entry.parent}"
        )
    print("(* = promoted)")
    return 0


def run_promote(args: argparse.Namespace) -> int:
    from wire import registry

    entry = _with_registry(args, lambda redis, keys: registry.promote(redis, keys, args.name, args.version))
    print(f"promoted {entry.name} {entry.version} (sha256 {entry.sha256[:12]})")
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    from wire import registry

    entry = _with_registry(args, lambda redis, keys: registry.rollback(redis, keys, args.name))
    print(f"rolled back {entry.name} to {entry.version}")
    return 0


def run_register(args: argparse.Namespace) -> int:
    from wire import registry

    metrics = {}
    for item in args.metric:
        key, sep, value = item.partition("=")
        try:
            metrics[key] = float(value) if sep else float("nan")
        except ValueError:
            raise LookoutError(f"--metric {item!r}: expected KEY=NUMBER") from None
        if not sep:
            raise LookoutError(f"--metric {item!r}: expected KEY=NUMBER")
    _check_onnx(args.file)
    store = load_settings(RegistrySection, args, command="models").registry_dir
    entry = _with_registry(
        args,
        lambda redis, keys: registry.register(
            redis, keys, store, args.name, args.file, metrics=metrics, parent=args.parent
        ),
    )
    print(f"registered {entry.name} {entry.version} (sha256 {entry.sha256[:12]}) at {entry.path}")
    return 0


def _check_onnx(path: Path) -> None:
    if not path.is_file():
        raise LookoutError(f"model file not found: {path}")
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LookoutError(f"{path} is not a valid ONNX model: {first}") from exc
