"""`lookout bridge`: registers, stops cleanly on SIGTERM (heartbeat withdrawn); bad options are one line."""

from __future__ import annotations

import aiohttp
import pytest
from redis.asyncio import Redis

from lookout.cli import main
from tests.support.processes import LookoutProcess, wait_until
from tests.support.redis_server import RedisServer, free_port
from wire.keys import Keys
from wire.liveness import live_bridges


@pytest.mark.parametrize(
    ("args", "says", "code"),
    [
        (["--udp-port-min", "nonsense"], "--udp-port-min: Input should be a valid integer", 2),
        (["--udp-port-min", "5000", "--udp-port-max", "4000"], "udp_port_min (5000) must not be above", 2),
        (["--udp-port-min", "40000"], "set both udp_port_min and udp_port_max, or neither", 2),
        (["--in-flight", "0"], "--in-flight: Input should be greater than or equal to 1", 2),
        (["--ice-host-addresses", "not-an-ip"], "--ice-host-addresses", 2),
        (["--advertised-address", "somewhere"], "--advertised-address", 2),
        # Not a configuration error: Redis may be starting still, so a supervisor may try again (exit 1).
        (["--redis-url", "redis://127.0.0.1:{port}/0"], "cannot reach Redis", 1),
    ],
)
def test_bad_options_exit_non_zero_with_one_line(
    args: list[str], says: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a.replace("{port}", str(free_port())) for a in args]
    assert main(["bridge", "--redis-url", f"redis://127.0.0.1:{free_port()}/0", *args]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lookout: error: ") and says in err[-1]
    assert not any("Traceback" in line for line in err)


async def test_bridge_process_registers_and_stops_cleanly(
    redis_server: RedisServer, redis: Redis, keys: Keys
) -> None:
    metrics_port = free_port()
    bridge = LookoutProcess(
        "bridge-cli",
        [
            "bridge",
            "--redis-url",
            redis_server.url,
            "--id",
            "cli-bridge",
            "--metrics-port",
            str(metrics_port),
        ],
    )
    try:

        async def registered() -> bool:
            return [b.id for b in await live_bridges(redis, keys)] == ["cli-bridge"]

        await wait_until(registered, timeout=60, what="bridge heartbeat")
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{metrics_port}/metrics") as reply,
        ):
            assert reply.status == 200 and "lookout_frames_in" in await reply.text()
    finally:
        code = bridge.stop(timeout=30)
    assert code == 0, bridge.log_path.read_text()
    assert not await redis.exists(keys.bridge("cli-bridge"))  # withdrawn at once, not left to expire
