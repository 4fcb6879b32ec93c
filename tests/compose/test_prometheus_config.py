"""compose/prometheus.yml passes promtool and scrapes every Lookout service on its metrics port."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.compose.composefile import COMPOSE_DIR, resolved


def test_promtool_accepts_the_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make install` installs Debian's prometheus")
    checked = subprocess.run(
        [promtool, "check", "config", str(COMPOSE_DIR / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_metrics_port_is_scraped() -> None:
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    scraped = {
        (name, sd["port"])
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    services = resolved()["services"]
    assert ("signaling", int(services["signaling"]["environment"]["LOOKOUT_PORT"])) in scraped
    assert ("bridge", int(services["bridge"]["environment"]["LOOKOUT_METRICS_PORT"])) in scraped
    for worker in ("worker-cpu", "worker-gpu"):
        assert (worker, int(services[worker]["environment"]["LOOKOUT_METRICS_PORT"])) in scraped
    assert ("node-exporter", 9100) in scraped
    assert all(name in services for name, _ in scraped)


def test_target_examples_are_valid_file_sd_and_outside_the_globs() -> None:
    for example in (COMPOSE_DIR / "prometheus-targets").glob("*.example"):
        groups = yaml.safe_load(example.read_text())
        assert isinstance(groups, list) and all("targets" in group for group in groups)
        assert not example.name.endswith(".yml")  # workers*.yml would otherwise scrape the examples
