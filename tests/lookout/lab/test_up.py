"""`lab up`'s supervision decisions, on stand-in processes: restart a crash, finish a client that ended,
stop the lab for a configuration error; and the table of where everything is."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookout.lab import plan
from lookout.lab.model import parse_lab
from lookout.lab.state import ProcessState
from lookout.lab.up import LabUp, Running, describe
from tests.lookout.lab.test_model import BASE
from wire.config import LabSettings


class Ended:
    """A child that has exited with ``returncode``."""

    def __init__(self, returncode: int) -> None:
        self.returncode = returncode
        self.pid = 1

    def poll(self) -> int:
        return self.returncode


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LabUp:
    lab = parse_lab(BASE)
    up = LabUp(lab, tmp_path / "lab.yaml", LabSettings(lab_dir=tmp_path))
    started: list[str] = []
    monkeypatch.setattr(up, "start", lambda running: started.append(running.spec.name))
    monkeypatch.setattr(up, "save", lambda: None)
    up.started = started  # type: ignore[attr-defined]
    return up


def spec(kind: str) -> plan.ServiceSpec:
    return plan.ServiceSpec(f"h-{kind}", "infa", kind, ("x",))


def test_a_crash_is_restarted_after_a_pause(runner: LabUp) -> None:
    crashed = Running(spec("worker"), process=Ended(-9))  # type: ignore[arg-type]
    runner.services = [crashed]
    runner.supervise_once()
    assert crashed.pause_until > 0 and not runner.stopping
    crashed.pause_until = 1e-9  # the pause is over
    runner.supervise_once()
    assert runner.started == ["h-worker"] and crashed.restarts == 1  # type: ignore[attr-defined]


def test_a_client_that_ended_by_itself_is_not_restarted(runner: LabUp) -> None:
    done = Running(spec("stream"), process=Ended(0))  # type: ignore[arg-type]
    runner.services = [done]
    runner.supervise_once()
    runner.supervise_once()
    assert done.done and not done.pause_until and not runner.stopping


def test_a_configuration_error_stops_the_lab_with_its_reason(runner: LabUp) -> None:
    runner.services = [Running(spec("signaling"), process=Ended(2))]  # type: ignore[arg-type]
    runner.supervise_once()
    assert runner.stopping and "cannot start with this configuration" in runner.failure
    assert "h-signaling.log" in runner.failure


def test_where_everything_is(runner: LabUp) -> None:
    runner.state.processes = [
        ProcessState(name="infa-worker0", host="infa", kind="worker", pid=42, create_time=1.0, log="l",
                     metrics_url="http://169.254.77.3:9110/metrics"),
    ]  # fmt: skip
    text = describe(runner.state, runner.lab)
    assert (
        "infa     inference  lkl-t1-infa     169.254.77.3  worker pid 42 http://169.254.77.3:9110/metrics"
        in text
    )
    assert "page http://169.254.77.1:8080/" in text
    assert "link central-infa: 5 Mbit/s each way" in text
    assert "ip netns exec lkl-t1-central bash" in text
