"""The state file of a running lab: what it created, so that ``lab down`` can undo it after any crash.

``lab up`` writes it before it creates anything and again after every namespace it creates and every
process it starts (atomically: a new file renamed over the old one), so that a ``kill -9`` at any point
leaves a file that names everything there is to remove. It holds the lab's Redis password and API key,
so it is readable by its owner only. It lives in ``LOOKOUT_LAB_DIR/LAB/state.json``, beside the logs
and the recording, which ``lab down`` leaves for ``lab report``.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from lookout.lab.model import LabFileError, Role

STATE_FILE = "state.json"


class HostState(BaseModel):
    name: str
    role: Role
    namespace: str
    address: str
    port: str


class ProcessState(BaseModel):
    """One process the lab started; ``create_time`` tells it from a later process that got its pid."""

    name: str
    host: str
    kind: str
    pid: int
    create_time: float
    log: str
    metrics_url: str = ""
    out: str = ""
    restarts: int = 0


class LabState(BaseModel):
    lab: str
    lab_file: str
    run_dir: str
    switch_namespace: str
    namespaces: list[str] = Field(default_factory=list)
    """Namespaces this lab created (and only those): ``lab down`` deletes exactly these."""
    hosts: list[HostState] = Field(default_factory=list)
    processes: list[ProcessState] = Field(default_factory=list)
    supervisor_pid: int = 0
    supervisor_create_time: float = 0.0
    signaling_url: str = ""
    redis_url: str = ""
    redis_password: str = Field(default="", repr=False)
    api_key: str = Field(default="", repr=False)
    netem: bool = False
    record_interval_s: float = 2.0
    started_wall: float = 0.0

    def host(self, name: str) -> HostState:
        for host in self.hosts:
            if host.name == name:
                return host
        names = ", ".join(h.name for h in self.hosts)
        raise LabFileError(f"lab {self.lab} has no host named {name} (hosts: {names})")

    @property
    def record_csv(self) -> Path:
        return Path(self.run_dir) / "record.csv"

    @property
    def summary_json(self) -> Path:
        return Path(self.run_dir) / "summary.json"


def run_dir(lab_dir: Path, lab: str) -> Path:
    return lab_dir / lab


def state_path(lab_dir: Path, lab: str) -> Path:
    return run_dir(lab_dir, lab) / STATE_FILE


def write_state(path: Path, state: LabState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(state.model_dump_json(indent=1))
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def read_state(path: Path) -> LabState:
    try:
        return LabState.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise LabFileError(f"no lab state at {path}: is the lab up?") from None
    except (ValidationError, json.JSONDecodeError, OSError) as exc:
        raise LabFileError(f"the lab state {path} cannot be read: {type(exc).__name__}") from None


def find_state(lab_dir: Path, lab: str | None) -> Path:
    """The state file of ``lab``, or of the only lab with one in ``lab_dir`` when no name is given."""
    if lab:
        return state_path(lab_dir, lab)
    found = sorted(lab_dir.glob(f"*/{STATE_FILE}")) if lab_dir.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise LabFileError(f"no lab is up (no {STATE_FILE} under {lab_dir})")
    names = ", ".join(path.parent.name for path in found)
    raise LabFileError(f"several labs are up ({names}): name one with --lab")


def remove_state(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
