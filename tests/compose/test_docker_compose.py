"""compose/docker-compose.yml: valid against the compose-spec schema, the profiles, GPUs and ports."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft7Validator

from tests.compose.composefile import (
    COMPOSE_DIR,
    HOST_NETWORK_FILE,
    REDIS_TLS_FILE,
    raw,
    resolved,
    services_of,
)

SCHEMA = json.loads((COMPOSE_DIR / "schema" / "compose-spec.schema.json").read_text())

CENTRAL = {"redis", "signaling", "bridge"}
MONITORING = {"prometheus", "influxdb", "grafana", "node-exporter"}
PROFILES = {
    "single_host_cpu": CENTRAL | MONITORING | {"worker-cpu"},
    "single_host_gpu": CENTRAL | MONITORING | {"worker-gpu"},
    "central": CENTRAL | MONITORING,
    "central_with_inference_cpu": CENTRAL | MONITORING | {"worker-cpu"},
    "central_with_inference_gpu": CENTRAL | MONITORING | {"worker-gpu"},
    "inference_cpu": {"worker-cpu", "node-exporter"},
    "inference_gpu": {"worker-gpu", "node-exporter"},
    "monitoring": MONITORING,
}


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = Draft7Validator(SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_schema_is_the_compose_spec() -> None:
    Draft7Validator.check_schema(SCHEMA)
    assert SCHEMA["title"] == "Compose Specification"
    assert "profiles" in SCHEMA["definitions"]["service"]["properties"]


def test_valid_against_the_compose_spec_before_and_after_interpolation() -> None:
    assert schema_errors(raw()) == []
    assert schema_errors(resolved()) == []
    central = resolved({"LOOKOUT_REDIS_URL": "redis://10.0.0.5:6379/0", "WORKER_REPLICAS": "4"})
    assert schema_errors(central) == []


def test_the_schema_catches_mistakes() -> None:
    broken = resolved()
    broken["services"]["worker-cpu"]["deploy"]["replicaz"] = 2
    broken["services"]["bridge"]["ports"] = {"udp": "40000"}
    errors = schema_errors(broken)
    assert any("replicaz" in e for e in errors) and any("ports" in e for e in errors)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_each_profile_has_its_services(profile: str) -> None:
    assert services_of(profile) == PROFILES[profile]


def test_every_service_belongs_to_a_known_profile() -> None:
    for name, service in resolved()["services"].items():
        assert service.get("profiles"), f"{name} would start in every deployment"
        assert set(service["profiles"]) <= PROFILES.keys(), name


def test_gpu_workers_reserve_the_gpu_and_cpu_workers_do_not() -> None:
    services = resolved({"GPUS_PER_WORKER": "all"})["services"]
    (device,) = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    assert services["worker-gpu"]["build"]["dockerfile"] == "compose/Dockerfile.gpu"
    assert "reservations" not in services["worker-cpu"]["deploy"].get("resources", {})
    assert services["worker-cpu"]["build"]["dockerfile"] == "compose/Dockerfile"
    assert services["worker-cpu"]["environment"]["LOOKOUT_PROVIDER"] == "cpu"


def test_worker_replicas_are_configurable() -> None:
    assert resolved()["services"]["worker-cpu"]["deploy"]["replicas"] == "2"
    assert resolved({"WORKER_REPLICAS": "6"})["services"]["worker-cpu"]["deploy"]["replicas"] == "6"
    assert resolved({"GPU_WORKER_REPLICAS": "3"})["services"]["worker-gpu"]["deploy"]["replicas"] == "3"


@pytest.mark.parametrize("env", [{}, {"LOOKOUT_UDP_PORT_MIN": "50000", "LOOKOUT_UDP_PORT_MAX": "50010"}])
def test_published_udp_range_is_the_bridges_range(env: dict[str, str]) -> None:
    bridge = resolved(env)["services"]["bridge"]
    low, high = (
        int(bridge["environment"]["LOOKOUT_UDP_PORT_MIN"]),
        int(bridge["environment"]["LOOKOUT_UDP_PORT_MAX"]),
    )
    assert 0 < low <= high
    (udp,) = [p for p in bridge["ports"] if str(p).endswith("/udp")]
    published, target = udp.removesuffix("/udp").split(":")
    assert published == target == f"{low}-{high}"


def test_inference_hosts_point_at_the_central_redis_from_env() -> None:
    remote = resolved({"LOOKOUT_REDIS_URL": "redis://central.example:6379/0"})["services"]
    assert remote["worker-cpu"]["environment"]["LOOKOUT_REDIS_URL"] == "redis://central.example:6379/0"
    assert remote["worker-gpu"]["environment"]["LOOKOUT_REDIS_URL"] == "redis://central.example:6379/0"
    # Without Redis in the inference profiles, the dependency on it must be optional.
    for name in ("worker-cpu", "worker-gpu"):
        assert remote[name]["depends_on"]["redis"]["required"] is False
    assert (
        resolved()["services"]["worker-cpu"]["environment"]["LOOKOUT_REDIS_URL"]
        == "redis://:compose-test-password@redis:6379/0"
    )


def test_mounted_files_exist() -> None:
    for name, service in resolved()["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("./"):
                assert (COMPOSE_DIR / source).exists(), f"{name} mounts {source}, which is not in compose/"
            elif not source.startswith(("/", "../")):
                assert source in resolved()["volumes"], f"{name} mounts the undeclared volume {source}"


def test_compose_refuses_to_publish_signaling_without_an_api_key() -> None:
    with pytest.raises(ValueError, match="LOOKOUT_API_KEY"):
        resolved({"REDIS_PASSWORD": "pw"}, required=False)
    signaling = resolved({"LOOKOUT_API_KEY": "s3cret"})["services"]["signaling"]
    assert signaling["environment"]["LOOKOUT_API_KEY"] == "s3cret"


def test_compose_refuses_to_start_redis_or_a_service_without_a_redis_password() -> None:
    with pytest.raises(ValueError, match=r"\$\{REDIS_PASSWORD\} is required: set REDIS_PASSWORD in \.env"):
        resolved({"LOOKOUT_API_KEY": "key"}, required=False)
    services = resolved({"REDIS_PASSWORD": "s3cret"})["services"]
    command = services["redis"]["command"]
    assert command[command.index("--requirepass") + 1] == "s3cret"
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == "s3cret"  # for the healthcheck's redis-cli
    lookout = [name for name, svc in services.items() if "LOOKOUT_REDIS_URL" in svc.get("environment", {})]
    assert sorted(lookout) == ["bridge", "signaling", "worker-cpu", "worker-gpu"]
    for name in lookout:
        assert services[name]["environment"]["LOOKOUT_REDIS_PASSWORD"] == "s3cret", name
        # ... and in the URL, so that every service gets a LOOKOUT_REDIS_URL that carries it.
        assert services[name]["environment"]["LOOKOUT_REDIS_URL"] == "redis://:s3cret@redis:6379/0", name


def test_the_model_volume_is_read_only_everywhere() -> None:
    for name, service in resolved()["services"].items():
        for volume in service.get("volumes", []):
            if str(volume).split(":")[1] == "/models":
                assert str(volume).endswith(":/models:ro"), name


def test_host_network_override() -> None:
    env = {
        "REDIS_PORT": "7001",
        "SIGNALING_PORT": "7002",
        "BRIDGE_METRICS_PORT": "7003",
        "REDIS_PASSWORD": "pw",
    }
    services = resolved(env, overrides=[HOST_NETWORK_FILE])["services"]
    assert schema_errors(resolved(env, overrides=[HOST_NETWORK_FILE])) == []
    assert set(services) == set(resolved()["services"])  # the override adds no service
    for name, service in services.items():
        assert service["network_mode"] == "host", name
        assert "ports" not in service, name  # !reset: nothing to publish on the host network
    command = services["redis"]["command"]
    assert (
        command[command.index("--port") + 1] == "7001" and command[command.index("--bind") + 1] == "127.0.0.1"
    )
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "-p", "7001", "ping"]
    assert services["redis"]["healthcheck"]["retries"] == 10  # the rest of the healthcheck is kept
    for name in ("signaling", "bridge", "worker-cpu", "worker-gpu"):
        assert services[name]["environment"]["LOOKOUT_REDIS_URL"] == "redis://:pw@127.0.0.1:7001/0", name
        assert services[name]["environment"]["LOOKOUT_REDIS_PASSWORD"] == "pw", name
    assert services["signaling"]["environment"]["LOOKOUT_PORT"] == "7002"
    assert services["bridge"]["environment"]["LOOKOUT_METRICS_PORT"] == "7003"
    # One replica per worker service: each would bind the same /metrics port of the host.
    assert services["worker-cpu"]["deploy"]["replicas"] == 1
    assert (
        services["worker-cpu"]["deploy"]["resources"]
        == resolved()["services"]["worker-cpu"]["deploy"]["resources"]
    )


def test_redis_tls_override() -> None:
    tls = resolved({"REDIS_PASSWORD": "pw"}, overrides=[REDIS_TLS_FILE])
    assert schema_errors(tls) == []
    redis = tls["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--port") + 1] == "0"  # the plaintext port is closed
    assert command[command.index("--tls-port") + 1] == "6380"
    assert command[command.index("--tls-auth-clients") + 1] == "yes"
    assert command[command.index("--requirepass") + 1] == "pw"
    assert redis["ports"] == ["127.0.0.1:6380:6380"]  # !override: not added to the plaintext one
    assert "--tls" in redis["healthcheck"]["test"] and "./certs:/certs:ro" in redis["volumes"]
    for name in ("signaling", "bridge", "worker-cpu", "worker-gpu"):
        service = tls["services"][name]
        assert service["environment"]["LOOKOUT_REDIS_URL"] == "rediss://:pw@redis:6380/0", name
        assert service["environment"]["LOOKOUT_REDIS_CA_FILE"] == "/certs/ca.pem", name
        assert service["volumes"][-1] == "./certs:/certs:ro", name
        assert any(v.endswith(":/models:ro") for v in service["volumes"]), name  # merged, not replaced
    with pytest.raises(ValueError, match="REDIS_PASSWORD"):
        resolved({"LOOKOUT_API_KEY": "k"}, required=False, overrides=[REDIS_TLS_FILE])
