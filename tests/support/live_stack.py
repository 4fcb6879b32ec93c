"""The live stack as real processes: redis-server, `lookout signaling`, bridges and workers.

Tests that kill one part need each part's process, so they start them one by one here rather than with
`lookout up` (which tests/lookout/test_up.py covers). ICE is loopback-only on both sides.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

from redis import Redis

from tests.support.processes import LookoutProcess, poll_until
from tests.support.redis_server import RedisServer, free_port
from wire.keys import Keys

READY_TIMEOUT_S = 90.0  # imports and model loading on a busy 2-core machine


class LiveStack:
    def __init__(self, name: str, model_dir: Path, *, bridges: int, workers: int) -> None:
        self.name = name
        self.redis_server = RedisServer()
        self.model_dir = model_dir
        self.port = free_port()
        self.keys = Keys()
        self.signaling: LookoutProcess | None = None
        self.bridges: dict[str, LookoutProcess] = {}
        self.workers: dict[str, LookoutProcess] = {}
        self._counts = (bridges, workers)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "LOOKOUT_REDIS_URL": self.redis_server.url,
            "LOOKOUT_MODEL_DIR": str(self.model_dir),
            "LOOKOUT_ICE_HOST_ADDRESSES": "127.0.0.1",
            "LOOKOUT_THREADS": "1",
            # Bridge loss shows within ~7 s; generous enough that a busy machine does not fake one.
            "LOOKOUT_HEARTBEAT_INTERVAL_S": "0.5",
            "LOOKOUT_HEARTBEAT_TTL_S": "6",
            "LOOKOUT_OFFER_TIMEOUT_S": "30",
        }

    def start(self) -> LiveStack:
        self.redis_server.start()
        self.signaling = LookoutProcess(
            f"{self.name}-signaling", ["signaling", "--host", "127.0.0.1", "--port", str(self.port)], self.env
        )
        bridges, workers = self._counts
        for i in range(bridges):
            name = f"{self.name}-bridge{i}"
            self.bridges[name] = LookoutProcess(name, ["bridge", "--id", name], self.env)
        for i in range(workers):
            name = f"{self.name}-worker{i}"
            self.workers[name] = LookoutProcess(name, ["worker", "--id", name], self.env)
        self.wait_ready()
        return self

    def kill_signaling(self) -> None:
        """``kill -9`` signaling: its sockets drop at once and it ends no session itself."""
        assert self.signaling is not None
        self.signaling.kill9()

    def restart_signaling(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Start signaling again on its port; returns when it is healthy (the wall clock, ``time.time()``)."""
        assert self.signaling is not None and not self.signaling.alive()
        self.signaling.stop()
        self._signaling_starts = getattr(self, "_signaling_starts", 1) + 1
        self.signaling = LookoutProcess(
            f"{self.name}-signaling-{self._signaling_starts}",
            ["signaling", "--host", "127.0.0.1", "--port", str(self.port)],
            self.env,
        )
        if not poll_until(self.healthy, timeout_s, [self.signaling]):
            raise AssertionError(f"signaling not healthy again after {timeout_s:.0f} s\n{self.logs()}")
        return time.time()

    def restart_bridge(self, name: str, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Start a killed bridge again under its id; returns when its heartbeat is back (``time.time()``)."""
        old = self.bridges[name]
        assert not old.alive(), f"{name} still runs"
        old.stop()
        again = self.bridges[name] = LookoutProcess(f"{name}-again", ["bridge", "--id", name], self.env)
        back = poll_until(lambda: name in self.live(self.keys.bridge_pattern()), timeout_s, [again])
        if not back:
            raise AssertionError(f"{name} not registered again after {timeout_s:.0f} s\n{self.logs()}")
        return time.time()

    def live(self, pattern: str) -> set[str]:
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

    def wait_ready(self) -> None:
        def ready() -> bool:
            return (
                self.live(self.keys.bridge_pattern()) >= set(self.bridges)
                and self.live(self.keys.worker_pattern()) >= set(self.workers)
                and self.healthy()
            )

        if not poll_until(ready, READY_TIMEOUT_S, self.processes()):
            raise AssertionError(f"stack not ready after {READY_TIMEOUT_S:.0f} s\n{self.logs()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def processes(self) -> list[LookoutProcess]:
        return [*([self.signaling] if self.signaling else []), *self.bridges.values(), *self.workers.values()]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log()[-3000:]}" for p in self.processes())

    def stop(self) -> None:
        # SIGTERM to every worker and bridge at once, then wait: teardown takes the slowest, not the sum.
        parts = [*self.workers.values(), *self.bridges.values()]
        for process in parts:
            process.signal(signal.SIGTERM)
        for process in parts:
            process.stop()
        if self.signaling:
            self.signaling.stop()
        self.redis_server.stop()
