"""The settings of ``lookout lab ...``: where a lab keeps its state, logs and recording, and how often it
records. The lab file itself (hosts, links) is ``lookout.lab.model``; these are the knobs around it."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings

from wire.config.base import SETTINGS_CONFIG, Seconds


class LabSettings(BaseSettings):
    """``lookout lab``: an emulated multi-host lab in network namespaces on this machine (root only)."""

    model_config = SETTINGS_CONFIG

    lab_dir: Path = Field(
        default=Path("lab-runs"),
        description="Folder of the labs' state files, logs, recordings and plots (a subfolder per lab).",
    )
    lab_video_dir: Path = Field(
        default=Path("data/video"),
        description="Folder where a lab file's relative video paths are looked up.",
    )
    lab_record_interval_s: Seconds = Field(
        default=2.0, le=60, description="Seconds between two rows of the lab's recording."
    )
    lab_ready_timeout_s: Seconds = Field(
        default=120.0, le=900, description="Seconds `lab up` waits for every service to answer."
    )
    lab_stop_grace_s: Seconds = Field(
        default=10.0, le=120, description="Seconds a stopping lab gives its processes before SIGKILL."
    )
