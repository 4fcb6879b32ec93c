"""Every service command in docker-compose.yml is a real `lookout` subcommand, with valid settings.

The same commands also run for real, with their compose environment, in tests/test_observability.py.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from lookout.cli import main
from tests.compose.composefile import resolved
from wire.config import BridgeSettings, SignalingSettings, WorkerSettings

SETTINGS_OF: dict[str, type[BaseSettings]] = {
    "worker": WorkerSettings,
    "bridge": BridgeSettings,
    "signaling": SignalingSettings,
}


def lookout_services() -> dict[str, dict[str, Any]]:
    services = resolved()["services"]
    return {name: s for name, s in services.items() if s.get("command", [""])[0] == "lookout"}


def test_the_lookout_services_are_the_expected_ones() -> None:
    assert set(lookout_services()) == {"signaling", "bridge", "worker-cpu", "worker-gpu"}


@pytest.mark.parametrize("name", sorted(lookout_services()))
def test_command_is_a_lookout_subcommand(name: str) -> None:
    command = lookout_services()[name]["command"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main([*command[1:], "--help"])
    assert exit_info.value.code == 0, out.getvalue()
    assert out.getvalue().startswith(f"usage: lookout {' '.join(command[1:])}")


@pytest.mark.parametrize("name", sorted(lookout_services()))
def test_environment_names_settings_of_that_command(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    service = lookout_services()[name]
    settings_class = SETTINGS_OF[service["command"][1]]
    environment: dict[str, str] = {k: str(v) for k, v in service["environment"].items()}
    known = {f"LOOKOUT_{field.upper()}" for field in settings_class.model_fields}
    unknown = sorted(set(environment) - known)
    assert not unknown, f"{name} sets variables {settings_class.__name__} does not read: {unknown}"
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    settings = settings_class(_env_file=None)
    for key, value in environment.items():
        field = key.removeprefix("LOOKOUT_").lower()
        assert str(getattr(settings, field)) == value or float(getattr(settings, field)) == float(value)
