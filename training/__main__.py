"""`torchrun [--nnodes ...] -m training ARGS`: one rank of a fine-tuning run (see `lookout train --help`)."""

from __future__ import annotations

import argparse
import logging
import sys

from training.options import add_run_arguments
from wire.config import TrainSettings
from wire.errors import LookoutError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    add_run_arguments(parser, TrainSettings())
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr
    )
    from training.trainer import run

    try:
        return run(args)
    except LookoutError as exc:
        print(f"lookout: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
