"""signaling.exposure and `lookout signaling`: no serving beyond loopback without a key by accident."""

from __future__ import annotations

import aiohttp
import pytest

from lookout.cli import main
from signaling.exposure import ExposedWithoutKeyError, binds_beyond_loopback, check_exposure
from tests.support.processes import LookoutProcess, wait_ok
from tests.support.redis_server import RedisServer, free_port
from wire.config import SignalingSettings


@pytest.mark.parametrize(
    ("host", "exposed"),
    [
        ("127.0.0.1", False),
        ("127.8.9.10", False),
        ("::1", False),
        ("[::1]", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("", True),
        ("::", True),
        ("169.254.1.20", True),
        ("example.org", True),  # a name may resolve to anything
    ],
)
def test_binds_beyond_loopback(host: str, exposed: bool) -> None:
    assert binds_beyond_loopback(host) is exposed


def test_the_default_bind_is_loopback_and_needs_no_key() -> None:
    settings = SignalingSettings(_env_file=None)  # type: ignore[call-arg]
    assert settings.host == "127.0.0.1" and not settings.api_key
    assert check_exposure(settings) is None


def test_beyond_loopback_needs_a_key_or_the_insecure_flag() -> None:
    with pytest.raises(ExposedWithoutKeyError, match="--insecure-no-auth"):
        check_exposure(SignalingSettings(host="0.0.0.0"))
    assert check_exposure(SignalingSettings(host="0.0.0.0", api_key="k")) is None
    warning = check_exposure(SignalingSettings(host="0.0.0.0", insecure_no_auth=True))
    assert warning is not None and "WITHOUT an API key" in warning


def test_lookout_signaling_refuses_with_exit_2_and_one_line(
    capsys: pytest.CaptureFixture[str], redis_server: RedisServer
) -> None:
    assert (
        main(["signaling", "--host", "0.0.0.0", "--port", str(free_port()), "--redis", redis_server.url]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lookout: error: signaling: refusing to serve on 0.0.0.0")
    assert "LOOKOUT_API_KEY" in err[0]


async def test_with_the_insecure_flag_it_serves_and_warns(redis_server: RedisServer) -> None:
    # Also: --metrics-port moves /metrics to its own listener (at metrics_host, 127.0.0.1 by default).
    port, metrics_port = free_port(), free_port()
    process = LookoutProcess(
        "signaling-insecure",
        [
            "signaling",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--redis",
            redis_server.url,
            "--insecure-no-auth",
            "--metrics-port",
            str(metrics_port),
        ],
    )
    try:
        await wait_ok(f"http://127.0.0.1:{port}/healthz", "signaling /healthz")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as separate:
                assert separate.status == 200 and "lookout_rest_requests" in await separate.text()
            async with http.get(f"http://127.0.0.1:{port}/metrics") as on_http_port:
                assert on_http_port.status == 404
    finally:
        process.stop(timeout=30)
    warnings = [line for line in process.log_path.read_text().splitlines() if "WITHOUT an API key" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], process.log_path.read_text()
