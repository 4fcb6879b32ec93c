"""Grafana provisioning: datasources, the dashboard provider, and dashboards that fit them.

The dashboards' PromQL is evaluated against a real Prometheus in tests/test_observability.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.compose.composefile import COMPOSE_DIR, resolved

GRAFANA = COMPOSE_DIR / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def datasources() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in (GRAFANA / "provisioning" / "datasources").glob("*.yml"):
        config = yaml.safe_load(path.read_text())
        assert config["apiVersion"] == 1
        for source in config["datasources"]:
            found[source["uid"]] = source
    return found


def panels_of(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def test_datasources_for_prometheus_and_influxdb_reach_the_compose_services() -> None:
    sources = datasources()
    kinds = {source["type"]: source for source in sources.values()}
    assert set(kinds) == {"prometheus", "influxdb"}
    assert kinds["prometheus"]["url"] == "http://prometheus:9090"
    assert kinds["influxdb"]["url"] == "http://influxdb:8086"
    assert kinds["influxdb"]["jsonData"]["version"] == "Flux"
    # The InfluxDB datasource's ${VARS} must reach the Grafana container.
    grafana_env = resolved()["services"]["grafana"]["environment"]
    text = (GRAFANA / "provisioning" / "datasources").joinpath("lookout.yml").read_text()
    for name in re.findall(r"\$\{(\w+)\}", text):
        assert name in grafana_env, f"the datasource reads ${{{name}}}, which Grafana's environment lacks"
    assert sum(bool(source.get("isDefault")) for source in sources.values()) == 1


def test_dashboard_provider_path_is_where_compose_mounts_the_dashboards() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "lookout.yml").read_text())
    (entry,) = provider["providers"]
    mounts = resolved()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{entry['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_dashboards_are_valid_and_use_the_provisioned_datasources() -> None:
    assert DASHBOARDS
    uids = set(datasources())
    seen_uids: set[str] = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] not in seen_uids, f"{path.name}: uid used twice"
        seen_uids.add(dashboard["uid"])
        assert dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
        assert "id" not in dashboard or dashboard["id"] is None  # provisioning assigns ids
        panel_ids = [p["id"] for p in panels_of(dashboard)]
        assert len(panel_ids) == len(set(panel_ids)), f"{path.name}: duplicate panel ids"
        for panel in panels_of(dashboard):
            assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
            if panel["type"] == "row":
                continue
            assert panel["title"] and panel.get("description"), (
                f"{path.name}: panel without title/description"
            )
            assert panel["datasource"]["uid"] in uids
            assert panel["targets"], f"{panel['title']}: no query"
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids))
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in uids
                assert target["expr"].strip()
        for variable in dashboard.get("templating", {}).get("list", []):
            assert variable["datasource"]["uid"] in uids


def test_panels_do_not_overlap() -> None:
    for path in DASHBOARDS:
        taken: set[tuple[int, int]] = set()
        for panel in panels_of(json.loads(path.read_text())):
            grid = panel["gridPos"]
            cells = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not cells & taken, f"{path.name}: {panel['title']} overlaps another panel"
            taken |= cells


def test_the_overview_shows_what_operators_need() -> None:
    text = Path(GRAFANA / "dashboards" / "lookout.json").read_text()
    for metric in (
        "lookout_frames_inferred_total",
        "lookout_frames_dropped_total",
        "lookout_e2e_latency_seconds_bucket",
        "lookout_stream_lag",
        "lookout_scale_ratio",
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
    ):
        assert metric in text, metric
    assert "by (worker)" in text  # per-worker FPS
