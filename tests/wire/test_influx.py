"""The InfluxDB pusher: its point layout, a real InfluxDB receiving it, and InfluxDB being down.

The real receiver is Debian's InfluxDB 1.x (``influxd``), which parses line protocol strictly. It has
no InfluxDB 2 ``/api/v2/write``, so a small shim in the test translates that endpoint to ``/write``
and checks the token, org and bucket the client sends.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tests.support.processes import wait_until
from tests.support.redis_server import free_port
from wire.config import CommonSettings
from wire.influx import InfluxPush, registry_points, start_influx_push

TOKEN = "test-token"
ORG = "lookout-org"
BUCKET = "lookout_test"


def sample_registry() -> tuple[CollectorRegistry, Counter, Gauge, Histogram]:
    registry = CollectorRegistry()
    frames = Counter("lookout_frames_inferred", "test", ["model", "worker"], registry=registry)
    ratio = Gauge("lookout_scale_ratio", "test", ["model"], registry=registry)
    latency = Histogram(
        "lookout_inference_seconds", "test", ["model"], buckets=(0.01, 0.1), registry=registry
    )
    Gauge("python_ignored", "not a lookout metric", registry=registry).set(1)
    frames.labels("yolox_nano", "w 1").inc(3)
    ratio.labels("yolox_nano").set(1.5)
    ratio.labels("idle").set(float("inf"))
    latency.labels("yolox_nano").observe(0.05)
    return registry, frames, ratio, latency


def test_points_have_one_field_per_sample_and_labels_as_tags() -> None:
    registry, *_ = sample_registry()
    points = registry_points(registry, {"host": "h1", "service": ""}, time_ns=1_700_000_000_000_000_000)
    lines = sorted(p.to_line_protocol() for p in points)  # type: ignore[no-untyped-call]  # Point is unannotated
    assert lines == [
        "lookout_frames_inferred,host=h1,model=yolox_nano,worker=w\\ 1 total=3 1700000000000000000",
        "lookout_inference_seconds,host=h1,model=yolox_nano "
        "count=1,le_+Inf=1,le_0.01=0,le_0.1=1,sum=0.05 1700000000000000000",
        # the infinite ratio of "idle" has no line: line protocol cannot carry it
        "lookout_scale_ratio,host=h1,model=yolox_nano value=1.5 1700000000000000000",
    ]


def test_disabled_without_url_starts_nothing() -> None:
    push = start_influx_push(CommonSettings(influx_url=""), CollectorRegistry())
    assert not push.enabled
    push.stop()


# --- a real InfluxDB ----------------------------------------------------------------------------


@dataclass
class Influx:
    url: str
    process: subprocess.Popen[bytes]

    async def query(self, q: str) -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.url}/query", params={"db": BUCKET, "q": q}) as response:
                body = await response.json()
        return list(body["results"][0].get("series", []))


@pytest.fixture(scope="module")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influx]:
    binary = shutil.which("influxd")
    if binary is None:
        pytest.fail("influxd is missing: `make install` installs Debian's influxdb package")
    root = tmp_path_factory.mktemp("influxdb")
    port = free_port()
    env = {
        **os.environ,
        "INFLUXDB_META_DIR": str(root / "meta"),
        "INFLUXDB_DATA_DIR": str(root / "data"),
        "INFLUXDB_DATA_WAL_DIR": str(root / "wal"),
        "INFLUXDB_HTTP_BIND_ADDRESS": f"127.0.0.1:{port}",
        "INFLUXDB_BIND_ADDRESS": f"127.0.0.1:{free_port()}",
        "INFLUXDB_REPORTING_DISABLED": "true",
        "INFLUXDB_MONITOR_STORE_ENABLED": "false",
        "INFLUXDB_DATA_QUERY_LOG_ENABLED": "false",
        "INFLUXDB_HTTP_LOG_ENABLED": "false",
    }
    log = (root / "influxd.log").open("wb")
    process = subprocess.Popen([binary, "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(
                        f"influxd did not start: {Path(log.name).read_text()[-2000:]}"
                    ) from None
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):  # the port opens a moment before the query engine answers
            try:
                subprocess_query(url, f"CREATE DATABASE {BUCKET}")
                break
            except OSError:
                time.sleep(0.1)
        yield Influx(url, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def subprocess_query(url: str, q: str) -> None:
    import urllib.parse
    import urllib.request

    data = urllib.parse.urlencode({"q": q}).encode()
    with urllib.request.urlopen(f"{url}/query", data=data, timeout=5) as response:
        assert response.status == 200


async def v2_shim(influx: Influx, port: int, seen: list[str]) -> web.AppRunner:
    """Serve InfluxDB 2's write endpoint on ``port`` and forward to InfluxDB 1.x's ``/write``."""

    async def write(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Token {TOKEN}":
            return web.json_response({"code": "unauthorized", "message": "bad token"}, status=401)
        if request.query.get("org") != ORG or request.query.get("bucket") != BUCKET:
            return web.json_response({"code": "not found", "message": "no such org/bucket"}, status=404)
        body = await request.read()
        seen.append(body.decode())
        params = {"db": BUCKET, "precision": request.query.get("precision", "ns")}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{influx.url}/write", params=params, data=body) as response:
                text = await response.text()
                return web.Response(status=response.status, text=text)

    app = web.Application()
    app.router.add_post("/api/v2/write", write)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@pytest.fixture
async def pusher_cleanup() -> AsyncIterator[list[InfluxPush]]:
    started: list[InfluxPush] = []
    yield started
    for push in started:
        await push.aclose()


async def test_points_reach_a_real_influxdb_after_it_comes_up(
    influxd: Influx, pusher_cleanup: list[InfluxPush]
) -> None:
    registry, frames, _ratio, _latency = sample_registry()
    port = free_port()
    settings = CommonSettings(
        influx_url=f"http://127.0.0.1:{port}",
        influx_token=TOKEN,
        influx_org=ORG,
        influx_bucket=BUCKET,
        influx_interval_s=0.2,
    )
    push = start_influx_push(settings, registry, service="worker", timeout_s=1.0)
    pusher_cleanup.append(push)
    # Nothing listens yet: points wait in the buffer instead of being lost.
    await wait_until(lambda: _true(push.failures >= 2), 30, what="failed pushes while InfluxDB is down")
    assert push.written == 0 and push.buffered > 0

    seen: list[str] = []
    runner = await v2_shim(influxd, port, seen)
    try:
        await wait_until(lambda: _true(push.written > 0 and push.buffered == 0), 30, what="buffer flushed")
        frames.labels("yolox_nano", "w 1").inc(4)

        async def latest_total_is_7() -> bool:
            series = await influxd.query(
                'SELECT last("total") FROM "lookout_frames_inferred" WHERE "service" = \'worker\''
            )
            return bool(series) and series[0]["values"][0][1] == 7

        await wait_until(latest_total_is_7, 30, what="the counter's new value in InfluxDB")
        histogram = await influxd.query('SELECT "count", "sum", "le_0.1" FROM "lookout_inference_seconds"')
        assert histogram[0]["values"][-1][1:] == [1, 0.05, 1]
        tags = await influxd.query('SHOW TAG VALUES FROM "lookout_frames_inferred" WITH KEY = "worker"')
        assert tags[0]["values"] == [["worker", "w 1"]]
        assert not await influxd.query('SELECT * FROM "python_ignored"')
        assert all(line.startswith("lookout_") for body in seen for line in body.splitlines())
    finally:
        await push.aclose()
        await runner.cleanup()


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize("down", ["refused", "never_answers"])
async def test_never_blocks_or_crashes_while_influxdb_is_down(
    down: str, pusher_cleanup: list[InfluxPush]
) -> None:
    registry, frames, *_ = sample_registry()
    listener: socket.socket | None = None
    if down == "refused":
        url = f"http://127.0.0.1:{free_port()}"
    else:  # the kernel accepts the connection; nobody ever reads or answers
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        settings = CommonSettings(influx_url=url, influx_token=TOKEN, influx_interval_s=0.1)
        # 3 points per push and room for 5: the buffer overflows and must drop the oldest.
        push = start_influx_push(settings, registry, service="bridge", buffer_points=5, timeout_s=0.5)
        pusher_cleanup.append(push)
        ticks = 0

        async def loop_ticks_and_push_fails() -> bool:
            nonlocal ticks
            ticks += 1
            frames.labels("yolox_nano", "w 1").inc()  # the service keeps moving its metrics meanwhile
            return push.failures >= 3 and push.dropped > 0

        await wait_until(
            loop_ticks_and_push_fails, 60, interval=0.05, what="failed pushes and dropped points"
        )
        assert push.written == 0
        assert push.buffered <= 5
        assert ticks >= 2  # the event loop kept running while the pusher waited on the network
        await push.aclose()
        assert push._thread is None
    finally:
        if listener is not None:
            listener.close()
