"""The Redis ACL users of docs/deployment.md, run exactly as documented on a real redis-server.

A worker process under ``lookout-worker`` serves a frame that a FrameClient under ``lookout-bridge``
submitted; each role is refused what it must not do (a worker forging a bridge request or a session
record, a bridge taking frames from the consumer group).
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from tests.inference.worker_helpers import video_jpegs
from tests.support.processes import REPO, LookoutProcess, wait_heartbeat
from tests.support.redis_server import RedisServer
from wire.client import FrameClient
from wire.config import StreamSettings
from wire.keys import WORKER_GROUP, Keys
from wire.messages import ResultMessage

ADMIN_PASSWORD = "admin-pw"
REDIS_7 = shutil.which("redis-server", path="/usr/bin")
"""Debian's redis-server 7: the read-only and write-only key patterns (%R~, %W~) need Redis 7."""

MODEL = "yolox_nano"
ROLES = ("worker", "bridge", "signaling")


def documented_acl_lines() -> dict[str, list[str]]:
    """role -> the arguments of its documented ``ACL SETUSER`` line."""
    text = (REPO / "docs" / "deployment.md").read_text()
    lines = re.findall(r"^ACL SETUSER lookout-(\w+) (.+)$", text, flags=re.MULTILINE)
    return {role: shlex.split(rest) for role, rest in lines}


def password_of(role: str) -> str:
    return f"{role}-pw"


def url_of(server: RedisServer, role: str) -> str:
    return f"redis://lookout-{role}:{password_of(role)}@127.0.0.1:{server.port}/0"


@pytest.fixture(scope="module")
def acl_redis() -> Iterator[RedisServer]:
    if REDIS_7 is None:
        pytest.skip("no Redis 7 at /usr/bin/redis-server (the ACL lines use %R~ and %W~)")
    server = RedisServer(binary=REDIS_7, password=ADMIN_PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def users(acl_redis: RedisServer) -> AsyncIterator[RedisServer]:
    admin = Redis.from_url(acl_redis.url)
    for role, args in documented_acl_lines().items():
        placeholder = f">{role.upper()}_PASSWORD"
        assert placeholder in args, role
        args = [f">{password_of(role)}" if a == placeholder else a for a in args]
        await admin.execute_command("ACL", "SETUSER", f"lookout-{role}", *args)  # type: ignore[no-untyped-call]
    await admin.aclose()
    yield acl_redis


def test_every_role_has_a_documented_line() -> None:
    assert sorted(documented_acl_lines()) == sorted(ROLES)


async def test_a_worker_serves_a_bridges_frame_and_neither_may_do_the_others_job(
    users: RedisServer, shared_dir: Path, video_path: Path
) -> None:
    keys = Keys()
    name = "acl-worker"
    args = ["worker", "--redis-url", url_of(users, "worker"), "--id", name, "--threads", "1"]
    worker = LookoutProcess(name, args, env={"LOOKOUT_MODEL_DIR": str(shared_dir / "models")})
    bridge = Redis.from_url(url_of(users, "bridge"))
    as_worker = Redis.from_url(url_of(users, "worker"))
    try:
        wait_heartbeat(users.url, keys.worker(name), name, 90, [worker])
        jpeg, width, height = video_jpegs(video_path, 1)[0]
        async with FrameClient(bridge, settings=StreamSettings(frame_deadline_ms=60_000)) as client:
            seq, future = await client.submit(jpeg, model=MODEL, width=width, height=height)
            outcome = await client.wait(seq, future, model=MODEL, timeout_s=30)
            results = keys.results(client.session)
        assert isinstance(outcome, ResultMessage) and outcome.worker == name, worker.log()[-3000:]
        assert await bridge.xlen(results) >= 1  # the bridge reads its session's results
        with pytest.raises(NoPermissionError):
            await as_worker.set(keys.session(client.session), "forged")
        with pytest.raises(NoPermissionError):
            await bridge.xreadgroup(WORKER_GROUP, "intruder", {keys.frames(MODEL): ">"}, count=1)
        with pytest.raises(NoPermissionError):
            await as_worker.xadd(keys.bridge_requests("b1"), {"x": "1"})
    finally:
        await bridge.aclose()
        await as_worker.aclose()
        assert worker.stop() == 0
