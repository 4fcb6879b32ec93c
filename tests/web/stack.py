"""The live stack as separate real processes, for browser tests that kill one part of it.

``lookout up`` starts the same parts in one command; tests that need the pid of one bridge or one worker
start them one by one here instead: a redis-server, ``lookout signaling``, bridges and workers.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

from redis import Redis

from tests.support.processes import LookoutProcess
from tests.support.redis_server import RedisServer, free_port
from wire.keys import Keys

READY_TIMEOUT_S = 60.0  # model loading and imports on a busy 2-core machine
STOP_TIMEOUT_S = 10.0  # SIGTERM, then SIGKILL: a clean stop takes well under a second


def stack_env(redis_url: str, model_dir: Path) -> dict[str, str]:
    """Settings every part reads: one Redis, the shared models, loopback-only ICE for headless Chromium."""
    return {
        "LOOKOUT_REDIS_URL": redis_url,
        "LOOKOUT_MODEL_DIR": str(model_dir),
        "LOOKOUT_ICE_HOST_ADDRESSES": "127.0.0.1",
        "LOOKOUT_THREADS": "1",
        "LOOKOUT_LOG_LEVEL": "INFO",
    }


class LiveStack:
    """Redis, one signaling replica, ``bridges`` media bridges and ``workers`` inference workers."""

    def __init__(self, name: str, model_dir: Path, *, bridges: int = 1, workers: int = 1) -> None:
        self.name = name
        self.redis_server = RedisServer()
        self.model_dir = model_dir
        self.port = free_port()
        self.n_bridges = bridges
        self.n_workers = workers
        self.signaling: LookoutProcess | None = None
        self.bridges: dict[str, LookoutProcess] = {}
        self.workers: dict[str, LookoutProcess] = {}
        self.keys = Keys()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def env(self) -> dict[str, str]:
        return stack_env(self.redis_server.url, self.model_dir)

    def start(self) -> LiveStack:
        self.redis_server.start()
        self.signaling = LookoutProcess(
            f"{self.name}-signaling",
            ["signaling", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
        )
        for i in range(self.n_bridges):
            self.add_bridge(f"{self.name}-b{i}")
        for i in range(self.n_workers):
            self.add_worker(f"{self.name}-w{i}")
        self.wait_ready()
        return self

    def add_bridge(self, bridge_id: str) -> LookoutProcess:
        process = LookoutProcess(bridge_id, ["bridge", "--id", bridge_id], env=self.env)
        self.bridges[bridge_id] = process
        return process

    def add_worker(self, worker_id: str) -> LookoutProcess:
        process = LookoutProcess(worker_id, ["worker", "--id", worker_id], env=self.env)
        self.workers[worker_id] = process
        return process

    def live(self, pattern: str) -> set[str]:
        """Ids with an unexpired heartbeat under ``pattern`` (Keys.worker_pattern / bridge_pattern)."""
        client = Redis.from_url(self.redis_server.url)
        try:
            found = set()
            for key in client.scan_iter(match=pattern):
                raw = client.get(key)
                if raw is not None:
                    found.add(json.loads(raw)["id"])
            return found
        finally:
            client.close()

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until the page is served and every bridge and worker has sent a heartbeat."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if (
                self.live(self.keys.bridge_pattern()) >= set(self.bridges)
                and self.live(self.keys.worker_pattern()) >= set(self.workers)
                and self.page_served()
            ):
                return
            time.sleep(0.2)
        raise AssertionError(f"stack {self.name} not ready after {timeout_s:.0f} s\n{self.logs()}")

    def page_served(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def check_alive(self) -> None:
        for process in self.processes():
            if not process.alive() and process.process.returncode not in (0, -9):
                raise AssertionError(
                    f"{process.name} exited with {process.process.returncode}\n{process.log()}"
                )

    def processes(self) -> list[LookoutProcess]:
        parts = [self.signaling] if self.signaling else []
        return [*parts, *self.bridges.values(), *self.workers.values()]

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name} ---\n{p.log_path.read_text(errors='replace')[-3000:]}" for p in self.processes()
        )

    def stop(self) -> None:
        # Workers and bridges first, so nothing reports a lost signaling or Redis on its way out; all of
        # them at once, so that one slow to stop does not make the others wait.
        parts = [*self.workers.values(), *self.bridges.values()]
        for process in parts:
            process.signal(signal.SIGTERM)
        for process in parts:
            process.stop(timeout=STOP_TIMEOUT_S)
        if self.signaling:
            self.signaling.stop(timeout=STOP_TIMEOUT_S)
        self.redis_server.stop()
