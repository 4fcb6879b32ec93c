"""runtime/bootstrap.py: the stop signals, Redis ping, metrics port and ids every service starts with."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Iterator

import pytest

from runtime.bootstrap import (
    MetricsPortError,
    RedisAuthError,
    RedisUnreachableError,
    connect_redis,
    restore_sigint,
    serve_metrics,
    service_id,
    stop_requested,
)
from tests.support.redis_server import RedisServer, free_port
from wire.config import RegistrySection

PASSWORD = "pa55-w0rd"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_either_signal_sets_the_event_and_the_handlers_go_afterwards(sig: signal.Signals) -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a script's background job starts
    try:
        with stop_requested() as stop:
            assert not stop.is_set()
            os.kill(os.getpid(), sig)
            await asyncio.wait_for(stop.wait(), 5)
        assert not asyncio.get_running_loop().remove_signal_handler(sig)  # none left to remove
    finally:
        signal.signal(signal.SIGINT, before)


async def test_an_unreachable_redis_is_one_line_and_exit_1() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnreachableError) as error:
        await connect_redis(RegistrySection(redis_url=url), service="bridge")
    line = str(error.value)
    assert line.startswith(f"bridge: cannot reach Redis at {url}: ") and "\n" not in line
    assert error.value.exit_code == 1  # it may come up: a supervisor tries again


async def test_a_reachable_redis_has_answered_a_ping(redis_server: RedisServer) -> None:
    redis = await connect_redis(RegistrySection(redis_url=redis_server.url), service="worker")
    try:
        assert await redis.ping()
    finally:
        await redis.aclose()


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[RedisServer]:
    server = RedisServer(password=PASSWORD)
    server.start()
    yield server
    server.stop()


async def test_an_unreachable_redis_never_shows_the_password() -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnreachableError) as error:
        await connect_redis(RegistrySection(redis_url=url), service="bridge")
    assert PASSWORD not in str(error.value) and ":***@127.0.0.1" in str(error.value)


@pytest.mark.parametrize(
    ("how", "problem"),
    [("none", "needs a password (none was given)"), ("wrong", "refused the password")],
)
async def test_a_refused_password_is_one_line_saying_which_and_exit_2(
    locked_redis: RedisServer, how: str, problem: str
) -> None:
    url = (
        locked_redis.anonymous_url
        if how == "none"
        else f"redis://:wrong-{PASSWORD}@127.0.0.1:{locked_redis.port}/0"
    )
    with pytest.raises(RedisAuthError) as error:
        await connect_redis(RegistrySection(redis_url=url), service="worker")
    assert str(error.value) == f"worker: Redis at 127.0.0.1:{locked_redis.port} {problem}"
    assert error.value.exit_code == 2  # retrying cannot help


async def test_the_password_comes_from_the_url_or_the_setting(locked_redis: RedisServer) -> None:
    for settings in (
        RegistrySection(redis_url=locked_redis.url),
        RegistrySection(redis_url=locked_redis.anonymous_url, redis_password=PASSWORD),
    ):
        redis = await connect_redis(settings, service="worker")
        try:
            assert await redis.ping()
        finally:
            await redis.aclose()


def test_a_taken_metrics_port_is_a_configuration_error() -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = rf"^worker: cannot serve /metrics on port {port}: "
        with pytest.raises(MetricsPortError, match=taken) as error:
            serve_metrics(port, service="worker")
    assert error.value.exit_code == 2
    serve_metrics(0, service="worker")  # 0: off, nothing to fail


def test_ids_are_the_given_one_or_fresh_and_unique() -> None:
    assert service_id("cli-bridge") == "cli-bridge"
    fresh = {service_id("") for _ in range(20)}
    assert len(fresh) == 20 and all(i.startswith(socket.gethostname() + "-") for i in fresh)
    assert f"-{os.getpid()}-" in service_id("", with_pid=True)


def test_an_inherited_ignored_sigint_is_taken_back() -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        restore_sigint()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
