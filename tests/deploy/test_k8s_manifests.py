"""deploy/k8s without a cluster: every overlay rendered by `kubectl kustomize`, every object validated
against the Kubernetes 1.32 schemas (kubernetes-validate) or its CRD's schema (KEDA, the Prometheus
operator), and the deployment rules checked on what was rendered, each rule also on a broken copy."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.manifests import (
    K8S,
    KUBECTL,
    OVERLAYS,
    REPO,
    RULES,
    Obj,
    containers,
    environment,
    known_bridge_ports,
    lookout_command,
    name_of,
    pod_specs,
    render,
    worker_shutdown_s,
)
from wire.config import known_variables

KUBERNETES_VERSION = "1.32.0"
"""The schemas of the kubectl on this machine's image (1.32); kubernetes-validate ships them."""
CRDS = Path(__file__).parent / "crds"
CRD_FILES = {
    ("keda.sh/v1alpha1", "ScaledObject"): CRDS / "keda.sh_scaledobjects.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): CRDS / "monitoring.coreos.com_servicemonitors.yaml",
}
DASHBOARD = REPO / "compose" / "grafana" / "dashboards" / "lookout.json"


def objects_of(overlay: str) -> list[Obj]:
    """A copy of the overlay's rendered objects, free to break; skips the test without kubectl."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: nothing renders the overlays")
    return copy.deepcopy(list(render(overlay)))


def find(objects: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]


def lookout_containers(objects: list[Obj], command: str) -> list[Obj]:
    return [c for _owner, _pod, c in containers(objects) if lookout_command(c) == command]


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    crd = yaml.safe_load(CRD_FILES[(api_version, kind)].read_text())
    version = api_version.split("/")[1]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = served["schema"]["openAPIV3Schema"]
    return jsonschema.Draft7Validator(schema)


def validate(obj: Obj) -> None:
    """Against its CRD's openAPIV3Schema, or the Kubernetes schema of its kind (strict: no unknown field)."""
    key = (obj["apiVersion"], obj["kind"])
    if key in CRD_FILES:
        crd_validator(*key).validate(obj)
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


# --- rendering and schemas -------------------------------------------------------------------------


def test_every_overlay_is_tested() -> None:
    assert sorted(OVERLAYS) == sorted(p.name for p in (K8S / "overlays").iterdir())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_of_every_overlay_is_valid(overlay: str) -> None:
    objects = objects_of(overlay)
    assert objects
    for obj in objects:
        validate(obj)
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "lookout", name_of(obj)
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "lookout", name_of(obj)


def test_the_validation_refuses_what_a_cluster_would() -> None:
    objects = objects_of("cpu")
    (deployment,) = find(objects, "Deployment", "lookout-worker-yolox-nano")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    (scaled,) = find(objects, "ScaledObject")
    scaled["spec"]["minReplicaCount"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)
    (monitor,) = find(objects, "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = "often"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)


def test_the_crd_copies_are_the_published_ones() -> None:
    readme = (CRDS / "README.md").read_text()
    for path in [*CRD_FILES.values(), *CRDS.glob("LICENSE-*")]:
        assert f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}" in readme


# --- the rules, on every overlay and on broken copies ----------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("rule", RULES)
def test_every_rule_holds_on_every_overlay(overlay: str, rule: str) -> None:
    assert RULES[rule](objects_of(overlay)) == []


def _worker_pod(objects: list[Obj]) -> Obj:
    (deployment,) = find(objects, "Deployment", "lookout-worker-yolox-nano")
    pod: Obj = deployment["spec"]["template"]["spec"]
    return pod


def _container(objects: list[Obj], command: str) -> Obj:
    return lookout_containers(objects, command)[0]


def grace_too_short(objects: list[Obj]) -> None:
    env = environment(objects, _container(objects, "worker"))
    _worker_pod(objects)["terminationGracePeriodSeconds"] = math.floor(worker_shutdown_s(env))


def grace_raised_in_the_config_map(objects: list[Obj]) -> None:
    _container(objects, "worker")["env"] = [
        e for e in _container(objects, "worker")["env"] if e["name"] != "LOOKOUT_SHUTDOWN_GRACE_S"
    ]
    find(objects, "ConfigMap", "lookout-config")[0]["data"]["LOOKOUT_SHUTDOWN_GRACE_S"] = "60"


def grace_left_at_the_default(objects: list[Obj]) -> None:
    worker = _container(objects, "worker")
    worker["env"] = [e for e in worker["env"] if e["name"] != "LOOKOUT_SHUTDOWN_GRACE_S"]
    _worker_pod(objects).pop("terminationGracePeriodSeconds")  # Kubernetes' 30 s
    worker["env"].append({"name": "LOOKOUT_SHUTDOWN_GRACE_S", "value": "25"})


def no_liveness_probe(objects: list[Obj]) -> None:
    find(objects, "StatefulSet")[0]["spec"]["template"]["spec"]["containers"][0].pop("livenessProbe")


def probe_on_the_wrong_port(objects: list[Obj]) -> None:
    worker = _container(objects, "worker")
    worker["env"] = [
        {"name": "LOOKOUT_METRICS_PORT", "value": "9200"} if e["name"] == "LOOKOUT_METRICS_PORT" else e
        for e in worker["env"]
    ]


def signaling_ready_on_metrics(objects: list[Obj]) -> None:
    _container(objects, "signaling")["readinessProbe"]["httpGet"]["path"] = "/metrics"


def runs_as_root(objects: list[Obj]) -> None:
    _container(objects, "worker")["securityContext"]["runAsUser"] = 0


def may_run_as_root(objects: list[Obj]) -> None:
    _worker_pod(objects)["securityContext"].pop("runAsNonRoot")


def writable_root(objects: list[Obj]) -> None:
    _container(objects, "bridge")["securityContext"]["readOnlyRootFilesystem"] = False


def keeps_capabilities(objects: list[Obj]) -> None:
    _container(objects, "signaling")["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}


def escalates(objects: list[Obj]) -> None:
    _container(objects, "worker")["securityContext"].pop("allowPrivilegeEscalation")


def plain_password(objects: list[Obj]) -> None:
    worker = _container(objects, "worker")
    worker["env"] = [
        {"name": e["name"], "value": "hunter2"} if e["name"] == "LOOKOUT_REDIS_PASSWORD" else e
        for e in worker["env"]
    ]


def password_in_the_url(objects: list[Obj]) -> None:
    data = find(objects, "ConfigMap", "lookout-config")[0]["data"]
    data["LOOKOUT_REDIS_URL"] = "redis://:hunter2@lookout-redis:6379/0"


def key_in_a_config_map(objects: list[Obj]) -> None:
    find(objects, "ConfigMap", "lookout-config")[0]["data"]["LOOKOUT_API_KEY"] = "k"


def token_in_an_env_value(objects: list[Obj]) -> None:
    _container(objects, "bridge")["env"].append(
        {"name": "LOOKOUT_ICE_SERVERS", "value": "c2VjcmV0LXR1cm4tY3JlZGVudGlhbC0xMjM0NTY3ODkw"}
    )


def a_secret_object(objects: list[Obj]) -> None:
    objects.append(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"api-key": "k"}}
    )


def latest_lookout(objects: list[Obj]) -> None:
    _container(objects, "worker")["image"] = "lookout:latest"


def untagged_redis(objects: list[Obj]) -> None:
    find(objects, "StatefulSet")[0]["spec"]["template"]["spec"]["containers"][0]["image"] = "redis"


BROKEN: dict[str, list[Callable[[list[Obj]], None]]] = {
    "grace period": [grace_too_short, grace_raised_in_the_config_map, grace_left_at_the_default],
    "probes": [no_liveness_probe, probe_on_the_wrong_port, signaling_ready_on_metrics],
    "non-root, read-only": [runs_as_root, may_run_as_root, writable_root, keeps_capabilities, escalates],
    "no plain-text secrets": [
        plain_password,
        password_in_the_url,
        key_in_a_config_map,
        token_in_an_env_value,
        a_secret_object,
    ],
    "pinned images": [latest_lookout, untagged_redis],
}


@pytest.mark.parametrize(
    ("rule", "breakage"),
    [(rule, breakage) for rule, breakages in BROKEN.items() for breakage in breakages],
    ids=lambda x: x if isinstance(x, str) else x.__name__,
)
def test_each_rule_fails_on_a_broken_copy(rule: str, breakage: Callable[[list[Obj]], None]) -> None:
    objects = objects_of("cpu")
    breakage(objects)
    problems = RULES[rule](objects)
    assert len(problems) == 1, problems
    # The other rules do not see it: each checks its own thing.
    assert [name for name, check in RULES.items() if name != rule and check(objects)] == []


def test_every_rule_has_a_broken_copy() -> None:
    assert set(BROKEN) == set(RULES)


# --- what each part must be --------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_lookout_variable_is_a_real_setting(overlay: str) -> None:
    objects = objects_of(overlay)
    names: set[str] = set()
    for _owner, _pod, container in containers(objects):
        if lookout_command(container) is not None:
            names |= {n for n in environment(objects, container) if n.startswith("LOOKOUT_")}
    assert names and names <= known_variables(), names - known_variables()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_has_a_disruption_budget(overlay: str) -> None:
    objects = objects_of(overlay)
    budgets = find(objects, "PodDisruptionBudget")
    for owner, _pod in pod_specs(objects):
        labels = owner["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, f"{owner['metadata']['name']}: {len(covering)} budgets"
        if owner["kind"] == "DaemonSet":  # no scale subresource: only an integer minAvailable applies
            assert isinstance(covering[0]["spec"].get("minAvailable"), int)


@pytest.mark.parametrize("overlay", ["cpu", "gpu", "inference-only"])
def test_one_scaled_object_per_model_on_its_backlog(overlay: str) -> None:
    objects = objects_of(overlay)
    workers = [
        o
        for o in find(objects, "Deployment")
        if o["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"
    ]
    scaled = find(objects, "ScaledObject")
    assert workers and len(scaled) == len(workers)
    for deployment in workers:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        model = environment(objects, container)["LOOKOUT_MODEL"]
        (mine,) = [s for s in scaled if s["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]]
        (trigger,) = mine["spec"]["triggers"]
        assert trigger["type"] == "prometheus"
        assert trigger["metadata"]["query"] == f'max(lookout_stream_lag{{model="{model}"}})'
        assert trigger["metadata"]["ignoreNullValues"] == "false"
        assert float(trigger["metadata"]["activationThreshold"]) == 0
        assert mine["spec"]["minReplicaCount"] >= 1
        assert "replicas" not in deployment["spec"], "the HPA owns the count; apply would reset it"


def test_signaling_ingress_carries_websockets() -> None:
    objects = objects_of("cpu")
    (ingress,) = find(objects, "Ingress")
    notes = ingress["metadata"]["annotations"]
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(notes[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 3600
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] in ingress["spec"]["tls"][0]["hosts"], "browsers give the camera to HTTPS pages only"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    (service,) = find(objects, "Service", backend["name"])
    (signaling,) = lookout_containers(objects, "signaling")
    assert service["spec"]["ports"][0]["name"] == backend["port"]["name"] == signaling["ports"][0]["name"]
    env = environment(objects, signaling)
    assert env["LOOKOUT_HOST"] == "0.0.0.0" and "secretKeyRef" in env["LOOKOUT_API_KEY"]


def test_bridges_advertise_the_node_address_and_a_udp_range() -> None:
    objects = objects_of("cpu")
    (daemon_set,) = find(objects, "DaemonSet")
    pod = daemon_set["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    (bridge,) = lookout_containers(objects, "bridge")
    env = environment(objects, bridge)
    assert env["LOOKOUT_ADVERTISED_ADDRESS"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    settings = known_bridge_ports(env)
    assert 0 < settings.udp_port_min < settings.udp_port_max


def test_gpu_workers_request_gpus_on_gpu_nodes() -> None:
    for overlay, gpus in (("gpu", "1"), ("cpu", None)):
        pod = _worker_pod(objects_of(overlay))
        (worker,) = pod["containers"]
        resources = worker["resources"]
        assert resources["limits"].get("nvidia.com/gpu") == gpus
        assert resources["requests"].get("nvidia.com/gpu") == gpus
        if gpus:
            assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
                "tolerations"
            ]
            assert worker["image"].endswith("-gpu")
            assert environment(objects_of(overlay), worker)["LOOKOUT_PROVIDER"] == "cuda"
        else:
            assert "tolerations" not in pod and worker["image"].endswith("-cpu")


def test_what_each_overlay_runs() -> None:
    def parts(overlay: str) -> set[str]:
        found = {lookout_command(c) or c["name"] for _owner, _pod, c in containers(objects_of(overlay))}
        return {p for p in found if p is not None}

    assert parts("cpu") == parts("gpu") == {"redis", "signaling", "bridge", "worker"}
    assert parts("central-only") == {"redis", "signaling", "bridge"}
    assert parts("inference-only") == {"worker"}
    inference = objects_of("inference-only")
    url = environment(inference, _container(inference, "worker"))["LOOKOUT_REDIS_URL"]
    assert "lookout-redis" not in url and url.startswith(("redis://", "rediss://"))
    assert find(inference, "ServiceMonitor") and not find(objects_of("central-only"), "ScaledObject")


def test_the_dashboard_copy_is_the_compose_dashboard() -> None:
    copied = K8S / "components" / "monitoring" / "lookout.json"
    assert copied.read_bytes() == DASHBOARD.read_bytes(), "copy compose/grafana/dashboards/lookout.json again"


def test_the_dashboard_config_map_is_the_compose_dashboard() -> None:
    for overlay in OVERLAYS:
        (config_map,) = find(objects_of(overlay), "ConfigMap", "lookout-grafana-dashboard")
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(config_map["data"]["lookout.json"]) == json.loads(DASHBOARD.read_text())


def test_the_service_monitor_scrapes_every_metrics_port() -> None:
    objects = objects_of("cpu")
    (monitor,) = find(objects, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    scraped = [s for s in find(objects, "Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in scraped} == {
        "signaling",
        "bridge",
        "worker",
    }
    for service in scraped:
        assert {p["name"] for p in service["spec"]["ports"]} & ports, service["metadata"]["name"]
