"""Process control for the chaos test: a live stack whose parts can be killed, and `lookout stream` clients.

The stack is tests/support/live_stack.py's (loopback ICE, short heartbeats), with one bridge that serves
/metrics so that ``tests.support.chaos`` can count what it samples. A restarted bridge gets a fresh id, as
one does by default; a restarted worker or signaling process keeps its id or port.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.support.chaos import read_bridge_metrics, read_json_lines
from tests.support.live_stack import LiveStack
from tests.support.processes import LookoutProcess, poll_until
from tests.support.redis_server import free_port


def log_text(process: LookoutProcess) -> str:
    """A process's log so far, also after it ended (its file handle is closed then)."""
    return process.log_path.read_text(errors="replace") if process.log_path.exists() else ""


class StreamClient:
    """One `lookout stream` process: a looping file at 10 fps, its detections as JSON lines."""

    def __init__(
        self, name: str, stack: LiveStack, source: Path, out: Path, *, fps: float, extra: Iterable[str] = ()
    ) -> None:
        self.name = name
        self.out = out
        out.unlink(missing_ok=True)
        args = [
            "stream",
            str(source),
            "--server",
            stack.url,
            "--loop",
            "--fps",
            f"{fps:g}",
            "--out",
            str(out),
        ]
        self.process = LookoutProcess(name, [*args, *extra], stack.env)
        self.exited_by_itself = False
        self.ended_wall_s: float | None = None
        """When it was seen to have ended by itself (``note_exit``), or was stopped."""

    def note_exit(self) -> None:
        if self.ended_wall_s is None and not self.process.alive():
            self.ended_wall_s = time.time()

    def streamed_s(self) -> float:
        """Seconds from its first result to its end: the time its frames should have been sampled."""
        stamps = [m["received_ms"] / 1000.0 for m in self.messages() if m.get("type") == "detections"]
        return max(0.0, (self.ended_wall_s or time.time()) - min(stamps)) if stamps else 0.0

    def messages(self) -> list[dict[str, Any]]:
        return read_json_lines(self.out)

    def results(self) -> int:
        return sum(1 for m in self.messages() if m.get("type") == "detections")

    def stop(self) -> int:
        """SIGTERM (a requested stop) unless it has already ended; returns its exit code."""
        self.exited_by_itself = not self.process.alive()
        self.note_exit()
        if self.ended_wall_s is None:
            self.ended_wall_s = time.time()
        self.process.signal(signal.SIGTERM)
        return self.process.stop(timeout=20)


# --- the stack and its faults ---------------------------------------------------------------------------
class ChaosStack:
    """A LiveStack with one bridge that serves /metrics, and the means to kill and restart its parts."""

    def __init__(self, model_dir: Path, *, workers: int = 2) -> None:
        self.live = LiveStack("chaos", model_dir, bridges=0, workers=workers)
        self.bridge_name = "chaos-bridge"
        self.bridge_metrics_port = free_port()
        self.incarnation = {"bridge": 0, "signaling": 0}
        self.bridge_logs: list[LookoutProcess] = []

    @property
    def bridge_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.bridge_metrics_port}/metrics"

    def start(self) -> ChaosStack:
        self.live.start()
        self.start_bridge()
        return self

    def start_bridge(self) -> None:
        """A bridge under a fresh id (as a restarted bridge gets by default), wait for its heartbeat."""
        self.incarnation["bridge"] += 1
        name = f"{self.bridge_name}{self.incarnation['bridge']}"
        args = ["bridge", "--id", name, "--metrics-port", str(self.bridge_metrics_port)]
        process = LookoutProcess(name, args, self.live.env)
        self.live.bridges = {name: process}
        self.bridge_logs.append(process)
        self.live.wait_ready()
        wait_metrics = poll_until(self._metrics_answer, 30, [process])
        assert wait_metrics, f"{name}: no /metrics\n{process.log()[-2000:]}"

    def _metrics_answer(self) -> bool:
        try:
            read_bridge_metrics(self.bridge_metrics_url)
            return True
        except OSError:
            return False

    @property
    def bridge(self) -> LookoutProcess:
        return next(iter(self.live.bridges.values()))

    def restart_signaling(self) -> None:
        self.incarnation["signaling"] += 1
        self.live.signaling = LookoutProcess(
            f"chaos-signaling-{self.incarnation['signaling'] + 1}",
            ["signaling", "--host", "127.0.0.1", "--port", str(self.live.port)],
            self.live.env,
        )

    def restart_worker(self, name: str) -> None:
        self.live.workers[name] = LookoutProcess(f"{name}-again", ["worker", "--id", name], self.live.env)

    def kill_redis(self) -> None:
        server = self.live.redis_server
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        server.process = None

    def ensure_whole(self) -> None:
        """Before a scenario: every part alive and registered (a failed scenario may have left one dead)."""
        if self.live.signaling is None or not self.live.signaling.alive():
            self.restart_signaling()
        for name, worker in list(self.live.workers.items()):
            if not worker.alive():
                self.restart_worker(name)
        if not self.bridge.alive():
            self.start_bridge()
        self.live.wait_ready()

    def stop(self) -> None:
        self.live.stop()
