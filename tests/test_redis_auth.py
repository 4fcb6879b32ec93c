"""A Redis on a network: a password (and TLS with client certificates) that every service honours.

A real redis-server runs with ``requirepass``, and on a TLS port that verifies client certificates
(Debian's /usr/bin/redis-server: the pip one is built without TLS). Real `lookout` processes connect
to it: refused without the password, in one line that never shows it; served end to end with it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ConnectionError

from tests.inference.worker_helpers import video_jpegs
from tests.support.certificates import TlsFiles, make_tls_files, redis_tls_args
from tests.support.processes import LookoutProcess, run_lookout, wait_heartbeat
from tests.support.redis_server import RedisServer, free_port
from wire.client import FrameClient
from wire.config import StreamSettings
from wire.keys import Keys
from wire.messages import ResultMessage

PASSWORD = "n0t-in-any-log"
MODEL = "yolox_nano"
TLS_REDIS = shutil.which("redis-server", path="/usr/bin")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def locked(tls_files: TlsFiles) -> Iterator[tuple[RedisServer, int]]:
    """(a redis-server with requirepass, its TLS port); plaintext only without a TLS-capable binary."""
    tls_port = free_port()
    server = RedisServer(
        binary=TLS_REDIS,
        password=PASSWORD,
        extra_args=redis_tls_args(tls_files, tls_port) if TLS_REDIS else [],
    )
    server.start()
    yield server, tls_port
    server.stop()


def tls_url(tls_port: int) -> str:
    return f"rediss://:{PASSWORD}@127.0.0.1:{tls_port}/0"


def client_tls(files: TlsFiles) -> dict[str, Any]:
    return {
        "ssl_ca_certs": str(files.ca),
        "ssl_certfile": str(files.client_cert),
        "ssl_keyfile": str(files.client_key),
    }


async def test_a_client_without_the_password_is_refused(locked: tuple[RedisServer, int]) -> None:
    server, _ = locked
    for url in (server.anonymous_url, f"redis://:wrong@127.0.0.1:{server.port}/0"):
        client = Redis.from_url(url)
        with pytest.raises(AuthenticationError):
            await client.ping()
        await client.aclose()


@pytest.mark.skipif(TLS_REDIS is None, reason="no TLS-capable redis-server at /usr/bin/redis-server")
async def test_the_tls_port_refuses_plaintext_and_clients_without_a_certificate(
    locked: tuple[RedisServer, int], tls_files: TlsFiles
) -> None:
    _, tls_port = locked
    plaintext = Redis.from_url(f"redis://:{PASSWORD}@127.0.0.1:{tls_port}/0", socket_timeout=3)
    no_certificate = Redis.from_url(tls_url(tls_port), ssl_ca_certs=str(tls_files.ca), socket_timeout=3)
    for client in (plaintext, no_certificate):
        with pytest.raises((ConnectionError, OSError)):
            await client.ping()
        await client.aclose()
    verified = Redis.from_url(tls_url(tls_port), **client_tls(tls_files))
    assert await verified.ping()
    await verified.aclose()


@pytest.mark.parametrize("service", ["bridge", "signaling", "worker"])
@pytest.mark.parametrize(
    ("how", "problem"), [("none", "needs a password"), ("wrong", "refused the password")]
)
def test_a_service_with_a_wrong_or_no_password_exits_with_one_line_saying_which(
    locked: tuple[RedisServer, int], shared_dir: Path, service: str, how: str, problem: str
) -> None:
    server, _ = locked
    url = server.anonymous_url if how == "none" else f"redis://:wrong-{PASSWORD}@127.0.0.1:{server.port}/0"
    env = {"LOOKOUT_MODEL_DIR": str(shared_dir / "models"), "LOOKOUT_API_KEY": ""}
    done = run_lookout(service, "--redis-url", url, env=env, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert errors == [
        f"lookout: error: {service}: Redis at 127.0.0.1:{server.port} {problem}"
        + (" (none was given)" if how == "none" else "")
    ], done.stderr[-2000:]
    assert PASSWORD not in done.stdout + done.stderr


@pytest.mark.skipif(TLS_REDIS is None, reason="no TLS-capable redis-server at /usr/bin/redis-server")
@pytest.mark.parametrize("service", ["bridge", "worker"])
@pytest.mark.parametrize(
    ("scheme", "problem"),
    [
        ("redis", "wants TLS: use a rediss:// URL"),
        ("rediss", "does not speak TLS: use a redis:// URL, or the server's TLS port"),
    ],
)
def test_a_service_with_tls_on_one_side_only_exits_with_one_line_saying_which(
    locked: tuple[RedisServer, int],
    tls_files: TlsFiles,
    shared_dir: Path,
    service: str,
    scheme: str,
    problem: str,
) -> None:
    server, tls_port = locked
    port = tls_port if scheme == "redis" else server.port  # plaintext on the TLS port, TLS on the plain one
    env = {
        "LOOKOUT_MODEL_DIR": str(shared_dir / "models"),
        "LOOKOUT_REDIS_PASSWORD": PASSWORD,
        "LOOKOUT_REDIS_CA_FILE": str(tls_files.ca),
        "LOOKOUT_REDIS_CERT_FILE": str(tls_files.client_cert),
        "LOOKOUT_REDIS_KEY_FILE": str(tls_files.client_key),
    }
    done = run_lookout(service, "--redis-url", f"{scheme}://127.0.0.1:{port}/0", env=env, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert len(errors) == 1, done.stderr[-2000:]
    assert errors[0].startswith(f"lookout: error: {service}: Redis at 127.0.0.1:{port} {problem}"), errors
    assert PASSWORD not in done.stdout + done.stderr


@pytest.mark.skipif(TLS_REDIS is None, reason="no TLS-capable redis-server at /usr/bin/redis-server")
@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ("ca", "wants a client certificate (set redis_cert_file and redis_key_file)"),
        ("none", "has a certificate that redis_ca_file does not verify"),
    ],
)
def test_a_service_whose_certificates_do_not_fit_exits_with_one_line_saying_which(
    locked: tuple[RedisServer, int], tls_files: TlsFiles, files: str, problem: str
) -> None:
    _, tls_port = locked
    env = {"LOOKOUT_REDIS_PASSWORD": PASSWORD}
    if files == "ca":
        env["LOOKOUT_REDIS_CA_FILE"] = str(tls_files.ca)
    done = run_lookout("bridge", "--redis-url", f"rediss://127.0.0.1:{tls_port}/0", env=env, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert errors == [f"lookout: error: bridge: Redis at 127.0.0.1:{tls_port} {problem}"], done.stderr[-2000:]


@pytest.mark.parametrize("transport", ["password", "tls"])
async def test_a_worker_and_a_frame_client_with_the_password_serve_a_frame(
    locked: tuple[RedisServer, int], tls_files: TlsFiles, shared_dir: Path, video_path: Path, transport: str
) -> None:
    server, tls_port = locked
    if transport == "tls" and TLS_REDIS is None:
        pytest.skip("no TLS-capable redis-server at /usr/bin/redis-server")
    env = {"LOOKOUT_MODEL_DIR": str(shared_dir / "models")}
    if transport == "tls":
        url = f"rediss://127.0.0.1:{tls_port}/0"  # the password from the setting, the files from settings
        env |= {
            "LOOKOUT_REDIS_PASSWORD": PASSWORD,
            "LOOKOUT_REDIS_CA_FILE": str(tls_files.ca),
            "LOOKOUT_REDIS_CERT_FILE": str(tls_files.client_cert),
            "LOOKOUT_REDIS_KEY_FILE": str(tls_files.client_key),
        }
        redis = Redis.from_url(tls_url(tls_port), **client_tls(tls_files))
    else:
        url = server.url
        redis = Redis.from_url(server.url)
    name = f"auth-{transport}-worker"
    worker = LookoutProcess(name, ["worker", "--redis-url", url, "--id", name, "--threads", "1"], env=env)
    try:
        wait_heartbeat(server.url, Keys().worker(name), name, 90, [worker])
        jpeg, width, height = video_jpegs(video_path, 1)[0]
        async with FrameClient(redis, settings=StreamSettings(frame_deadline_ms=60_000)) as client:
            seq, future = await client.submit(jpeg, model=MODEL, width=width, height=height)
            outcome = await client.wait(seq, future, model=MODEL, timeout_s=60)
        assert isinstance(outcome, ResultMessage) and outcome.worker == name
        assert "person" in {d.label for d in outcome.detections}
    finally:
        await redis.aclose()
        assert worker.stop() == 0
    assert PASSWORD not in worker.log()
