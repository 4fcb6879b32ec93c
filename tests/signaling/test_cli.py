"""`lookout signaling`: serves, stops cleanly on SIGTERM, and bad options are one clear line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lookout.cli import main
from tests.support.processes import LookoutProcess, wait_ok
from tests.support.redis_server import RedisServer, free_port


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--web-dir", "/nonexistent/web"], "is not a folder"),
        (["--redis-url", "http://example.org"], "must start with redis://"),
        (["--port", "70000"], "--port: Input should be less than or equal to 65535 (got '70000')"),
        (["--sample-fps", "40"], "sample_fps (40) must not be above max_sample_fps (30)"),
        (["--port", "{busy}"], "cannot listen on 127.0.0.1"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str], redis_server: RedisServer
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args = [a.replace("{busy}", str(busy.getsockname()[1])) for a in args]
        assert main(["signaling", "--host", "127.0.0.1", "--redis-url", redis_server.url, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lookout: error: ") and says in err[-1]
    assert not any("Traceback" in line for line in err)


async def test_signaling_process_serves_and_stops_on_sigterm(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    port = free_port()
    process = LookoutProcess(
        "signaling-cli",
        ["signaling", "--host", "127.0.0.1", "--port", str(port), "--redis-url", redis_server.url],
    )
    try:
        await wait_ok(f"http://127.0.0.1:{port}/healthz", "signaling /healthz")
    finally:
        code = process.stop(timeout=30)
    assert code == 0, process.log_path.read_text()
    assert f"serving on http://127.0.0.1:{port}/" in process.log_path.read_text()
