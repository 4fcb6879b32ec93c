"""compose/prometheus.yml passes promtool and scrapes every Lookout service on its metrics port."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

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


RULES = COMPOSE_DIR / "prometheus-rules" / "lookout.yml"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: `make install` installs Debian's prometheus")
    return found


def test_rules_are_valid_and_loaded_by_the_config() -> None:
    checked = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert "./prometheus-rules:/etc/prometheus/rules:ro" in resolved()["services"]["prometheus"]["volumes"]


def fires(name: str, labels: dict[str, str], summary: str, description: str) -> dict[str, Any]:
    """A promtool alert test: at 8 minutes, ``name`` fires once with these labels and annotations."""
    expected = {"exp_labels": labels, "exp_annotations": {"summary": summary, "description": description}}
    return {"eval_time": "8m", "alertname": name, "exp_alerts": [expected]}


def test_alerts_fire_when_they_should_and_not_otherwise(tmp_path: Path) -> None:
    series = {
        # yolox_nano drops a third of its frames for lack of workers; tiny keeps up, then loses its worker.
        'lookout_scale_ratio{model="yolox_nano"}': "1.5x10",
        'lookout_scale_ratio{model="tiny"}': "1x10",
        'lookout_live_workers{model="yolox_nano"}': "2x10",
        'lookout_live_workers{model="tiny"}': "1 1 0 0 0 0 0 0 0 0",
        'lookout_stream_lag{model="yolox_nano"}': "0+20x10",
        'up{job="worker", instance="w1:9101"}': "1 1 1 0 0 0 0 0 0 0",
    }
    alerts = [
        fires(
            "LookoutNeedsMoreWorkers",
            {"severity": "warning", "model": "yolox_nano"},
            "yolox_nano: scale ratio 1.50, add workers",
            "(infer fps + drop fps) / infer fps has stayed above 1.2 for 5 minutes: about that many times "
            "the current workers of yolox_nano would infer every frame.",
        ),
        fires(
            "LookoutNoWorker",
            {"severity": "critical", "model": "tiny"},
            "tiny: frames arrive but no worker serves the model",
            "Start a worker (`lookout worker --model tiny`) or check its logs.",
        ),
        fires(
            "LookoutStreamBacklog",
            {"severity": "warning", "model": "yolox_nano"},
            "yolox_nano: 160 frames wait unread on the stream",
            "Workers fall behind; stale frames will be dropped at their deadline.",
        ),
        fires(
            "LookoutTargetDown",
            {"severity": "critical", "job": "worker", "instance": "w1:9101"},
            "worker at w1:9101 does not answer /metrics",
            "The process is down or its metrics port is unreachable from Prometheus.",
        ),
        {
            "eval_time": "2m",
            "alertname": "LookoutNeedsMoreWorkers",
            "exp_alerts": [],
        },  # not for 5 minutes yet
        {"eval_time": "8m", "alertname": "LookoutSlowResults", "exp_alerts": []},
    ]
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in series.items()],
                "alert_rule_test": alerts,
            }
        ],
    }
    path = tmp_path / "rules.test.yml"
    path.write_text(yaml.safe_dump(tests))
    checked = subprocess.run(
        [promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
