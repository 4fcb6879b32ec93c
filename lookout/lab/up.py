"""`lookout lab up LAB.yaml`: build the lab, start its services, supervise them in the foreground.

Order: the state file first, then every namespace (each recorded as soon as it exists), the switch, the
veths and the shaping, then Redis, signaling, bridges and workers (ready when Redis answers, signaling's
/healthz is 200, every bridge and worker has a heartbeat and its /metrics answers), then the stream
clients and the recorder. Readiness is checked from a thread inside the central host's namespace, over
the lab's links. A service that crashes (or is killed by ``lab kill``) is restarted after a growing
pause (``lookout.supervisor``, as Compose's ``restart: unless-stopped``); one that exits with a
configuration error stops the lab with its reason. Ctrl-C or SIGTERM (also from ``lab down``) takes the
whole lab down. After a ``kill -9`` of `lab up` the services keep running: ``lab down`` removes them.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import psutil

from lookout.lab import netns, plan
from lookout.lab.down import teardown
from lookout.lab.model import LabFile, LabFileError, Role
from lookout.lab.state import HostState, LabState, ProcessState, read_state, state_path, write_state
from lookout.supervisor import Backoff, RestartPolicy
from wire.config import LabSettings
from wire.keys import Keys

log = logging.getLogger("lookout.lab")


class LabStopped(Exception):
    """A stop was requested while the lab was being built."""


@dataclass
class Running:
    spec: plan.ServiceSpec
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    pause_until: float = 0.0
    done: bool = False
    backoff: Backoff = field(default_factory=lambda: Backoff(RestartPolicy(max_pause_s=5.0)))


class LabUp:
    def __init__(self, lab: LabFile, lab_file: Path, settings: LabSettings) -> None:
        self.lab = lab
        self.settings = settings
        self.lab_dir = settings.lab_dir.resolve()
        self.run_dir = self.lab_dir / lab.name
        self.state_file = state_path(self.lab_dir, lab.name)
        self.hosts = plan.host_plans(lab)
        self.by_host = {host.name: host for host in self.hosts}
        self.central = self.by_host[lab.central.name]
        self.secrets = plan.Secrets(secrets.token_urlsafe(24), secrets.token_urlsafe(24))
        me = psutil.Process()
        self.state = LabState(
            lab=lab.name,
            lab_file=str(lab_file.resolve()),
            run_dir=str(self.run_dir),
            switch_namespace=plan.switch_namespace(lab.name),
            hosts=[HostState(**vars(host)) for host in self.hosts],
            supervisor_pid=me.pid,
            supervisor_create_time=me.create_time(),
            signaling_url=f"http://{self.central.address}:{plan.SIGNALING_PORT}",
            redis_url=f"redis://{self.central.address}:{plan.REDIS_PORT}/0",
            redis_password=self.secrets.redis_password,
            api_key=self.secrets.api_key,
            record_interval_s=settings.lab_record_interval_s,
            started_wall=time.time(),
        )
        self.services: list[Running] = []
        self.stopping = False
        self.failure: str = ""

    # --- building ---------------------------------------------------------------------------------
    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            print(f"lookout lab: {signal.Signals(signum).name}: taking lab {self.lab.name} down", flush=True)
        self.stopping = True

    def _check_not_up(self) -> None:
        if not self.state_file.exists():
            return
        try:
            old = read_state(self.state_file)
        except LabFileError:
            old = None
        alive = old is not None and netns.same_process(old.supervisor_pid, old.supervisor_create_time)
        what = "is up" if alive else "was not taken down (its `lab up` died)"
        raise netns.LabError(
            f"lab {self.lab.name} {what}: run `lookout lab down --lab {self.lab.name}` first"
        )

    def save(self) -> None:
        self.state.processes = [
            ProcessState(
                name=r.spec.name,
                host=r.spec.host,
                kind=r.spec.kind,
                pid=r.process.pid,
                create_time=psutil.Process(r.process.pid).create_time(),
                log=str(self.log_path(r.spec)),
                metrics_url=r.spec.metrics_url,
                out=r.spec.out,
                restarts=r.restarts,
            )
            for r in self.services
            if r.process is not None and r.process.poll() is None and psutil.pid_exists(r.process.pid)
        ]
        write_state(self.state_file, self.state)

    def build(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for old in (self.state.record_csv, self.state.summary_json):  # a previous run's recording
            old.unlink(missing_ok=True)
        write_state(self.state_file, self.state)
        for name in [self.state.switch_namespace, *(host.namespace for host in self.hosts)]:
            netns.add_namespace(name)
            self.state.namespaces.append(name)
            write_state(self.state_file, self.state)
        wants_netem = self.lab.netem_links
        self.state.netem = bool(wants_netem) and netns.has_netem(
            plan.netem_probe_commands(self.state.switch_namespace)
        )
        if wants_netem and not self.state.netem:
            asked = ", ".join(link.label for link in wants_netem)
            line = f"this kernel has no sch_netem: the delay and loss of links {asked} cannot be applied"
            if self.lab.without_netem == "refuse":
                raise LabFileError(
                    f"{line} (the lab file says without_netem: refuse; set warn to run anyway)"
                )
            print(f"lookout lab: warning: {line}; only their bandwidth caps are (without_netem: warn)")
        for command in plan.network_commands(self.lab, netem=self.state.netem):
            log.debug("%s", " ".join(command))
            netns.run(command)
        write_state(self.state_file, self.state)

    def log_path(self, spec: plan.ServiceSpec) -> Path:
        return self.run_dir / "logs" / f"{spec.name}.log"

    def start(self, running: Running) -> None:
        spec = running.spec
        namespace = self.by_host[spec.host].namespace
        running.process = netns.spawn(namespace, spec.argv, spec.env, self.log_path(spec))
        running.started = time.monotonic()
        log.info("started %s in %s (pid %d)", spec.name, namespace, running.process.pid)
        self.save()

    def launch(self) -> None:
        from lookout.up import redis_binary

        conf = self.run_dir / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(f"requirepass {self.secrets.redis_password}\n")
        (self.run_dir / "out").mkdir(exist_ok=True)
        specs = plan.service_specs(
            self.lab,
            python=sys.executable,
            redis_binary=redis_binary(),
            redis_conf=conf,
            run_dir=self.run_dir,
            video_dir=self.settings.lab_video_dir.resolve(),
            lab_dir=self.lab_dir,
            secrets=self.secrets,
        )
        self.services = [Running(spec) for spec in specs]
        stages = (("redis",), ("signaling", "bridge", "worker"), ("stream", "recorder"))
        for kinds in stages:
            for running in self.services:
                if running.spec.kind in kinds:
                    self.start(running)
            if kinds != stages[-1]:
                self.wait_ready(kinds)

    def wait_ready(self, kinds: tuple[str, ...]) -> None:
        deadline = time.monotonic() + self.settings.lab_ready_timeout_s
        while True:
            if self.stopping:
                raise LabStopped
            for running in self.services:
                if running.process is not None and running.process.poll() is not None:
                    tail = self.log_path(running.spec).read_text(errors="replace")[-1500:]
                    raise netns.LabError(
                        f"{running.spec.name} exited with code {running.process.returncode} while starting; "
                        f"its log ({self.log_path(running.spec)}) ends:\n{tail}"
                    )
            missing = netns.call_in_namespace(self.central.namespace, lambda: self.not_ready(kinds))
            if not missing:
                return
            if time.monotonic() > deadline:
                raise netns.LabError(f"not ready after {self.settings.lab_ready_timeout_s:.0f} s: {missing}")
            time.sleep(0.5)

    def not_ready(self, kinds: tuple[str, ...]) -> list[str]:
        """What does not answer yet (run inside the central namespace)."""
        from redis import Redis
        from redis.exceptions import RedisError

        client = Redis.from_url(
            self.state.redis_url,
            password=self.secrets.redis_password,
            socket_timeout=2,
            socket_connect_timeout=2,
        )
        missing: list[str] = []
        try:
            client.ping()
            if "redis" in kinds:
                return []
            keys = Keys()
            beating = set()
            for pattern in (keys.bridge_pattern(), keys.worker_pattern()):
                for key in client.scan_iter(match=pattern):
                    raw = client.get(key)
                    if raw is not None:
                        beating.add(json.loads(raw).get("id", ""))
        except (RedisError, OSError, ValueError):
            return ["redis"]
        finally:
            client.close()
        for running in self.services:
            spec = running.spec
            if spec.kind not in kinds:
                continue
            if spec.kind == "signaling" and not _answers(self.state.signaling_url + "/healthz"):
                missing.append(spec.name)
            elif spec.metrics_url and not _answers(spec.metrics_url):
                missing.append(spec.name)
            elif spec.kind in ("bridge", "worker") and spec.argv[spec.argv.index("--id") + 1] not in beating:
                missing.append(spec.name + " (no heartbeat)")
        return missing

    # --- supervising ------------------------------------------------------------------------------
    def supervise_once(self) -> None:
        now = time.monotonic()
        for running in self.services:
            process = running.process
            if self.stopping or running.done or process is None or process.poll() is None:
                continue
            if running.pause_until:
                if now >= running.pause_until:
                    running.pause_until = 0.0
                    running.restarts += 1
                    self.start(running)
                continue
            code = process.returncode
            name = running.spec.name
            if code == 0 and not running.spec.restart_on_clean_exit:
                print(f"lookout lab: {name} ended (exit 0)", flush=True)
                running.done = True
                self.save()
                continue
            verdict = running.backoff.on_exit(name, code, now - running.started)
            if not verdict.restart:
                self.failure = f"{verdict.reason}; see {self.log_path(running.spec)}"
                self.stopping = True
                return
            print(f"lookout lab: {verdict.reason}", flush=True)
            running.pause_until = now + verdict.pause_s
            self.save()

    def run(self) -> None:
        self._check_not_up()  # before anything of ours exists: a failure here must remove nothing
        try:
            self.build()
            self.launch()
            print(describe(self.state, self.lab), flush=True)
            while not self.stopping:
                self.supervise_once()
                time.sleep(0.25)
        except LabStopped:
            pass
        finally:
            print(f"lookout lab: taking lab {self.lab.name} down...", flush=True)
            removed = teardown(self.state, self.state_file, grace_s=self.settings.lab_stop_grace_s)
            print(f"lookout lab: {removed}", flush=True)
        if self.failure:
            raise netns.LabError(self.failure)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def describe(state: LabState, lab: LabFile) -> str:
    """Where everything is: hosts, addresses, services and their endpoints, links, files."""
    lines = [f"lookout lab: lab {state.lab} is up (Ctrl-C here, or `lookout lab down`, takes it down)", ""]
    rows = [("host", "role", "namespace", "address", "services")]
    for host in state.hosts:
        services = []
        for process in state.processes:
            if process.host != host.name:
                continue
            where = f" {process.metrics_url}" if process.metrics_url else ""
            services.append(f"{process.kind} pid {process.pid}{where}")
        if host.role is Role.CENTRAL:
            services.insert(0, f"page {state.signaling_url}/, redis {state.redis_url}")
        rows.append((host.name, host.role.value, host.namespace, host.address, "; ".join(services)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines += [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=False)) + "  " + row[4]
        for row in rows
    ]
    lines.append("")
    for link in lab.links:
        extra = []
        if link.delay_ms:
            extra.append(f"delay {link.delay_ms:g} ms")
        if link.loss_percent:
            extra.append(f"loss {link.loss_percent:g} %")
        note = ""
        if extra:
            note = f", {' and '.join(extra)}" + ("" if state.netem else " NOT applied (no sch_netem)")
        lines.append(f"link {link.label}: {link.rate_mbit:g} Mbit/s each way{note}")
    run_dir = Path(state.run_dir)
    lines += [
        f"switch: bridge {plan.SWITCH_BRIDGE} in namespace {state.switch_namespace}",
        f"state: {run_dir / 'state.json'}  logs: {run_dir / 'logs'}/  detections: {run_dir / 'out'}/",
        f"recording: {state.record_csv} and {state.summary_json} (every {state.record_interval_s:g} s)",
        f"a shell on a host: ip netns exec {state.hosts[0].namespace} bash",
    ]
    return "\n".join(lines)


def run_lab_up(lab: LabFile, lab_file: Path, settings: LabSettings) -> int:
    netns.require_root()
    missing = [str(video) for video in plan.videos(lab, settings.lab_video_dir) if not video.is_file()]
    if missing:
        raise LabFileError(
            f"no such video file: {missing[0]} (relative paths are under LOOKOUT_LAB_VIDEO_DIR)"
        )
    runner = LabUp(lab, lab_file, settings)
    signal.signal(signal.SIGTERM, runner.request_stop)
    signal.signal(signal.SIGINT, runner.request_stop)
    print(
        f"lookout lab: building lab {lab.name}: {len(lab.hosts)} hosts, {len(lab.links)} shaped links",
        flush=True,
    )
    runner.run()
    return 0
