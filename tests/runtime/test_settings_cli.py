"""runtime/settings_cli.py: flags and help generated from the settings, one-line errors, unknown names."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from lookout.cli import build_parser, main
from runtime import settings_cli
from runtime.settings_cli import (
    GLOBAL_FIELDS,
    add_settings_arguments,
    flags_of,
    load_settings,
    rule_of,
    settings_argv,
    warn_unknown_variables,
)
from wire.config import BridgeSettings, SignalingSettings, TrainSettings, UpSettings, WorkerSettings

COMMANDS: dict[str, type[BaseSettings]] = {
    "worker": WorkerSettings,
    "signaling": SignalingSettings,
    "bridge": BridgeSettings,
    "train": TrainSettings,
    "up": UpSettings,
}


@pytest.fixture(autouse=True)
def fresh_warnings() -> Iterator[None]:
    settings_cli._warned.clear()
    yield
    settings_cli._warned.clear()


def subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found: argparse.ArgumentParser = action.choices[command]
    return found


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_field_is_a_flag_of_its_command_with_its_description(command: str) -> None:
    cls = COMMANDS[command]
    parser = subparser(command)
    by_dest = {action.dest: action for action in parser._actions}
    for name, info in cls.model_fields.items():
        if name in GLOBAL_FIELDS:
            assert name not in by_dest
            continue
        action = by_dest[name]
        assert action.option_strings == flags_of(name, info)
        assert action.help is not None and action.help.startswith((info.description or "").removesuffix("."))
        assert f"$LOOKOUT_{name.upper()}" in action.help
        assert action.default is argparse.SUPPRESS  # the variables and defaults stay in charge


def test_the_flag_names_users_know_are_kept() -> None:
    worker = {s for a in subparser("worker")._actions for s in a.option_strings}
    assert {"--redis", "--id", "--hard-examples", "--metrics-port", "--watch-registry"} <= worker
    train = {s for a in subparser("train")._actions for s in a.option_strings}
    assert {"--data", "--out", "--from", "--batch", "--lr", "--publish", "--nproc-per-node"} <= train
    assert {"--redis-url", "--redis"} <= {s for a in subparser("bridge")._actions for s in a.option_strings}


def test_help_shows_the_rule_and_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["signaling", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Port of the page, /ws, /api and /metrics [1..65535] (default: $LOOKOUT_PORT or 8080)" in text
    assert "sample rate settings" in text


def test_rules_in_words() -> None:
    fields = {**BridgeSettings.model_fields, **TrainSettings.model_fields}
    assert rule_of(fields["jpeg_quality"]) == "10..100"
    assert rule_of(fields["max_sample_fps"]) == "> 0, <= 240"
    assert rule_of(fields["train_size"]) == "32..2048, multiple of 32"
    assert rule_of(fields["ice_servers"]) == ""


def parse(cls: type[BaseSettings], argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, cls)
    return parser.parse_args(argv)


def test_flags_override_variables_which_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKOUT_BATCH", "4")
    monkeypatch.setenv("LOOKOUT_THREADS", "2")
    settings = load_settings(WorkerSettings, parse(WorkerSettings, ["--batch", "8"]), command="worker")
    assert (settings.batch, settings.threads, settings.conf) == (8, 2, 0.3)


def test_booleans_take_a_value_or_none() -> None:
    args = parse(WorkerSettings, ["--watch-registry", "false"])
    assert load_settings(WorkerSettings, args, command="worker").watch_registry is False
    assert parse(TrainSettings, ["--publish", "--flip=true"]).train_publish == "true"


def test_settings_argv_gives_back_the_same_settings(tmp_path: Path) -> None:
    given = ["--batch", "3", "--hard-examples", str(tmp_path), "--watch-registry", "false", "--id", "w1"]
    settings = load_settings(WorkerSettings, parse(WorkerSettings, given), command="worker")
    argv = settings_argv(settings, ["batch", "hard_examples_dir", "watch_registry", "worker_id"])
    assert load_settings(WorkerSettings, parse(WorkerSettings, argv), command="worker") == settings


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["signaling", "--port", "70000"],
            "invalid signaling setting --port: Input should be less than or equal",
        ),
        (["bridge", "--jpeg-quality", "5"], "invalid bridge setting --jpeg-quality: Input should be greater"),
        (
            ["worker", "--hard-examples-low", "0.8"],
            "invalid worker settings: hard_examples_low (0.8) must be below",
        ),
        (
            ["train", "--data", "x", "--size", "33"],
            "invalid train setting --size: Input should be a multiple of 32",
        ),
        (
            ["up", "--bridges", "0"],
            "invalid up setting --bridges: Input should be greater than or equal to 1",
        ),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_2(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lookout: error: {line}"), err


@pytest.mark.parametrize(
    ("command", "variable", "value", "says"),
    [
        ("worker", "LOOKOUT_BATCH", "0", "greater than or equal to 1"),
        ("bridge", "LOOKOUT_UDP_PORT_MIN", "70000", "less than or equal to 65535"),
        (
            "signaling",
            "LOOKOUT_REDIS_URL",
            "http://x",
            "invalid Redis URL: must start with redis://, rediss://, unix://",
        ),
        ("train", "LOOKOUT_TRAIN_LR", "0", "greater than 0"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it_and_exit_2(
    command: str,
    variable: str,
    value: str,
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, value)
    argv = [command, "--data", "x"] if command == "train" else [command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lookout: error: invalid {command} setting {variable}: "), err
    assert says in err[0]
    # A Redis URL may carry its password: its error never repeats it (wire.config.errors.UNSHOWN_INPUTS).
    assert err[0].endswith(says if variable == "LOOKOUT_REDIS_URL" else f"(got '{value}')"), err


def test_a_bad_variable_breaks_no_other_command_help(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOOKOUT_PORT", "0")  # a parser is built without reading the settings
    with pytest.raises(SystemExit) as exit_info:
        main(["signaling", "--help"])
    assert exit_info.value.code == 0


def test_an_unknown_variable_is_warned_with_the_closest_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("LOOKOUT_JPEG_QUALTY=70\nLOOKOUT_MODEL=yolox_s\nOTHER=1\n")
    environ = {"LOOKOUT_REDIS_ULR": "redis://h/0", "LOOKOUT_PORT": "1", "HOME": "/root"}
    with caplog.at_level(logging.WARNING, logger="lookout.settings"):
        lines = warn_unknown_variables(environ, dotenv)
    assert lines == [
        f"unknown setting LOOKOUT_JPEG_QUALTY (in {dotenv}) is ignored; did you mean LOOKOUT_JPEG_QUALITY?",
        "unknown setting LOOKOUT_REDIS_ULR (in the environment) is ignored; did you mean LOOKOUT_REDIS_URL?",
    ]
    assert [r.getMessage() for r in caplog.records] == lines
    assert warn_unknown_variables(environ, dotenv) == []  # once per process


def test_a_command_warns_about_a_misspelled_variable_at_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LOOKOUT_IN_FLIHGT", "3")
    with caplog.at_level(logging.WARNING, logger="lookout.settings"):
        load_settings(BridgeSettings, parse(BridgeSettings, []), command="bridge")
    assert any("did you mean LOOKOUT_IN_FLIGHT?" in r.getMessage() for r in caplog.records)
