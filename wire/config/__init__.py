"""Typed configuration, read from ``LOOKOUT_*`` environment variables (and ``.env``).

Every class is here, because compose files and ``.env`` set them across process boundaries. Every
field has a description and its constraints; ``runtime.settings_cli`` turns them into each command's
flags and ``--help``, ``compose/.env.example`` documents each variable and a test keeps it complete.
Command-line flags override the variables.
"""

from __future__ import annotations

from wire.config.base import (
    ENV_PREFIX,
    CommonSettings,
    MetricsSection,
    RegistrySection,
    SampleRateSection,
    SessionSection,
    StreamSettings,
    session_refresh_interval,
)
from wire.config.errors import describe_invalid, known_variables, unknown_variables
from wire.config.lab import LabSettings
from wire.config.services import (
    BridgeSettings,
    HttpSection,
    ServedModelSection,
    SignalingSettings,
    UpSettings,
    WorkerSettings,
)
from wire.config.training import TorchrunSection, TrainRunSettings, TrainSettings

__all__ = [
    "ENV_PREFIX",
    "BridgeSettings",
    "CommonSettings",
    "HttpSection",
    "LabSettings",
    "MetricsSection",
    "RegistrySection",
    "SampleRateSection",
    "ServedModelSection",
    "SessionSection",
    "SignalingSettings",
    "StreamSettings",
    "TorchrunSection",
    "TrainRunSettings",
    "TrainSettings",
    "UpSettings",
    "WorkerSettings",
    "describe_invalid",
    "known_variables",
    "session_refresh_interval",
    "unknown_variables",
]
