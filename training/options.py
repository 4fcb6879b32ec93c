"""The flags of one training run, shared by `lookout train` and `torchrun ... -m training`.

They are generated from ``TrainRunSettings`` (``runtime.settings_cli``), so both entry points parse
and check the same settings; ``run_argv`` turns the flags given back into a rank's command line.
"""

from __future__ import annotations

import argparse

from runtime.settings_cli import add_settings_arguments, given_fields, load_settings, settings_argv
from wire.config import TrainRunSettings


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """A flag for every setting of a run; `lookout train` passes the given ones on to every rank."""
    add_settings_arguments(parser, TrainRunSettings)


def run_settings(args: argparse.Namespace, *, command: str = "train") -> TrainRunSettings:
    """The run's checked settings: LOOKOUT_* variables, overridden by the flags given."""
    return load_settings(TrainRunSettings, args, command=command)


def run_argv(settings: TrainRunSettings, args: argparse.Namespace) -> list[str]:
    """The flags of ``-m training`` that reproduce the run flags given in ``args``.

    Only those: the ranks inherit the environment, so its LOOKOUT_* variables (a token among them)
    reach them without showing on a command line.
    """
    return settings_argv(settings, given_fields(TrainRunSettings, args))
