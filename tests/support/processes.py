"""Start `lookout` subcommands as real processes in tests, with their logs kept for failures."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output"


def run_lookout(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run `python -m lookout ARGS...` to its end; ``env`` adds to this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "lookout", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


class LookoutProcess:
    """A `python -m lookout ARGS...` child; its output goes to test-output/logs/NAME.log."""

    def __init__(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.log_path = OUTPUT / "logs" / f"{name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lookout", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=REPO,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        if not self._log.closed:  # stop() closes it
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.alive():
            self.process.send_signal(sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return self.process.returncode


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.1, what: str = "condition"
) -> None:
    """Poll an async predicate until it holds; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


async def wait_ok(url: str, what: str, timeout: float = 60) -> None:
    """From an async test: poll ``url`` with aiohttp until it answers 200 (``wait_http`` blocks)."""
    import aiohttp

    async def answers() -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(url) as reply:
                return reply.status == 200
        except aiohttp.ClientError:
            return False

    await wait_until(answers, timeout=timeout, what=what)


def poll_until(check: Callable[[], bool], timeout: float, alive: list[LookoutProcess] | None) -> bool:
    """Call ``check`` every 0.2 s until it holds (True) or ``timeout`` passes (False).

    Fails at once if a process in ``alive`` exits meanwhile, with the end of its log.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in alive or []:
            assert process.alive(), f"{process.name} exited while starting:\n{process.log()[-3000:]}"
        if check():
            return True
        time.sleep(0.2)
    return False


def wait_http(url: str, what: str, timeout: float, alive: list[LookoutProcess] | None = None) -> None:
    """Poll ``url`` until it answers 200; fail at once if a process in ``alive`` exits meanwhile."""

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    if not poll_until(answers, timeout, alive):
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} at {url}")


def wait_heartbeat(
    redis_url: str, pattern: str, what: str, timeout: float, alive: list[LookoutProcess] | None = None
) -> None:
    """Wait until a heartbeat key matching ``pattern`` exists; fail at once if a process exits."""
    from redis import Redis

    client = Redis.from_url(redis_url)
    try:
        if not poll_until(lambda: next(client.scan_iter(match=pattern), None) is not None, timeout, alive):
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for a heartbeat of {what}")
    finally:
        client.close()
