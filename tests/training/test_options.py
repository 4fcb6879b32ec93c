"""training/options.py: the run's flags are generated from TrainRunSettings and reach the ranks unchanged."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from runtime.settings_cli import SettingsError, add_settings_arguments, load_settings
from training.cli import torchrun_argv
from training.options import add_run_arguments, run_argv, run_settings
from wire.config import TrainSettings


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    return parser.parse_args(argv)


def test_the_flags_given_round_trip_to_a_rank(tmp_path: Path) -> None:
    given = [f"--data={tmp_path / 'a'}", f"--data={tmp_path / 'b'}", "--batch=2", "--publish", "--size=256"]
    settings = run_settings(parse(given))
    assert settings.train_data == [tmp_path / "a", tmp_path / "b"] and settings.train_publish
    argv = run_argv(settings, parse(given))
    assert run_settings(parse(argv)) == settings
    assert not any(flag.startswith("--influx-token") for flag in argv)  # only what was given travels


def test_a_bad_run_flag_is_one_line_naming_it_and_the_rule(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^invalid train setting --size: Input should be a multiple of"):
        run_settings(parse([f"--data={tmp_path}", "--size=100"]))
    with pytest.raises(SettingsError, match=r"train_promote \(--promote\) needs train_publish"):
        run_settings(parse([f"--data={tmp_path}", "--promote"]))
    with pytest.raises(SettingsError, match=r"must name at least one folder"):
        run_settings(parse([]))


def test_torchrun_gets_its_options_and_the_rank_its_flags(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, TrainSettings)
    args = parser.parse_args([f"--data={tmp_path}", "--nproc-per-node=2", "--max-restarts=1", "--iters=3"])
    settings = load_settings(TrainSettings, args, command="train")
    command = torchrun_argv(settings, args)
    assert "--standalone" in command and "--nproc-per-node=2" in command and "--max-restarts=1" in command
    rank = command[command.index("training") + 1 :]
    assert sorted(rank) == sorted([f"--data={tmp_path}", "--iters=3"])
