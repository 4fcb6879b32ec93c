"""The whole stack under a real Prometheus: every metric the dashboards query exists and moves.

Signaling, a media bridge and a worker start from their compose service definitions (command and
environment from compose/docker-compose.yml, with ports and Redis pointed at this test), a node exporter
and Prometheus (scrape jobs from compose/prometheus.yml, 1 s interval) beside them. Traffic: REST
detections, a bad REST request, frames past their deadline, and a WebRTC session with the Python
client. Then each service's /metrics is read directly, every query of every Grafana dashboard is
evaluated through Prometheus' HTTP API and must return data, and each service's InfluxDB push arrives.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import math
import random
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from lookout.webrtc_client import LiveClient, LoopingVideoTrack
from tests.compose.composefile import COMPOSE_DIR, resolved
from tests.support.images import imread
from tests.support.processes import OUTPUT, LookoutProcess, wait_heartbeat, wait_http, wait_until
from tests.support.redis_server import RedisServer, free_port
from wire.client import FrameClient
from wire.keys import Keys
from wire.messages import DropReason, DropRecord, ResultMessage, now_ms

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

READY_TIMEOUT_S = 90.0  # imports and the model load on a busy 2-core machine
MODEL = "yolox_nano"
DASHBOARDS = sorted((COMPOSE_DIR / "grafana" / "dashboards").glob("*.json"))
# Gauges that may rightly read 0 all along: a worker that keeps up leaves no lag and little pending.
MAY_STAY_ZERO = {"lookout_stream_lag", "lookout_stream_pending"}


class InfluxReceiver:
    """InfluxDB 2's write endpoint, keeping each body (tests/wire/test_influx.py uses a real InfluxDB)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        received = self.lines

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ok = self.path.startswith("/api/v2/write?") and self.headers.get("Authorization") == "Token t"
                if ok:
                    received.extend(body.decode().splitlines())
                self.send_response(204 if ok else 401)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def services(self) -> set[str]:
        return {
            m.group(1) for line in list(self.lines) if (m := re.match(r"lookout_\w+,.*service=(\w+)", line))
        }

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: `make install` installs it (Makefile SYSTEM_PACKAGES)")
    return found


@dataclass
class Stack:
    redis: RedisServer
    signaling_port: int
    bridge_metrics: int
    worker_metrics: int
    node_port: int
    prometheus_port: int
    influx: InfluxReceiver = field(default_factory=InfluxReceiver)
    lookout: dict[str, LookoutProcess] = field(default_factory=dict)
    others: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.signaling_port}"

    @property
    def prometheus(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{p.log()[-3000:]}" for name, p in self.lookout.items())

    def stop(self) -> None:
        for process in self.lookout.values():
            process.stop()
        for other in self.others:
            other.terminate()
            try:
                other.wait(15)
            except subprocess.TimeoutExpired:
                other.kill()
                other.wait()
        self.redis.stop()
        self.influx.stop()


def compose_service(name: str, overrides: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """(lookout arguments, environment) of a compose service, with this test's overrides applied."""
    service = resolved()["services"][name]
    command = service["command"]
    assert command[0] == "lookout", f"{name} does not run lookout"
    environment = {key: str(value) for key, value in service.get("environment", {}).items()}
    return command[1:], {**environment, **overrides}


def prometheus_config(stack: Stack) -> dict[str, Any]:
    """compose/prometheus.yml with each job's discovery replaced by this test's static targets."""
    config: dict[str, Any] = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    targets = {
        "signaling": stack.signaling_port,
        "bridge": stack.bridge_metrics,
        "worker": stack.worker_metrics,
        "node": stack.node_port,
        "prometheus": stack.prometheus_port,
    }
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]  # where compose mounts prometheus-rules/
    config["rule_files"] = [str(COMPOSE_DIR / "prometheus-rules" / "*.yml")]
    for job in config["scrape_configs"]:
        assert job["job_name"] in targets, f"no test target for the scrape job {job['job_name']}"
        for discovery in ("dns_sd_configs", "file_sd_configs", "static_configs"):
            job.pop(discovery, None)
        job["static_configs"] = [{"targets": [f"127.0.0.1:{targets[job['job_name']]}"]}]
    return config


@pytest.fixture(scope="module")
def stack(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_bin, node_bin = binary("prometheus"), binary("prometheus-node-exporter")
    running = Stack(RedisServer(), free_port(), free_port(), free_port(), free_port(), free_port())
    try:
        running.redis.start()
        udp_low = random.randrange(41000, 59000, 100)  # apart from the compose default and other tests
        common = {
            "LOOKOUT_REDIS_URL": running.redis.url,
            "LOOKOUT_MODEL_DIR": str(shared_dir / "models"),
            "LOOKOUT_LOG_LEVEL": "INFO",
            "LOOKOUT_HEARTBEAT_INTERVAL_S": "0.5",
            "LOOKOUT_HEARTBEAT_TTL_S": "5",
            # Every service also pushes to "InfluxDB" (a receiver here), as sites without a scraper do.
            "LOOKOUT_INFLUX_URL": running.influx.url,
            "LOOKOUT_INFLUX_TOKEN": "t",
            "LOOKOUT_INFLUX_INTERVAL_S": "1",
        }
        parts = {
            # On loopback signaling needs no key: the test's REST and Prometheus traffic go without one.
            "signaling": {
                "LOOKOUT_HOST": "127.0.0.1",
                "LOOKOUT_PORT": str(running.signaling_port),
                "LOOKOUT_API_KEY": "",
            },
            "bridge": {
                "LOOKOUT_METRICS_PORT": str(running.bridge_metrics),
                "LOOKOUT_UDP_PORT_MIN": str(udp_low),
                "LOOKOUT_UDP_PORT_MAX": str(udp_low + 99),
                "LOOKOUT_ICE_HOST_ADDRESSES": "127.0.0.1",
            },
            "worker-cpu": {"LOOKOUT_METRICS_PORT": str(running.worker_metrics), "LOOKOUT_THREADS": "1"},
        }
        for name, overrides in parts.items():
            args, env = compose_service(name, {**common, **overrides})
            running.lookout[name] = LookoutProcess(f"observability-{name}", args, env)

        logs = OUTPUT / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        node_log = (logs / "observability-node-exporter.log").open("wb")
        running.others.append(
            subprocess.Popen(
                [
                    node_bin,
                    f"--web.listen-address=127.0.0.1:{running.node_port}",
                    "--collector.disable-defaults",
                    "--collector.cpu",
                    "--collector.meminfo",
                ],
                stdout=node_log,
                stderr=subprocess.STDOUT,
            )
        )
        node_log.close()
        data = tmp_path_factory.mktemp("prometheus")
        config_path = data / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(prometheus_config(running)))
        prometheus_log = (logs / "observability-prometheus.log").open("wb")
        running.others.append(
            subprocess.Popen(
                [
                    prometheus_bin,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={data / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{running.prometheus_port}",
                ],
                stdout=prometheus_log,
                stderr=subprocess.STDOUT,
            )
        )
        prometheus_log.close()

        alive = list(running.lookout.values())
        wait_http(f"{running.prometheus}/-/ready", "Prometheus", READY_TIMEOUT_S)
        wait_http(f"http://127.0.0.1:{running.node_port}/metrics", "the node exporter", READY_TIMEOUT_S)
        wait_http(f"{running.url}/healthz", "signaling", READY_TIMEOUT_S, alive)
        wait_http(
            f"http://127.0.0.1:{running.bridge_metrics}/metrics", "bridge metrics", READY_TIMEOUT_S, alive
        )
        wait_http(
            f"http://127.0.0.1:{running.worker_metrics}/metrics", "worker metrics", READY_TIMEOUT_S, alive
        )
        # The worker serves /metrics before it joins the frame stream: wait for its first heartbeat,
        # or REST traffic sent now is refused with no_worker.
        wait_heartbeat(running.redis.url, Keys().worker_pattern(), "the worker", READY_TIMEOUT_S, alive)
        log.info("stack ready")
        yield running
    finally:
        running.stop()
        log.info("stack stopped")


async def scrape(url: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response,
    ):
        assert response.status == 200
        text = await response.text()
    return {family.name: family for family in text_string_to_metric_families(text)}


async def promql(stack: Stack, query: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{stack.prometheus}/api/v1/query", params={"query": query}) as response:
            body = await response.json()
    assert body["status"] == "success", f"{query}: {body.get('error')}"
    return list(body["data"]["result"])


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    return [float(series["value"][1]) for series in result if math.isfinite(float(series["value"][1]))]


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL) for every query of every dashboard."""
    found = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                found.append((path.name, panel["title"], target["expr"]))
    return found


def concrete(expr: str) -> str:
    # What Grafana substitutes: every model, and a rate window that covers this whole test.
    return expr.replace("$model", ".*").replace("$__rate_interval", "5m")


def samples_of(family: Any, **labels: str) -> list[float]:
    return [s.value for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())]


async def test_traffic_moves_every_metric_the_dashboards_query(
    stack: Stack, images_dir: Path, video_path: Path
) -> None:
    jpeg = (images_dir / "dog.jpg").read_bytes()
    height, width = imread(images_dir / "dog.jpg").shape[:2]
    timeout = aiohttp.ClientTimeout(total=60)
    try:
        # REST: detections, and one body that is not an image.
        log.info("traffic: REST")
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for _ in range(6):
                async with http.post(
                    f"{stack.url}/api/v1/detect", data=jpeg, headers={"Content-Type": "image/jpeg"}
                ) as response:
                    assert response.status == 200, await response.text()
            async with http.post(
                f"{stack.url}/api/v1/detect", data=b"not an image", headers={"Content-Type": "image/jpeg"}
            ) as response:
                assert 400 <= response.status < 500

        # Frames already past their deadline: the worker drops and counts them.
        log.info("traffic: late frames")
        redis = Redis.from_url(stack.redis.url)
        try:
            async with FrameClient(redis) as frames:
                for _ in range(4):
                    outcome = await frames.detect(
                        jpeg,
                        model=MODEL,
                        width=width,
                        height=height,
                        timeout_s=60,
                        deadline_ms=now_ms() - 1000,
                    )
                    assert isinstance(outcome, DropRecord) and outcome.reason == DropReason.DEADLINE, outcome
                result = await frames.detect(jpeg, model=MODEL, width=width, height=height, timeout_s=60)
                assert isinstance(result, ResultMessage)
        finally:
            await redis.aclose()

        # WebRTC: one live session through signaling and the bridge, kept open while Prometheus is read.
        log.info("traffic: WebRTC")
        async with LiveClient(stack.url, ice_host_addresses=["127.0.0.1"], timeout_s=60) as client:
            await client.join(model=MODEL, sample_fps=5)
            await client.offer(LoopingVideoTrack(video_path))
            for _ in range(3):
                await client.wait_for("detections", timeout_s=60)

            # Each service's own /metrics.
            log.info("scraping each service")
            signaling: dict[str, Any] = {}

            async def monitor_sees_the_worker_and_bridge() -> bool:
                # The monitor refreshes every 2 s: its gauges may lag the traffic by that much.
                signaling.update(await scrape(f"{stack.url}/metrics"))
                workers = samples_of(signaling["lookout_live_workers"], model=MODEL)
                return workers == [1.0] and samples_of(signaling["lookout_live_bridges"]) == [1.0]

            await wait_until(
                monitor_sees_the_worker_and_bridge, 30, what="the monitor's worker and bridge gauges"
            )
            bridge = await scrape(f"http://127.0.0.1:{stack.bridge_metrics}/metrics")
            worker = await scrape(f"http://127.0.0.1:{stack.worker_metrics}/metrics")
            assert sum(samples_of(signaling["lookout_rest_requests"], status="200")) >= 6
            assert sum(samples_of(signaling["lookout_frames_in"], site="rest", model=MODEL)) >= 6
            assert sum(samples_of(signaling["lookout_live_sessions"], site="signaling")) >= 1
            assert sum(samples_of(bridge["lookout_frames_in"], site="bridge", model=MODEL)) >= 3
            assert sum(samples_of(bridge["lookout_live_sessions"], site="bridge")) >= 1
            assert (
                sum(samples_of(worker["lookout_frames_inferred"], model=MODEL)) >= 7
            )  # REST and FrameClient
            assert sum(samples_of(worker["lookout_frames_dropped"], reason="deadline", site="worker")) >= 4
            for name in ("lookout_inference_seconds", "lookout_queue_wait_seconds", "lookout_batch_size"):
                assert sum(samples_of(worker[name], model=MODEL)) > 0, name

            # Prometheus has scraped all of it (the scale ratio shows the deadline drops).
            log.info("waiting for Prometheus")
            must_show = [
                'up{job=~"signaling|bridge|worker|node"} == 1',
                f'lookout_scale_ratio{{model="{MODEL}"}} > 1',
                'lookout_live_sessions{site="bridge"} > 0',
                'lookout_e2e_latency_seconds_count{path="webrtc"} > 0',
                'lookout_e2e_latency_seconds_count{path="rest"} > 0',
            ]

            counts: list[int] = []

            async def scraped() -> bool:
                counts[:] = [len(await promql(stack, q)) for q in must_show]
                return counts[0] == 4 and all(counts[1:])

            with contextlib.suppress(AssertionError):
                await wait_until(scraped, 60, interval=0.5, what="Prometheus")
            assert counts[0] == 4 and all(counts[1:]), f"Prometheus lacks some of {must_show}: {counts}"

            log.info("evaluating the dashboards")
            # Every dashboard query parses and returns data, once Prometheus holds two samples of each
            # series (rate needs two; fresh series and a Prometheus that just started have fewer).
            empty: list[str] = []

            async def every_query_has_data() -> bool:
                empty.clear()
                for dashboard, title, expr in dashboard_queries():
                    result = await promql(stack, concrete(expr))
                    if not finite_values(result):
                        empty.append(f"{dashboard} / {title}: {expr} -> {result}")
                return not empty

            with contextlib.suppress(AssertionError):
                await wait_until(every_query_has_data, 60, interval=1, what="data for every dashboard query")
            assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

            # And every metric they use moved. Every process started in this test, so a counter above
            # zero counted this test's traffic (increase() would miss a series born at its final value).
            names = sorted(
                {n for _, _, expr in dashboard_queries() for n in re.findall(r"\b(?:lookout|node)_\w+", expr)}
            )
            still = []
            for name in names:
                if name in MAY_STAY_ZERO:
                    moved = await promql(stack, f"count({name})")
                else:
                    moved = await promql(stack, f"max(max_over_time({name}[5m])) > 0")
                if not moved:
                    still.append(name)
            assert not still, f"metrics the dashboards query that did not move: {still}"
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{stack.prometheus}/api/v1/rules") as response,
            ):
                groups = (await response.json())["data"]["groups"]
            assert [g["name"] for g in groups] == ["lookout"] and all(
                r["health"] != "err" for r in groups[0]["rules"]
            )
            models = await label_values(stack, "model", "lookout_frames_in_total")
            assert MODEL in models  # the dashboards' $model variable
            await client.bye()

        async def every_service_pushed() -> bool:
            return stack.influx.services() >= {"signaling", "bridge", "worker"}

        with contextlib.suppress(AssertionError):
            await wait_until(every_service_pushed, 30, what="InfluxDB pushes")
        assert stack.influx.services() >= {"signaling", "bridge", "worker"}, stack.influx.services()
    except BaseException:
        print(stack.logs())
        raise


async def label_values(stack: Stack, label: str, metric: str) -> list[str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{stack.prometheus}/api/v1/label/{label}/values", params={"match[]": metric}
        ) as r:
            body = await r.json()
    return list(body["data"])
