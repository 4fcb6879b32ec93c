"""`lookout COMMAND ...`: the composition root. Each package registers its own subcommands.

Registration only declares arguments; every command imports its heavy modules (onnxruntime, aiortc,
torch) when it runs, so that `lookout --help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

from pydantic import ValidationError

from runtime.bootstrap import configure_logging, restore_sigint
from wire.config import describe_invalid
from wire.errors import LookoutError

log = logging.getLogger("lookout")


class Registrar(Protocol):
    def __call__(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...


def _registrars() -> tuple[list[Registrar], list[Registrar]]:
    """(top-level command registrars, `lookout models ...` registrars)."""
    import inference.cli
    import inference.worker_cli
    import lookout.batch
    import lookout.lab.cli
    import lookout.stream
    import lookout.up
    import mediabridge.cli
    import signaling.cli
    import training.cli

    commands: list[Registrar] = [
        inference.cli.register,
        inference.worker_cli.register,
        signaling.cli.register,
        mediabridge.cli.register,
        training.cli.register,
        lookout.up.register,
        lookout.stream.register,
        lookout.batch.register,
        lookout.lab.cli.register,
    ]
    models: list[Registrar] = [inference.cli.register_models, training.cli.register_models]
    return commands, models


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lookout",
        description="Distributed, real-time object detection on live video.",
        epilog="Run `lookout COMMAND --help` for the options of each command. "
        "Every option also reads a LOOKOUT_* environment variable (see compose/.env.example).",
    )
    parser.add_argument(
        "--log-level",
        default=None,
        help="logging level: DEBUG, INFO, WARNING or ERROR (default: $LOOKOUT_LOG_LEVEL or INFO)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands, model_commands = _registrars()
    for register in commands:
        register(sub)
    models = sub.add_parser("models", help="find, download and manage model versions")
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    for register in model_commands:
        register(models_sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    restore_sigint()
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        configure_logging(args.log_level)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except LookoutError as exc:
        print(f"lookout: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValidationError as exc:
        # A command that reads its settings without runtime.settings_cli: still one line, exit 2.
        print(f"lookout: error: {describe_invalid(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lookout: interrupted", file=sys.stderr)
        return 130
