"""The Redis ACL users of docs/deployment.md, run exactly as documented on a real Redis 7 with TLS.

The server has an admin password and a TLS port that verifies client certificates. Real signaling, a
real bridge and a real worker, each under its own ACL user on ``rediss://`` (user and password in the
URL for two of them, in settings for the third), serve a REST detection and a WebRTC session end to
end. Direct redis-py calls under each user show what each role is refused: a worker reading a
session's results, a bridge or signaling taking or acking frames, signaling beating a worker's
heartbeat; and a client's timeout under the bridge's user, which may not XACK, is still counted once.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, ResponseError

from tests.support.certificates import TlsFiles, make_tls_files, redis_tls_args
from tests.support.processes import REPO, LookoutProcess, poll_until, wait_heartbeat
from tests.support.redis_server import RedisServer, free_port
from wire.client import FrameClient, StreamReply
from wire.keys import WORKER_GROUP, Keys
from wire.messages import DropReason, DropRecord, DropSite
from wire.outcomes import Ack, drop_counts, publish_outcome

ADMIN_PASSWORD = "admin-pw"
REDIS_7 = shutil.which("redis-server", path="/usr/bin")
"""Debian's redis-server 7 (built with TLS): the read-only and write-only key patterns need Redis 7."""

MODEL = "yolox_nano"
ROLES = ("worker", "bridge", "signaling")


def documented_acl_lines() -> dict[str, list[str]]:
    """role -> the arguments of its documented ``ACL SETUSER`` line."""
    text = (REPO / "docs" / "deployment.md").read_text()
    lines = re.findall(r"^ACL SETUSER lookout-(\w+) (.+)$", text, flags=re.MULTILINE)
    return {role: shlex.split(rest) for role, rest in lines}


def password_of(role: str) -> str:
    return f"{role}-pw"


class AclRedis:
    """The server, its TLS port and files, with the documented users set up."""

    def __init__(self, server: RedisServer, tls_port: int, files: TlsFiles) -> None:
        self.server = server
        self.tls_port = tls_port
        self.files = files

    def url(self, role: str, *, tls: bool = True) -> str:
        """``role``'s URL with its user and password in it."""
        scheme, port = ("rediss", self.tls_port) if tls else ("redis", self.server.port)
        return f"{scheme}://lookout-{role}:{password_of(role)}@127.0.0.1:{port}/0"

    @property
    def tls_options(self) -> dict[str, Any]:
        return {
            "ssl_ca_certs": str(self.files.ca),
            "ssl_certfile": str(self.files.client_cert),
            "ssl_keyfile": str(self.files.client_key),
        }

    @property
    def tls_env(self) -> dict[str, str]:
        return {
            "LOOKOUT_REDIS_CA_FILE": str(self.files.ca),
            "LOOKOUT_REDIS_CERT_FILE": str(self.files.client_cert),
            "LOOKOUT_REDIS_KEY_FILE": str(self.files.client_key),
        }

    def client(self, role: str) -> Redis:
        """An asyncio client under ``role``'s user, over TLS."""
        return Redis.from_url(self.url(role), **self.tls_options)


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    if REDIS_7 is None:
        pytest.skip("no Redis 7 at /usr/bin/redis-server (the ACL lines use %R~ and %W~)")
    files = make_tls_files(tmp_path_factory.mktemp("acl-tls"))
    tls_port = free_port()
    server = RedisServer(binary=REDIS_7, password=ADMIN_PASSWORD, extra_args=redis_tls_args(files, tls_port))
    server.start()
    yield AclRedis(server, tls_port, files)
    server.stop()


@pytest.fixture(scope="module")
def users(acl_redis: AclRedis) -> AclRedis:
    admin = SyncRedis.from_url(acl_redis.server.url)
    for role, args in documented_acl_lines().items():
        placeholder = f">{role.upper()}_PASSWORD"
        assert placeholder in args, role
        args = [f">{password_of(role)}" if a == placeholder else a for a in args]
        admin.execute_command("ACL", "SETUSER", f"lookout-{role}", *args)  # type: ignore[no-untyped-call]
    admin.close()
    return acl_redis


@pytest.fixture
async def admin(acl_redis: AclRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(acl_redis.server.url)
    yield client
    await client.aclose()


def test_every_role_has_a_documented_line() -> None:
    assert sorted(documented_acl_lines()) == sorted(ROLES)


async def test_each_role_is_refused_what_it_must_not_do(users: AclRedis, admin: Redis) -> None:
    keys = Keys()
    results = keys.results("acl-session")
    frames = keys.frames("acl-refused")
    await admin.xadd(results, {"kind": "result", "body": "{}"})
    await admin.xgroup_create(frames, WORKER_GROUP, id="0", mkstream=True)
    entry = cast(bytes, await admin.xadd(frames, {"x": "1"})).decode()
    worker, bridge, signaling = (users.client(role) for role in ROLES)
    try:
        # A worker writes result streams and cannot read any.
        assert await worker.xadd(results, {"kind": "result", "body": "{}"})
        for read in (
            worker.xread({results: "0-0"}),
            worker.xrange(results),
            worker.xrevrange(results),
            worker.xinfo_stream(results),
        ):
            with pytest.raises(NoPermissionError):
                await read
        with pytest.raises(NoPermissionError):
            await worker.set(keys.session("acl-session"), "forged")
        with pytest.raises(NoPermissionError):
            await worker.xadd(keys.bridge_requests("b1"), {"x": "1"})
        # A bridge publishes frames and reads results; it cannot take frames, nor ack them, even in a script.
        assert await bridge.xadd(frames, {"x": "2"})
        assert await bridge.xrange(results)
        with pytest.raises(NoPermissionError):
            await bridge.xack(frames, WORKER_GROUP, entry)
        with pytest.raises(ResponseError, match=r"(?i)no permissions|can.t run this command"):
            await bridge.eval(
                "return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])", 1, frames, WORKER_GROUP, entry
            )
        with pytest.raises(NoPermissionError):
            await bridge.xreadgroup(WORKER_GROUP, "intruder", {frames: ">"}, count=1)
        # Signaling reads results and submits REST frames; it cannot take or ack frames, nor fake a worker.
        assert await signaling.xrange(results)
        with pytest.raises(NoPermissionError):
            await signaling.xack(frames, WORKER_GROUP, entry)
        with pytest.raises(NoPermissionError):
            await signaling.xreadgroup(WORKER_GROUP, "intruder", {frames: ">"}, count=1)
        with pytest.raises(NoPermissionError):
            await signaling.set(keys.worker("forged"), "{}")
        assert (await admin.xpending(frames, WORKER_GROUP))["pending"] == 0
    finally:
        for client in (worker, bridge, signaling):
            await client.aclose()


async def test_a_timeout_under_the_bridge_user_is_counted_once_without_xack(
    users: AclRedis, admin: Redis
) -> None:
    keys = Keys()
    model = "acl-timeout"
    frames = keys.frames(model)
    await admin.xgroup_create(frames, WORKER_GROUP, id="0", mkstream=True)
    bridge, worker = users.client("bridge"), users.client("worker")
    try:
        async with FrameClient(bridge, keys=keys, site=DropSite.BRIDGE) as client:
            # Never delivered: the bridge's claim deletes it, so no worker reads it.
            never = await client.detect(b"jpeg", model=model, width=1, height=1, timeout_s=0.3)
            assert isinstance(never, DropRecord) and never.reason is DropReason.TIMEOUT
            assert await admin.xlen(frames) == 0
            # Held by a worker (as if dead): marked, counted once; the worker's late end publishes nothing.
            seq, future = await client.submit(b"jpeg", model=model, width=1, height=1)
            reply = cast(StreamReply, await worker.xreadgroup(WORKER_GROUP, "dead", {frames: ">"}))
            assert reply is not None
            [[_stream, [(raw_entry, _fields)]]] = reply
            entry = raw_entry.decode()
            held = await client.wait(seq, future, model=model, timeout_s=0.3)
            assert isinstance(held, DropRecord) and held.reason is DropReason.TIMEOUT
            late = DropRecord(
                session=client.session, seq=seq, model=model, reason=DropReason.DEADLINE, site=DropSite.WORKER
            )
            ack = Ack(frames, WORKER_GROUP, entry)
            assert not await publish_outcome(worker, keys, late, maxlen=100, ttl_s=60, ack=ack)
        assert await drop_counts(admin, keys, model) == {"timeout": 2}
        assert (await admin.xpending(frames, WORKER_GROUP))["pending"] == 0
        assert await admin.exists(keys.timed_out(model, entry)) == 0
        assert await admin.xlen(keys.results(client.session)) == 0  # the late end published nothing
    finally:
        await bridge.aclose()
        await worker.aclose()


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def test_each_role_under_its_own_user_on_tls_serves_rest_and_webrtc_end_to_end(
    users: AclRedis, shared_dir: Path, video_path: Path, tmp_path: Path
) -> None:
    keys = Keys()
    common = {
        "LOOKOUT_MODEL_DIR": str(shared_dir / "models"),
        "LOOKOUT_ICE_HOST_ADDRESSES": "127.0.0.1",
        "LOOKOUT_API_KEY": "",
        "LOOKOUT_THREADS": "1",
        "LOOKOUT_HEARTBEAT_INTERVAL_S": "0.5",
        "LOOKOUT_HEARTBEAT_TTL_S": "6",
        **users.tls_env,
    }
    port = free_port()
    http = f"http://127.0.0.1:{port}"
    plain_url = f"rediss://127.0.0.1:{users.tls_port}/0"  # the worker's user and password come from settings
    worker_env = {"LOOKOUT_REDIS_USERNAME": "lookout-worker", "LOOKOUT_REDIS_PASSWORD": password_of("worker")}
    worker = LookoutProcess(
        "acl-worker",
        ["worker", "--id", "acl-worker", "--redis-url", plain_url],
        common | worker_env,
    )
    bridge = LookoutProcess(
        "acl-bridge", ["bridge", "--id", "acl-bridge", "--redis-url", users.url("bridge")], common
    )
    signaling = LookoutProcess(
        "acl-signaling",
        ["signaling", "--host", "127.0.0.1", "--port", str(port), "--redis-url", users.url("signaling")],
        common,
    )
    processes = [worker, bridge, signaling]
    stream: LookoutProcess | None = None
    try:
        wait_heartbeat(users.server.url, keys.worker("acl-worker"), "acl-worker", 120, processes)
        wait_heartbeat(users.server.url, keys.bridge("acl-bridge"), "acl-bridge", 60, processes)
        assert poll_until(lambda: healthy(http), 60, processes), signaling.log()[-3000:]

        image = (shared_dir / "data" / "images" / "dog.jpg").read_bytes()
        request = urllib.request.Request(
            f"{http}/api/v1/detect", data=image, headers={"Content-Type": "image/jpeg"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            assert reply.status == 200
            body: dict[str, Any] = json.loads(reply.read())
        assert {"dog", "bicycle", "car"} <= {d["label"] for d in body["detections"]}, body
        assert body["worker"] == "acl-worker"

        out = tmp_path / "stream.jsonl"
        stream = LookoutProcess(
            "acl-stream",
            [
                "stream",
                str(video_path),
                "--server",
                http,
                "--fps",
                "5",
                "--duration",
                "12",
                "--out",
                str(out),
            ],
            common,
        )
        try:
            stream.process.wait(90)  # --duration 12 ends it
        except subprocess.TimeoutExpired:
            pass
        assert stream.stop() == 0, stream.log()[-3000:]
        lines = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        labels = {d["label"] for m in lines if m.get("type") == "detections" for d in m["detections"]}
        assert "person" in labels, (lines[-3:], bridge.log()[-2000:])
    finally:
        if stream is not None:
            stream.stop()
        for process in processes:
            process.signal(15)
        codes = {p.name: p.stop() for p in processes}
    assert codes == {p.name: 0 for p in processes}, "\n".join(p.log()[-2000:] for p in processes)
    for process in processes:
        log = process.log()
        assert "no permissions" not in log.lower(), log[-3000:]  # no role lacks a permission it uses
        for role in ROLES:
            assert password_of(role) not in log
