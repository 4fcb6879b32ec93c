"""Run a compose file's services as real containers with the plain ``docker`` client, host network only.

Compose v2 cannot be installed here, Debian's docker-compose 1.29 rejects the file's modern keys, and
podman-compose ignores ``condition: service_healthy`` (../shared/NOTES.md). So this reads the compose
file itself (``tests.compose.composefile``: PyYAML with anchors and merge keys, override files, Compose's
``${VAR:-default}`` interpolation, nested defaults too) and turns each service of a profile into the
``docker run`` that Compose would make: the same image, command, entrypoint, environment, env_file,
volumes (named ones created as ``PROJECT_NAME``), healthcheck, stop signal and grace period, restart
policy, replicas, CPU limit and labels. Services start in ``depends_on`` order, each waiting for its
dependencies' condition (``service_healthy`` from Docker's own health status).

What it does not do, on purpose: build images (build them first; ``build:`` is read for nothing),
networks other than the host's (every service must have ``network_mode: host``, as the override
compose/docker-compose.host-network.yml gives them; ``ports:`` are then meaningless and ignored, as
Docker ignores them), and any key it does not know, which is an error rather than silently dropped.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from tests.compose.composefile import combined, interpolate
from tests.support.docker_engine import DockerEngine

SERVICE_KEYS = {
    "image",
    "build",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "volumes",
    "healthcheck",
    "stop_grace_period",
    "stop_signal",
    "restart",
    "deploy",
    "depends_on",
    "profiles",
    "network_mode",
    "ports",
    "user",
    "working_dir",
    "init",
    "labels",
    "pid",
}
DEPLOY_KEYS = {"replicas", "resources"}
DURATION = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<unit>us|ms|s|m|h)")
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
DEFAULT_STOP_GRACE_S = 10.0  # Compose's and Docker's default


class ComposeError(ValueError):
    """The compose file asks for something this runner does not do (the message says what)."""


def seconds(duration: str | int | float) -> float:
    """A compose duration (``1m30s``, ``20s``, ``500ms``, or a number of seconds) in seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    text = duration.strip()
    total, position = 0.0, 0
    for match in DURATION.finditer(text):
        if match.start() != position:
            break
        total += float(match.group("value")) * UNITS[match.group("unit")]
        position = match.end()
    if position != len(text) or not text:
        raise ComposeError(f"not a duration: {duration!r}")
    return total


@dataclass
class Stopped:
    """How one container stopped."""

    name: str
    service: str
    exit_code: int
    seconds: float
    grace_s: float
    oom_killed: bool


class ComposeRunner:
    """One project: the services of ``profile`` in the merged ``files``, interpolated with ``env``."""

    def __init__(
        self,
        engine: DockerEngine,
        files: list[Path],
        env: Mapping[str, str],
        profile: str,
        *,
        project: str | None = None,
        only: set[str] | None = None,
    ) -> None:
        self.engine = engine
        self.compose_dir = files[0].resolve().parent
        self.config: dict[str, Any] = interpolate(combined(files), env)
        self.project = project or str(self.config.get("name") or self.compose_dir.name)
        services: dict[str, dict[str, Any]] = self.config.get("services", {})
        self.services = {
            name: service
            for name, service in services.items()
            if not service.get("profiles") or profile in service["profiles"]
        }
        self.profile_services = set(self.services)
        """Every service of the profile; ``services`` holds those to run (``only`` picks some)."""
        if only is not None:
            if only - self.profile_services:
                raise ComposeError(
                    f"not in profile {profile}: {', '.join(sorted(only - self.profile_services))}"
                )
            self.services = {name: self.services[name] for name in sorted(only)}
        for name, service in self.services.items():
            unknown = set(service) - SERVICE_KEYS
            if unknown:
                raise ComposeError(f"{name}: this runner does not do {', '.join(sorted(unknown))}")
            unknown = set(service.get("deploy", {})) - DEPLOY_KEYS
            if unknown:
                raise ComposeError(
                    f"{name}: this runner does not do deploy.{', deploy.'.join(sorted(unknown))}"
                )
            if service.get("network_mode") != "host":
                raise ComposeError(f"{name}: host network only (network_mode: host), never a Docker network")
        self.started: list[tuple[str, str]] = []
        """(service, container name) in start order."""

    # --- what Compose would do, as data ----------------------------------------------------------

    def dependencies(self, name: str) -> dict[str, str]:
        """Service -> condition it must reach before ``name`` starts (optional ones not in the profile
        are dropped, as Compose drops them)."""
        found: dict[str, str] = {}
        depends = self.services[name].get("depends_on", {})
        if isinstance(depends, list):
            depends = {dependency: {} for dependency in depends}
        for dependency, spec in depends.items():
            if dependency not in self.services:
                if dependency in self.profile_services:
                    raise ComposeError(f"{name} depends on {dependency}: run both")
                if spec.get("required", True):
                    raise ComposeError(f"{name} depends on {dependency}, which is not in the profile")
                continue
            found[dependency] = spec.get("condition", "service_started")
        return found

    def order(self) -> list[str]:
        """The services in an order where each comes after what it depends on."""
        done: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in done:
                return
            if name in visiting:
                raise ComposeError(f"depends_on cycle through {name}")
            visiting.add(name)
            for dependency in self.dependencies(name):
                visit(dependency)
            visiting.discard(name)
            done.append(name)

        for name in sorted(self.services):
            visit(name)
        return done

    def replicas(self, name: str) -> int:
        return int(self.services[name].get("deploy", {}).get("replicas", 1))

    def grace_s(self, name: str) -> float:
        return seconds(self.services[name].get("stop_grace_period", DEFAULT_STOP_GRACE_S))

    def container_name(self, name: str, replica: int) -> str:
        return f"{self.project}-{name}-{replica}"  # Compose v2's naming

    def volume_name(self, volume: str) -> str:
        return f"{self.project}_{volume}"

    def _environment(self, service: dict[str, Any]) -> dict[str, str | None]:
        values: dict[str, str | None] = {}
        for entry in service.get("env_file", []):
            path, required = (
                (entry, True) if isinstance(entry, str) else (entry["path"], entry.get("required", True))
            )
            file = (self.compose_dir / path).resolve()
            if not file.exists():
                if required:
                    raise ComposeError(f"env_file {file} is missing")
                continue
            values.update(dotenv_values(file))
        environment = service.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) if "=" in item else (item, None) for item in environment)
        values.update({key: None if value is None else str(value) for key, value in environment.items()})
        return values

    def _volume(self, entry: str | dict[str, Any]) -> list[str]:
        if isinstance(entry, dict):
            kind, source, target = entry.get("type", "volume"), str(entry.get("source", "")), entry["target"]
            mode = "ro" if entry.get("read_only") else ""
        else:
            source, _, rest = entry.partition(":")
            target, _, mode = rest.partition(":")
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        if kind == "bind":
            host = (self.compose_dir / Path(source).expanduser()).resolve()
            if not host.exists():
                raise ComposeError(f"bind mount source {host} is missing")
            source = str(host)
        else:
            declared = self.config.get("volumes") or {}
            if source not in declared:
                raise ComposeError(f"volume {source} is not declared under the top-level volumes:")
            source = self.volume_name(source)
        return ["--volume", f"{source}:{target}" + (f":{mode}" if mode else "")]

    def _healthcheck(self, check: dict[str, Any]) -> list[str]:
        if check.get("disable"):
            return ["--no-healthcheck"]
        test = check.get("test")
        args: list[str] = []
        if isinstance(test, list):
            if test[0] == "NONE":
                return ["--no-healthcheck"]
            if test[0] == "CMD":
                args += ["--health-cmd", shlex.join(test[1:])]
            elif test[0] == "CMD-SHELL":
                args += ["--health-cmd", test[1]]
            else:
                raise ComposeError(f"healthcheck test must start with CMD, CMD-SHELL or NONE: {test}")
        elif isinstance(test, str):
            args += ["--health-cmd", test]
        for key, flag in (("interval", "interval"), ("timeout", "timeout"), ("start_period", "start-period")):
            if key in check:
                args += [f"--health-{flag}", f"{seconds(check[key])}s"]
        if "retries" in check:
            args += ["--health-retries", str(check["retries"])]
        return args

    def run_args(self, name: str, replica: int = 1) -> list[str]:
        """The ``docker run`` arguments (after ``run``) of one replica of ``name``."""
        service = self.services[name]
        if "image" not in service:
            raise ComposeError(f"{name}: no image (this runner builds nothing)")
        args = [
            "--detach",
            "--name",
            self.container_name(name, replica),
            "--network",
            "host",
            "--label",
            f"com.docker.compose.project={self.project}",
            "--label",
            f"com.docker.compose.service={name}",
            "--label",
            f"com.docker.compose.container-number={replica}",
            "--stop-timeout",
            str(round(self.grace_s(name))),
        ]
        labels = service.get("labels", {})
        for key, value in labels.items() if isinstance(labels, dict) else (x.split("=", 1) for x in labels):
            args += ["--label", f"{key}={value}"]
        for key, value in self._environment(service).items():
            args += ["--env", key if value is None else f"{key}={value}"]
        for entry in service.get("volumes", []):
            args += self._volume(entry)
        if "healthcheck" in service:
            args += self._healthcheck(service["healthcheck"])
        if "stop_signal" in service:
            args += ["--stop-signal", service["stop_signal"]]
        if "restart" in service:
            args += ["--restart", service["restart"]]
        if "user" in service:
            args += ["--user", str(service["user"])]
        if "working_dir" in service:
            args += ["--workdir", service["working_dir"]]
        if "pid" in service:
            args += ["--pid", str(service["pid"])]
        if service.get("init"):
            args.append("--init")
        resources = service.get("deploy", {}).get("resources", {})
        unknown = set(resources) - {"limits", "reservations"}
        if unknown:
            raise ComposeError(f"{name}: this runner does not do deploy.resources.{', '.join(unknown)}")
        limits = resources.get("limits", {})
        if "cpus" in limits:
            args += ["--cpus", str(limits["cpus"])]
        if "memory" in limits:
            args += ["--memory", str(limits["memory"])]
        for device in resources.get("reservations", {}).get("devices", []):
            if device.get("driver") != "nvidia":
                raise ComposeError(f"{name}: only nvidia device reservations are supported")
            args += ["--gpus", str(device.get("count", "all"))]
        entrypoint = service.get("entrypoint")
        command = service.get("command", [])
        if isinstance(entrypoint, list) and entrypoint:
            args += ["--entrypoint", entrypoint[0]]
            command = [*entrypoint[1:], *(shlex.split(command) if isinstance(command, str) else command)]
        elif isinstance(entrypoint, str):
            args += ["--entrypoint", entrypoint]
        args.append(service["image"])
        args += shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
        return args

    # --- doing it --------------------------------------------------------------------------------

    def state(self, container: str) -> dict[str, Any]:
        import json

        out = self.engine.docker("inspect", "--format", "{{json .State}}", container).stdout
        state: dict[str, Any] = json.loads(out)
        return state

    def _reached(self, container: str, condition: str) -> bool:
        state = self.state(container)
        if condition == "service_healthy":
            if state.get("Health") is None:
                raise ComposeError(f"{container} has no healthcheck, so it cannot become service_healthy")
            if not state["Running"] and state.get("ExitCode"):
                raise ComposeError(f"{container} exited {state['ExitCode']} before it was healthy")
            return bool(state["Health"]["Status"] == "healthy")
        if condition == "service_completed_successfully":
            if not state["Running"] and state["ExitCode"]:
                raise ComposeError(f"{container} exited {state['ExitCode']}")
            return not state["Running"] and state["ExitCode"] == 0
        return bool(state["Running"])

    def wait_for(self, name: str, condition: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for replica in range(1, self.replicas(name) + 1):
            container = self.container_name(name, replica)
            while not self._reached(container, condition):
                if time.monotonic() > deadline:
                    logs = self.logs(container)[-3000:]
                    raise TimeoutError(f"{container} not {condition} after {timeout_s:g} s:\n{logs}")
                time.sleep(0.5)

    def up(self, timeout_s: float = 180) -> None:
        """Create the named volumes, then start every service once its dependencies are ready."""
        for volume in self.config.get("volumes") or {}:
            self.engine.docker(
                "volume",
                "create",
                "--label",
                f"com.docker.compose.project={self.project}",
                self.volume_name(volume),
            )
        for name in self.order():
            for dependency, condition in self.dependencies(name).items():
                self.wait_for(dependency, condition, timeout_s)
            for replica in range(1, self.replicas(name) + 1):
                self.engine.docker("run", *self.run_args(name, replica))
                self.started.append((name, self.container_name(name, replica)))

    def logs(self, container: str) -> str:
        result = self.engine.docker("logs", container, check=False)
        return result.stdout + result.stderr

    def ours(self) -> list[str]:
        """Every container of this project, running or not."""
        out = self.engine.docker(
            "ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={self.project}"
        ).stdout
        return out.split()

    def stop(self) -> list[Stopped]:
        """``docker stop`` each container (its stop signal, then SIGKILL after its grace period), the
        dependents first, as ``docker compose stop`` does; how each one ended."""
        stopped = []
        for name, container in reversed(self.started):
            started = time.monotonic()
            self.engine.docker("stop", container, timeout=self.grace_s(name) + 60)
            took = time.monotonic() - started
            state = self.state(container)
            stopped.append(
                Stopped(
                    container,
                    name,
                    int(state["ExitCode"]),
                    took,
                    self.grace_s(name),
                    bool(state["OOMKilled"]),
                )
            )
        return stopped

    def down(self) -> None:
        """Remove every container and named volume of the project (after ``stop``, or to clean up)."""
        containers = self.ours()
        if containers:
            self.engine.docker("rm", "--force", *containers, timeout=120)
        volumes = self.engine.docker(
            "volume", "ls", "--quiet", "--filter", f"label=com.docker.compose.project={self.project}"
        ).stdout.split()
        if volumes:
            self.engine.docker("volume", "rm", "--force", *volumes)
        self.started.clear()
