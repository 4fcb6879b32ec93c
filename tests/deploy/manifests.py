"""Rendering deploy/k8s with `kubectl kustomize`, and the rules every rendered manifest must keep.

Each rule takes the objects of one rendered overlay and returns its violations, one line each: an empty
list means the rule holds. tests/deploy/test_k8s_manifests.py runs every rule on every overlay, and on
a broken copy made for each rule, so that none of them can pass by accident.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from inference.worker import SHUTDOWN_REDIS_TIMEOUT_S
from wire.config import BridgeSettings, WorkerSettings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu", "central-only", "inference-only")
KUBECTL = shutil.which("kubectl")

Obj = dict[str, Any]
Rule = Callable[[list[Obj]], list[str]]

POD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|(?<!NO_)AUTH$)", re.IGNORECASE)
"""Environment or ConfigMap names whose values are credentials: only ever from a Secret."""
SECRET_VALUE = re.compile(
    r"://[^/@\s]*:[^/@\s]+@"  # a URL with a password in it
    r"|^[A-Za-z0-9+/_-]{32,}={0,2}$"  # a long random-looking token
)


@functools.cache
def render(overlay: str) -> tuple[Obj, ...]:
    """The objects `kubectl kustomize` renders for one overlay (the test skips without kubectl)."""
    assert KUBECTL is not None
    done = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {overlay} failed: {done.stderr.strip()}"
    return tuple(obj for obj in yaml.safe_load_all(done.stdout) if obj)


def project_version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def name_of(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pod_specs(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(owning object, pod spec) of every workload."""
    for obj in objects:
        if obj["kind"] in POD_KINDS:
            yield obj, obj["spec"]["template"]["spec"]


def containers(objects: list[Obj]) -> Iterator[tuple[Obj, Obj, Obj]]:
    """(owning object, pod spec, container) of every container, init containers too."""
    for owner, pod in pod_specs(objects):
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            yield owner, pod, container


def lookout_command(container: Obj) -> str | None:
    """``signaling``, ``bridge``, ``worker``... for a Lookout container; None for any other."""
    args = [*container.get("command", []), *container.get("args", [])]
    return args[1] if len(args) > 1 and args[0] == "lookout" else None


def environment(objects: list[Obj], container: Obj) -> dict[str, Any]:
    """The container's environment as the kubelet builds it: envFrom ConfigMaps, then env (its plain
    values as strings, the others as their valueFrom)."""
    config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_maps.get(source["configMapRef"]["name"], {}))
    for item in container.get("env", []):
        env[item["name"]] = item["value"] if "value" in item else item.get("valueFrom")
    return env


def worker_shutdown_s(env: dict[str, Any]) -> float:
    """How long a worker may take to stop: its shutdown grace (the setting, from the container's
    environment or WorkerSettings' default) plus the time it then has to end what is left."""
    given = env.get("LOOKOUT_SHUTDOWN_GRACE_S")
    grace = (
        WorkerSettings.model_validate({"shutdown_grace_s": given}).shutdown_grace_s
        if isinstance(given, str)
        else WorkerSettings.model_fields["shutdown_grace_s"].default
    )
    return float(grace) + SHUTDOWN_REDIS_TIMEOUT_S


# --- the rules -----------------------------------------------------------------------------------


def grace_period_rule(objects: list[Obj]) -> list[str]:
    """A worker's pod waits longer than the worker's own stop, so scaling in never kills one mid-frame."""
    problems = []
    for owner, pod, container in containers(objects):
        if lookout_command(container) != "worker":
            continue
        needed = worker_shutdown_s(environment(objects, container))
        given = pod.get("terminationGracePeriodSeconds", 30)
        if not given > needed:
            problems.append(
                f"{name_of(owner)}: terminationGracePeriodSeconds {given} is not above the worker's "
                f"shutdown ({needed:g} s: LOOKOUT_SHUTDOWN_GRACE_S plus {SHUTDOWN_REDIS_TIMEOUT_S:g} s)"
            )
    return problems


def _probe_target(container: Obj, probe: Obj) -> tuple[str, int | None]:
    get = probe.get("httpGet")
    if get is None:
        return "", None
    port = get["port"]
    if isinstance(port, str):
        port = next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == port), None)
    return str(get.get("path", "/")), port


def probes_rule(objects: list[Obj]) -> list[str]:
    """Every container has a readiness and a liveness probe, and Lookout's probe the endpoints the
    services really serve: signaling /healthz (ready) on its HTTP port, the others /metrics on their
    LOOKOUT_METRICS_PORT."""
    problems = []
    for owner, _pod, container in containers(objects):
        where = f"{name_of(owner)} container {container['name']}"
        for kind in ("readinessProbe", "livenessProbe"):
            if kind not in container:
                problems.append(f"{where}: no {kind}")
        command = lookout_command(container)
        if command is None or "readinessProbe" not in container:
            continue
        env = environment(objects, container)
        path, port = _probe_target(container, container["readinessProbe"])
        if command == "signaling":
            expected: tuple[str, int | None] = ("/healthz", int(env.get("LOOKOUT_PORT", 8080)))
        else:
            metrics_port = env.get("LOOKOUT_METRICS_PORT")
            expected = ("/metrics", int(metrics_port) if isinstance(metrics_port, str) else None)
        if (path, port) != expected or expected[1] is None:
            problems.append(
                f"{where}: readiness probes {path}:{port}, but it serves {expected[0]}:{expected[1]}"
            )
    return problems


def security_rule(objects: list[Obj]) -> list[str]:
    """Non-root, a read-only root filesystem, no privilege escalation, every capability dropped."""
    problems = []
    for owner, pod, container in containers(objects):
        where = f"{name_of(owner)} container {container['name']}"
        pod_ctx, ctx = pod.get("securityContext", {}), container.get("securityContext", {})
        merged = {**pod_ctx, **ctx}
        if merged.get("runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        if merged.get("runAsUser", 1) == 0:
            problems.append(f"{where}: runs as uid 0")
        if ctx.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: the root filesystem is writable")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: privilege escalation is allowed")
        if ctx.get("privileged"):
            problems.append(f"{where}: privileged")
        if "ALL" not in ctx.get("capabilities", {}).get("drop", []) or ctx.get("capabilities", {}).get("add"):
            problems.append(f"{where}: capabilities are not all dropped")
        if pod.get("hostPID") or pod.get("hostIPC"):
            problems.append(f"{name_of(owner)}: shares the host's PID or IPC namespace")
    return problems


def secrets_rule(objects: list[Obj]) -> list[str]:
    """No credential in plain text: none in an env value or a ConfigMap, no Secret object in the
    manifests (they are created with kubectl), and Lookout's API key and Redis password by secretKeyRef."""
    problems = []
    for obj in objects:
        if obj["kind"] == "Secret":
            problems.append(f"{name_of(obj)}: a Secret in the manifests (create it with kubectl instead)")
        if obj["kind"] == "ConfigMap":
            for key, value in obj.get("data", {}).items():
                if SECRET_NAME.search(key) or (isinstance(value, str) and SECRET_VALUE.search(value)):
                    problems.append(f"{name_of(obj)}: {key} looks like a credential in plain text")
    for owner, _pod, container in containers(objects):
        where = f"{name_of(owner)} container {container['name']}"
        for item in container.get("env", []):
            name = item["name"]
            if "value" in item and (SECRET_NAME.search(name) or SECRET_VALUE.search(str(item["value"]))):
                problems.append(f"{where}: {name} has a plain-text value")
            elif SECRET_NAME.search(name) and "secretKeyRef" not in item.get("valueFrom", {}):
                problems.append(f"{where}: {name} does not come from a Secret (secretKeyRef)")
    return problems


def images_rule(objects: list[Obj]) -> list[str]:
    """Lookout runs the image of this version (lookout:<version>-cpu or -gpu); every other image has
    an explicit tag that is not ``latest``."""
    problems = []
    version = project_version()
    for owner, _pod, container in containers(objects):
        image = container["image"]
        where = f"{name_of(owner)} container {container['name']}"
        if lookout_command(container) is not None:
            if image not in (f"lookout:{version}-cpu", f"lookout:{version}-gpu"):
                problems.append(f"{where}: image {image} is not lookout:{version}-cpu or -gpu")
            continue
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if not tag or tag == "latest":
            problems.append(f"{where}: image {image} is not pinned to a tag")
    return problems


RULES: dict[str, Rule] = {
    "grace period": grace_period_rule,
    "probes": probes_rule,
    "non-root, read-only": security_rule,
    "no plain-text secrets": secrets_rule,
    "pinned images": images_rule,
}


def known_bridge_ports(env: dict[str, Any]) -> BridgeSettings:
    """The bridge's settings from its container's plain values (checks the UDP range as the bridge does)."""
    plain = {k.removeprefix("LOOKOUT_").lower(): v for k, v in env.items() if isinstance(v, str)}
    fields = {k: v for k, v in plain.items() if k in BridgeSettings.model_fields}
    return BridgeSettings.model_validate(fields)
