"""The state file: written atomically and readable by its owner only, found by lab name or alone."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from lookout.lab.model import LabFileError, Role
from lookout.lab.state import (
    HostState,
    LabState,
    ProcessState,
    find_state,
    read_state,
    state_path,
    write_state,
)


def a_state(name: str, run_dir: Path) -> LabState:
    return LabState(
        lab=name,
        lab_file="lab.yaml",
        run_dir=str(run_dir),
        switch_namespace=f"lkl-{name}--sw",
        namespaces=[f"lkl-{name}--sw", f"lkl-{name}-central"],
        hosts=[
            HostState(
                name="central",
                role=Role.CENTRAL,
                namespace=f"lkl-{name}-central",
                address="169.254.77.1",
                port="p0",
            )
        ],
        processes=[
            ProcessState(name="central-redis", host="central", kind="redis", pid=1, create_time=1.5, log="x")
        ],
        redis_password="secret",
    )


def test_a_state_round_trips_and_only_its_owner_reads_it(tmp_path: Path) -> None:
    path = state_path(tmp_path, "t1")
    write_state(path, a_state("t1", path.parent))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    back = read_state(path)
    assert back.namespaces == ["lkl-t1--sw", "lkl-t1-central"] and back.redis_password == "secret"
    assert back.host("central").port == "p0" and back.record_csv == path.parent / "record.csv"
    assert "secret" not in repr(back)
    with pytest.raises(LabFileError, match="has no host named edge"):
        back.host("edge")


def test_the_lab_is_found_by_name_or_as_the_only_one(tmp_path: Path) -> None:
    with pytest.raises(LabFileError, match="no lab is up"):
        find_state(tmp_path, None)
    write_state(state_path(tmp_path, "t1"), a_state("t1", tmp_path / "t1"))
    assert find_state(tmp_path, None) == state_path(tmp_path, "t1")
    write_state(state_path(tmp_path, "t2"), a_state("t2", tmp_path / "t2"))
    with pytest.raises(LabFileError, match=r"several labs are up \(t1, t2\)"):
        find_state(tmp_path, None)
    assert find_state(tmp_path, "t2") == state_path(tmp_path, "t2")
    (tmp_path / "t2" / "state.json").write_text("{not json")
    with pytest.raises(LabFileError, match="cannot be read"):
        read_state(state_path(tmp_path, "t2"))
