"""tests/support/compose_runner.py turns the compose file's services into the `docker run` Compose would
make. The containers themselves run in tests/test_containers.py; these check the translation."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.compose.composefile import COMPOSE_FILE, HOST_NETWORK_FILE, REQUIRED
from tests.support.compose_runner import ComposeError, ComposeRunner, seconds
from tests.support.docker_engine import DockerEngine

NO_ENGINE = DockerEngine("unix:///nonexistent/docker.sock")  # never called: only run_args is built
CENTRAL = {"redis", "signaling", "bridge", "worker-cpu"}


def runner(env: dict[str, str] | None = None, **options: object) -> ComposeRunner:
    return ComposeRunner(
        NO_ENGINE,
        [COMPOSE_FILE, HOST_NETWORK_FILE],
        {**REQUIRED, "MODELS_DIR": str(Path(__file__).parent), **(env or {})},
        "single_host_cpu",
        **options,  # type: ignore[arg-type]
    )


def flag(args: list[str], name: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == name]


def test_durations() -> None:
    assert seconds("20s") == 20 and seconds("1m30s") == 90 and seconds("500ms") == 0.5 and seconds(3) == 3
    with pytest.raises(ComposeError):
        seconds("20 seconds")


def test_the_profile_and_the_start_order() -> None:
    run = runner(only=CENTRAL)
    assert run.profile_services == CENTRAL | {"prometheus", "influxdb", "grafana", "node-exporter"}
    order = run.order()
    assert order[0] == "redis" and set(order) == CENTRAL
    assert run.dependencies("worker-cpu") == {"redis": "service_healthy"}
    assert run.project == "lookout"  # the file's name:
    with pytest.raises(ComposeError, match="depends on redis: run both"):
        runner(only={"signaling"}).dependencies("signaling")


def test_a_worker_container_is_what_compose_makes() -> None:
    run = runner({"WORKER_METRICS_PORT": "9555"}, project="p", only=CENTRAL)
    args = run.run_args("worker-cpu", 1)
    assert flag(args, "--name") == ["p-worker-cpu-1"] and flag(args, "--network") == ["host"]
    assert "com.docker.compose.project=p" in flag(args, "--label")
    assert flag(args, "--stop-timeout") == ["20"] and flag(args, "--restart") == ["unless-stopped"]
    assert flag(args, "--cpus") == ["1.0"]
    env = dict(item.split("=", 1) for item in flag(args, "--env"))
    assert env["LOOKOUT_METRICS_PORT"] == "9555" and env["LOOKOUT_PROVIDER"] == "cpu"
    assert env["LOOKOUT_REDIS_URL"] == "redis://:compose-test-password@127.0.0.1:6379/0"
    volumes = flag(args, "--volume")
    assert volumes == [f"{Path(__file__).parent}:/models:ro", "p_registry:/registry"]
    (health,) = flag(args, "--health-cmd")
    assert shlex.split(health)[:2] == ["python", "-c"] and "LOOKOUT_METRICS_PORT" in health
    assert flag(args, "--health-start-period") == ["60.0s"] and flag(args, "--health-retries") == ["5"]
    assert args[-3:] == ["lookout:cpu", "lookout", "worker"]
    assert "-p" not in args and "--publish" not in args


def test_redis_runs_its_compose_command() -> None:
    args = runner({"REDIS_PORT": "7001", "REDIS_IMAGE": "r:1"}, only=CENTRAL).run_args("redis")
    image = args.index("r:1")
    assert args[image + 1 :][:5] == ["redis-server", "--bind", "127.0.0.1", "--port", "7001"]
    assert "REDISCLI_AUTH=compose-test-password" in flag(args, "--env")
    assert flag(args, "--health-cmd") == ["redis-cli -p 7001 ping"]


def test_what_the_runner_does_not_do_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ComposeError, match="host network only"):
        ComposeRunner(NO_ENGINE, [COMPOSE_FILE], REQUIRED, "single_host_cpu", only=CENTRAL)
    odd = tmp_path / "odd.yml"
    odd.write_text("services:\n  x:\n    image: i\n    network_mode: host\n    sysctls: {a: 1}\n")
    with pytest.raises(ComposeError, match="does not do sysctls"):
        ComposeRunner(NO_ENGINE, [odd], {}, "any")
