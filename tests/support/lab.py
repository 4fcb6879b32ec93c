"""A `lookout lab up` run for tests: started as a real process, its state read back, always taken down."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from lookout.lab.state import LabState, read_state, state_path
from tests.support.processes import OUTPUT, REPO

UP_TIMEOUT_S = 150.0


def root_veths() -> set[str]:
    """The veths of the machine's own network namespace (a lab must never add one there)."""
    listed = subprocess.run(
        ["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True
    ).stdout
    return {line.split(":")[1].strip() for line in listed.splitlines() if ":" in line}


class LabRun:
    def __init__(self, name: str, lab_file: Path, lab_dir: Path, shared_dir: Path) -> None:
        self.name = name
        self.lab_file = lab_file
        self.lab_dir = lab_dir
        self.env = {
            "LOOKOUT_LAB_DIR": str(lab_dir),
            "LOOKOUT_LAB_VIDEO_DIR": str(shared_dir / "data" / "video"),
            "LOOKOUT_MODEL_DIR": str(shared_dir / "models"),
            "PYTHONUNBUFFERED": "1",
        }
        self.log_path = OUTPUT / "logs" / f"lab-up-{name}.log"
        self.veths_before = root_veths()
        self.up_s = 0.0
        self.up: subprocess.Popen[bytes]

    def start(self) -> LabRun:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.up = subprocess.Popen(
                [sys.executable, "-m", "lookout", "lab", "up", str(self.lab_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        while "is up (" not in self.up_output():
            if self.up.poll() is not None:
                raise AssertionError(f"lab up exited with {self.up.returncode}:\n{self.up_output()[-4000:]}")
            if time.monotonic() - started > UP_TIMEOUT_S:
                raise AssertionError(f"lab not up after {UP_TIMEOUT_S:.0f} s:\n{self.up_output()[-4000:]}")
            time.sleep(0.2)
        self.up_s = round(time.monotonic() - started, 1)
        print(self.up_output())
        return self

    def up_output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def state(self) -> LabState:
        return read_state(state_path(self.lab_dir, self.name))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`lookout lab ARGS... --lab NAME`, to its end."""
        return subprocess.run(
            [sys.executable, "-m", "lookout", "lab", *args, "--lab", self.name],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, **self.env},
            timeout=120,
        )

    def cleanup(self) -> None:
        """Whatever the test did: `lab down` if the lab is still there, and `lab up` gone."""
        if state_path(self.lab_dir, self.name).exists():
            self.cli("down")
        if self.up.poll() is None:
            self.up.kill()
            self.up.wait(10)
