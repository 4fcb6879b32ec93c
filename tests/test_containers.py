"""The Compose deployment for real: the CPU image built on a locally made base, the ``single_host_cpu``
profile's services (redis, signaling, bridge, worker-cpu) run as containers from compose/docker-compose.yml
with the host-network override, a REST detection, a WebRTC session from headless Chromium, and SIGTERM.

No registry is reachable here, so the base image is made with debootstrap and the compose file's Redis is
Debian's redis-server on that base (tests/support/docker_engine.py); Compose v2 is not installable, so
tests/support/compose_runner.py starts each service as Compose would. Everything runs on the host
network and binds 127.0.0.1 (free ports), never a Docker network. Skipped only where no Docker engine
answers and none can be started (no docker.io, not root).

Cold (no image cached) this builds the base (~1 min) and the image (~1.5 min); warm, the layer cache
makes both instant and the test is the containers' start, the two detections and the stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from tests.compose.composefile import COMPOSE_FILE, HOST_NETWORK_FILE, REDIS_TLS_FILE
from tests.support.browser import launch_chromium, open_live_page, wait_for_results, write_y4m
from tests.support.certificates import make_tls_files
from tests.support.compose_runner import ComposeRunner
from tests.support.docker_engine import (
    BASE_IMAGE,
    REDIS_IMAGE,
    DockerEngine,
    EngineUnavailableError,
    build_image,
    ensure_base_image,
    ensure_redis_image,
    image_size,
)
from tests.support.redis_server import free_port

# Cold, the first test's set-up makes the base image and builds the CPU image (about 3 min here): more
# than the suite's 300 s default timeout allows on a slower machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[1]
CPU_IMAGE = "lookout-test:cpu"
GPU_IMAGE = "lookout-test:gpu"
PROJECT = "lookout-test"
SERVICES = {"redis", "signaling", "bridge", "worker-cpu"}
START_TIMEOUT_S = 240.0  # healthchecks every 5-10 s, model load and imports on 2 busy cores


@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    try:
        running = DockerEngine.start()
    except EngineUnavailableError as exc:
        pytest.skip(f"no Docker engine: {exc}")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def timings(output_dir: Path) -> Iterator[dict[str, float]]:
    """Seconds each step took, written to test-output/containers-timings.json for the CI note."""
    found: dict[str, float] = {}
    yield found
    (output_dir / "containers-timings.json").write_text(json.dumps(found, indent=2) + "\n")


@pytest.fixture(scope="module")
def cpu_image(engine: DockerEngine, timings: dict[str, float]) -> str:
    timings["base_image_s"] = ensure_base_image(engine)
    timings["redis_image_s"] = ensure_redis_image(engine)
    timings["cpu_image_build_s"] = build_image(
        engine, "compose/Dockerfile", CPU_IMAGE, REPO, {"PYTHON_IMAGE": BASE_IMAGE}, timeout=1800
    )
    timings["cpu_image_mb"] = image_size(engine, CPU_IMAGE) / 1e6
    return CPU_IMAGE


def free_udp_range(size: int = 20) -> tuple[int, int]:
    """A run of ``size`` UDP ports free on 127.0.0.1 right now (the bridge's media ports)."""
    for _ in range(200):
        low = secrets.randbelow(20000) + 30000
        sockets = []
        try:
            for port in range(low, low + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return low, low + size - 1
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free UDP port range")


class Stack:
    def __init__(self, runner: ComposeRunner, env: dict[str, str], healthy_after_s: float) -> None:
        self.runner = runner
        self.env = env
        self.url = f"http://127.0.0.1:{env['SIGNALING_PORT']}"
        self.healthy_after_s = healthy_after_s


def stack_env(cpu_image: str, shared_dir: Path) -> dict[str, str]:
    """The compose variables of one run: fresh secrets, the local images, free ports on 127.0.0.1."""
    low, high = free_udp_range()
    return {
        "REDIS_PASSWORD": secrets.token_hex(16),
        "LOOKOUT_API_KEY": secrets.token_hex(16),
        "LOOKOUT_CPU_IMAGE": cpu_image,
        "REDIS_IMAGE": REDIS_IMAGE,
        "MODELS_DIR": str(shared_dir / "models"),
        "REDIS_BIND": "127.0.0.1",
        "REDIS_PORT": str(free_port()),
        "SIGNALING_HOST": "127.0.0.1",
        "SIGNALING_PORT": str(free_port()),
        "BRIDGE_METRICS_PORT": str(free_port()),
        "WORKER_METRICS_PORT": str(free_port()),
        "LOOKOUT_UDP_PORT_MIN": str(low),
        "LOOKOUT_UDP_PORT_MAX": str(high),
    }


@contextlib.contextmanager
def running_stack(
    engine: DockerEngine,
    env: dict[str, str],
    folder: Path,
    overrides: list[Path] | None = None,
    project: str = PROJECT,
) -> Iterator[Stack]:
    """The single_host_cpu services from the compose file, host network, healthy; removed at the end."""
    # What only this test needs: the bridge offers its loopback address to the local Chromium.
    test_override = folder / "docker-compose.test.yml"
    test_override.write_text(
        "services:\n  bridge:\n    environment:\n      LOOKOUT_ICE_HOST_ADDRESSES: 127.0.0.1\n"
    )
    # The monitoring images cannot be pulled here (no registry): only the Lookout services and Redis run.
    runner = ComposeRunner(
        engine,
        [COMPOSE_FILE, HOST_NETWORK_FILE, *(overrides or []), test_override],
        env,
        "single_host_cpu",
        project=project,
        only=SERVICES,
    )
    assert runner.profile_services == SERVICES | {"prometheus", "influxdb", "grafana", "node-exporter"}
    runner.down()  # what an interrupted earlier run left
    started = time.monotonic()
    try:
        runner.up(timeout_s=START_TIMEOUT_S)
        for name in SERVICES:
            runner.wait_for(name, "service_healthy", START_TIMEOUT_S)
        yield Stack(runner, env, time.monotonic() - started)
    finally:
        for _, container in runner.started:
            log = REPO / "test-output" / "logs" / f"{container}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(runner.logs(container))
        runner.down()


@pytest.fixture(scope="module")
def stack(
    engine: DockerEngine,
    cpu_image: str,
    shared_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    timings: dict[str, float],
) -> Iterator[Stack]:
    env = stack_env(cpu_image, shared_dir)
    with running_stack(engine, env, tmp_path_factory.mktemp("compose")) as running:
        timings["services_healthy_s"] = running.healthy_after_s
        yield running


def detect(stack: Stack, image: bytes) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{stack.url}/api/v1/detect",
        data=image,
        headers={"Content-Type": "image/jpeg", "X-API-Key": stack.env["LOOKOUT_API_KEY"]},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.load(response)
    return answer


def test_the_image_runs_as_lookout_and_carries_no_secret(engine: DockerEngine, cpu_image: str) -> None:
    config = json.loads(engine.docker("image", "inspect", cpu_image).stdout)[0]["Config"]
    assert config["User"] == "lookout"
    assert config["Cmd"] == ["lookout", "--help"]
    assert not [
        e for e in config["Env"] if any(word in e for word in ("PASSWORD", "API_KEY", "TOKEN", "REDIS_URL"))
    ]
    found = engine.docker(
        "run",
        "--rm",
        "--network",
        "host",
        "--entrypoint",
        "find",
        cpu_image,
        "/",
        "-xdev",
        "(",
        "-name",
        ".env",
        "-o",
        "-name",
        "*.key",
        "-o",
        "-name",
        "id_rsa*",
        "-o",
        "-name",
        ".git",
        "-o",
        "-name",
        "conftest.py",
        ")",
        "-print",
        check=False,
    ).stdout.split()
    assert not [path for path in found if "site-packages" not in path], found


def test_containers_run_as_the_compose_file_says(stack: Stack, engine: DockerEngine) -> None:
    runner = stack.runner
    assert [name for name, _ in runner.started].index("redis") == 0  # depends_on: redis healthy first
    for name, container in runner.started:
        inspected = json.loads(engine.docker("inspect", container).stdout)[0]
        assert inspected["HostConfig"]["NetworkMode"] == "host"
        assert inspected["Config"]["Healthcheck"]["Test"][0] == "CMD-SHELL", container
        if name == "redis":
            continue
        assert inspected["Config"]["User"] == "lookout"
        assert engine.docker("exec", container, "id", "-u").stdout.strip() == "10001"
        assert inspected["Config"]["StopTimeout"] == 20  # stop_grace_period: 20s
        models = next(m for m in inspected["Mounts"] if m["Destination"] == "/models")
        assert models["RW"] is False
        touch = engine.docker("exec", container, "touch", "/models/written-by-a-container", check=False)
        assert touch.returncode != 0 and "Read-only file system" in touch.stderr
        # Nothing of the checkout but the packages and the page: no .env, tests, .git or venv.
        found = engine.docker(
            "exec",
            container,
            "find",
            "/app",
            "/opt/lookout",
            "/build",
            "-name",
            ".env",
            "-o",
            "-name",
            "tests",
            "-o",
            "-name",
            ".git",
            check=False,
        ).stdout.split()
        assert not [path for path in found if "site-packages" not in path], found
        # The password reaches every service in its Redis URL (and its own variable).
        environment = dict(item.split("=", 1) for item in inspected["Config"]["Env"])
        assert f":{stack.env['REDIS_PASSWORD']}@127.0.0.1:" in environment["LOOKOUT_REDIS_URL"]
        assert environment["LOOKOUT_REDIS_PASSWORD"] == stack.env["REDIS_PASSWORD"]


def test_rest_detection_through_the_containers(stack: Stack, images_dir: Path) -> None:
    answer = detect(stack, (images_dir / "dog.jpg").read_bytes())
    labels = {d["label"] for d in answer["detections"]}
    assert {"dog", "bicycle", "car"} <= labels, answer
    assert answer["model"] == "yolox_nano"
    # Without the key, signaling (published beyond loopback in compose) refuses.
    request = urllib.request.Request(
        f"{stack.url}/api/v1/detect", data=b"x", headers={"Content-Type": "image/jpeg"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401


def test_webrtc_session_from_chromium_against_the_bridge_container(
    stack: Stack, video_path: Path, tmp_path: Path
) -> None:
    camera = write_y4m(video_path, tmp_path / "vtest.y4m", frames=100)
    with sync_playwright() as driver:
        browser = launch_chromium(driver, camera)
        try:
            page = open_live_page(browser, f"{stack.url}/", query=f"key={stack.env['LOOKOUT_API_KEY']}")
            results = wait_for_results(page, 5, label="person", timeout_s=60)
            assert all(r["width"] > 0 and r["height"] > 0 for r in results)
            page.context.close()
        finally:
            browser.close()


def test_sigterm_stops_every_container_in_its_grace_period_with_exit_0(
    stack: Stack, engine: DockerEngine, timings: dict[str, float]
) -> None:
    stopped = stack.runner.stop()
    timings.update({f"stop_{s.service}_s": s.seconds for s in stopped})
    assert {s.service for s in stopped} == SERVICES
    assert [s.service for s in stopped][-1] == "redis"  # dependents first
    for s in stopped:
        assert s.exit_code == 0 and not s.oom_killed, s
        assert s.seconds < s.grace_s, s  # SIGTERM did it, not the SIGKILL after the grace period
    running = engine.docker("ps", "--quiet", "--filter", f"label=com.docker.compose.project={PROJECT}").stdout
    assert running.strip() == ""
    stack.runner.down()
    left = engine.docker("ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={PROJECT}")
    assert left.stdout.strip() == ""


def test_redis_on_tls_only_with_client_certificates(
    engine: DockerEngine, cpu_image: str, shared_dir: Path, images_dir: Path, tmp_path: Path
) -> None:
    """compose/docker-compose.redis-tls.yml: every service on rediss:// with the password and a client
    certificate serves a REST detection; a plaintext client is refused."""
    certs = tmp_path / "certs"
    make_tls_files(certs)
    for path in (tmp_path, certs, *certs.iterdir()):  # the containers' users read them (keys: test only)
        path.chmod(0o755 if path.is_dir() else 0o644)
    env = {**stack_env(cpu_image, shared_dir), "REDIS_TLS_DIR": str(certs), "REDIS_HOST": "127.0.0.1"}
    env["REDIS_TLS_BIND"] = "127.0.0.1"
    env["REDIS_TLS_PORT"] = env["REDIS_PORT"]
    with running_stack(engine, env, tmp_path, [REDIS_TLS_FILE], project=f"{PROJECT}-tls") as tls:
        worker = json.loads(engine.docker("inspect", f"{PROJECT}-tls-worker-cpu-1").stdout)[0]
        environment = dict(item.split("=", 1) for item in worker["Config"]["Env"])
        assert environment["LOOKOUT_REDIS_URL"].startswith("rediss://:")
        answer = detect(tls, (images_dir / "dog.jpg").read_bytes())
        assert {"dog", "bicycle", "car"} <= {d["label"] for d in answer["detections"]}, answer
        # The plaintext protocol on the TLS port gets no answer: Redis drops the connection.
        with socket.create_connection(("127.0.0.1", int(env["REDIS_TLS_PORT"])), timeout=5) as sock:
            sock.sendall(b"PING\r\n")
            try:
                reply = sock.recv(64)
            except (ConnectionResetError, TimeoutError):
                reply = b""
            assert not reply.startswith((b"+PONG", b"-NOAUTH")), reply
        stopped = tls.runner.stop()
        assert [s.exit_code for s in stopped] == [0] * len(SERVICES), stopped


@pytest.mark.skipif(
    os.environ.get("LOOKOUT_BUILD_GPU_IMAGE") != "1",
    reason="the GPU image takes 3 min and 3.2 GB of CUDA wheels: LOOKOUT_BUILD_GPU_IMAGE=1 builds it",
)
def test_the_gpu_image_builds_and_lists_the_cuda_provider(
    engine: DockerEngine, cpu_image: str, timings: dict[str, float]
) -> None:
    timings["gpu_image_build_s"] = build_image(
        engine, "compose/Dockerfile.gpu", GPU_IMAGE, REPO, {"PYTHON_IMAGE": BASE_IMAGE}, timeout=3600
    )
    timings["gpu_image_mb"] = image_size(engine, GPU_IMAGE) / 1e6
    run = ["run", "--rm", "--network", "host", GPU_IMAGE]
    assert "usage: lookout worker" in engine.docker(*run, "lookout", "worker", "--help").stdout
    providers = engine.docker(
        *run, "python", "-c", "import onnxruntime as o; print(o.get_available_providers())"
    ).stdout
    assert "CUDAExecutionProvider" in providers, providers
    # The wheels' CUDA and cuDNN libraries are where the dynamic linker looks.
    cache = engine.docker(*run, "ldconfig", "-p").stdout
    assert "libcudart.so" in cache and "libcudnn.so" in cache and "libcublas.so" in cache, cache[-2000:]
    assert json.loads(engine.docker("image", "inspect", GPU_IMAGE).stdout)[0]["Config"]["User"] == "lookout"
