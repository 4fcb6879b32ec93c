"""The lab file: the shipped example is valid, and each rule refuses what it should, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookout.lab.model import LabFileError, Role, load_lab, parse_lab
from tests.support.processes import REPO

EXAMPLE = REPO / "deploy" / "lab" / "four-hosts.yaml"

BASE = """
name: t1
hosts:
  - {name: central, role: central}
  - {name: edge, role: bridge}
  - {name: infa, role: inference, workers: 2}
  - name: cams
    role: clients
    streams: [{video: vtest.mp4, fps: 10, count: 2}]
links:
  - {between: [central, infa], rate_mbit: 5}
"""


def test_the_example_lab_file_is_valid() -> None:
    lab = load_lab(EXAMPLE)
    assert lab.central.name == "central"
    assert [h.role for h in lab.hosts].count(Role.INFERENCE) == 2
    assert all(h.worker_count == 1 for h in lab.hosts if h.role is Role.INFERENCE)
    assert lab.netem_links and lab.without_netem == "warn"


def test_a_valid_lab_has_its_defaults() -> None:
    lab = parse_lab(BASE)
    assert str(lab.subnet) == "169.254.77.0/24"
    assert lab.without_netem == "refuse"
    assert lab.host("infa").worker_count == 2
    assert lab.host("central").worker_count == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("- {name: edge, role: bridge}", "- {name: infa, role: bridge}"), "host names must be unique: infa"),
        (("role: central}", "role: bridge}"), "exactly one host must be central (found 0)"),
        (
            ("{name: edge, role: bridge}", "{name: edge, role: central}"),
            "exactly one host must be central (found 2)",
        ),
        (
            ("between: [central, infa]", "between: [central, nowhere]"),
            "link central-nowhere: no host named nowhere",
        ),
        (("between: [central, infa]", "between: [infa, infa]"), "a link joins two different hosts"),
        (("rate_mbit: 5", "rate_mbit: 0"), "links[0].rate_mbit: Input should be greater than 0"),
        (("rate_mbit: 5", "rate_mbit: 5, loss_percent: 101"), "links[0].loss_percent"),
        (("role: bridge}", "role: bridge, workers: 1}"), "host edge: only an inference host has workers"),
        (("workers: 2", "workers: 99"), "hosts[infa].workers: Input should be less than or equal to 16"),
        (("fps: 10", "fps: 0"), "fps: Input should be greater than 0"),
        (("name: t1", "name: T-1"), "name: String should match pattern"),
        (("name: t1", "name: t1\nsubnet: 198.51.100.0/24"), "is not link-local"),
        (("name: t1", "name: t1\nsubnet: 169.254.0.0/24"), "reserved by RFC 3927"),
        (("name: t1", "name: t1\nsubnet: 169.254.77.0/30"), "too few addresses for 4 hosts"),
        (("name: t1", "name: t1\nenv: {REDIS_URL: x}"), "env: REDIS_URL is not a LOOKOUT_* setting"),
        (("name: t1", "name: t1\nsurprise: 1"), "surprise: Extra inputs are not permitted"),
        (("  - {name: edge, role: bridge}\n", ""), "clients need a bridge host"),
    ],
)
def test_a_lab_that_cannot_exist_is_refused_in_one_line(change: tuple[str, str], message: str) -> None:
    assert change[0] in BASE
    with pytest.raises(LabFileError) as caught:
        parse_lab(BASE.replace(*change), "lab.yaml")
    line = str(caught.value)
    assert "\n" not in line and line.startswith("lab.yaml: ")
    assert message in line


def test_a_link_given_twice_is_refused() -> None:
    text = BASE + "  - {between: [infa, central], rate_mbit: 1}\n"
    with pytest.raises(LabFileError, match="link infa-central is given twice"):
        parse_lab(text)


def test_not_yaml_and_not_a_mapping_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LabFileError, match="not valid YAML"):
        parse_lab("hosts: [")
    with pytest.raises(LabFileError, match="expected a mapping"):
        parse_lab("- 1")
    with pytest.raises(LabFileError, match="cannot read lab file"):
        load_lab(tmp_path / "missing.yaml")
