"""`lookout up` as a real process: everything comes up, a dead child is restarted, SIGTERM stops it all."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from redis import Redis

from lookout.cli import main
from tests.support.processes import LookoutProcess
from tests.support.redis_server import free_port
from wire.keys import Keys

pytestmark = pytest.mark.slow


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(p) for p in text)
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def heartbeats(redis: Redis, pattern: str) -> dict[str, dict[str, object]]:
    found = {}
    for key in redis.scan_iter(match=pattern):
        raw = redis.get(key)
        if raw is not None:
            info = json.loads(raw)
            found[info["id"]] = info
    return found


def test_up_starts_supervises_and_stops_everything(shared_dir: Path) -> None:
    port, redis_port = free_port(), free_port()
    env = {
        "LOOKOUT_MODEL_DIR": str(shared_dir / "models"),
        "LOOKOUT_HEARTBEAT_INTERVAL_S": "0.5",
        "LOOKOUT_HEARTBEAT_TTL_S": "6",
        "LOOKOUT_ICE_HOST_ADDRESSES": "127.0.0.1",
    }
    up = LookoutProcess(
        "up",
        ["up", "--host", "127.0.0.1", "--port", str(port), "--redis-port", str(redis_port), "--workers", "1"],
        env,
    )
    keys = Keys()
    redis = Redis.from_url(f"redis://127.0.0.1:{redis_port}/0")
    try:
        wait_for(lambda: "lookout up: ready at" in up.log() or not up.alive(), 120, "`lookout up` ready")
        assert up.alive(), up.log()
        assert f"http://127.0.0.1:{port}/" in up.log()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            assert reply.status == 200
        workers = heartbeats(redis, keys.worker_pattern())
        bridges = heartbeats(redis, keys.bridge_pattern())
        assert len(workers) == 1 and next(iter(workers.values()))["model"] == "yolox_nano"
        assert len(bridges) == 1
        pids = children(up.pid)
        assert len(pids) == 4  # redis, signaling, bridge, worker
        # The embedded Redis has no password: it must stay on loopback, whatever --host says.
        assert redis.config_get("bind") == {"bind": "127.0.0.1"}

        # A child that dies is restarted.
        (old_bridge,) = bridges.values()
        os.kill(int(old_bridge["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
        wait_for(
            lambda: any(
                b["pid"] != old_bridge["pid"] for b in heartbeats(redis, keys.bridge_pattern()).values()
            ),
            60,
            "a restarted bridge",
        )
        assert "restarting" in up.log()
        pids |= children(up.pid)
    finally:
        redis.close()
        code = up.stop(timeout=60)
    log = up.log_path.read_text(errors="replace")
    assert code == 0, log
    assert "lookout up: stopped" in log
    wait_for(lambda: not any(running(p) for p in pids), 20, "no orphan processes")


def test_a_part_with_a_bad_setting_stops_the_stack_with_its_line(shared_dir: Path) -> None:
    env = {
        "LOOKOUT_MODEL_DIR": str(shared_dir / "models"),
        "LOOKOUT_IN_FLIGHT": "0",
    }  # only the bridge reads it
    up = LookoutProcess(
        "up-bad-bridge", ["up", "--host", "127.0.0.1", "--port", str(free_port()), "--workers", "1"], env
    )
    try:
        wait_for(lambda: not up.alive(), 120, "`lookout up` to give up")
    finally:
        code = up.stop(timeout=60)
    log = up.log_path.read_text(errors="replace")
    assert code == 2, log
    last = log.strip().splitlines()[-1]
    assert last.startswith("lookout: error: bridge-0 cannot start with this configuration: ")
    assert "LOOKOUT_IN_FLIGHT: Input should be greater than or equal to 1" in last
    assert "restarting" not in log


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--workers", "0"], "--workers: Input should be greater than or equal to 1"),
        (["--redis-url", "http://nope"], "--redis-url: must be 'embedded' or a Redis URL"),
        (["--port", "{busy}"], "cannot listen on 127.0.0.1"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args = [a.replace("{busy}", str(busy.getsockname()[1])) for a in args]
        assert main(["up", "--host", "127.0.0.1", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lookout: error: ") and says in err[-1]


def test_signaling_binds_loopback_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    from lookout.up import Stack
    from wire.config import UpSettings

    monkeypatch.delenv("LOOKOUT_HOST", raising=False)

    def host_of(stack: Stack) -> str:
        argv = stack.signaling.argv
        return argv[argv.index("--host") + 1]

    assert host_of(Stack(UpSettings(_env_file=None, workers=1))) == "127.0.0.1"  # type: ignore[call-arg]
    told = Stack(UpSettings(_env_file=None, workers=1, host="0.0.0.0"))  # type: ignore[call-arg]
    assert host_of(told) == "0.0.0.0"
