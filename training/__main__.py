"""`torchrun [--nnodes ...] -m training ARGS`: one rank of a fine-tuning run (see `lookout train --help`)."""

from __future__ import annotations

import argparse
import sys

from runtime.bootstrap import configure_logging
from training.options import add_run_arguments, run_settings
from wire.errors import LookoutError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging("INFO")
    try:
        settings = run_settings(args, command="training rank")
        from training.trainer import run

        return run(settings)
    except LookoutError as exc:
        print(f"lookout: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
