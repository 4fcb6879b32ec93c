"""Fixtures shared by the whole suite: the shared data folder, a real redis-server, and blockbuster.

Blockbuster makes "never block the event loop" a checked rule: during every async test, a blocking call
(file IO, time.sleep, a blocking socket, a contended lock, ...) made on the event loop's thread by the
project's code or by a test raises ``blockbuster.BlockingError``. Work done in threads is not checked.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from redis.asyncio import Redis

from tests.support.redis_server import RedisServer
from wire.keys import Keys

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOOKOUT_SHARED_DIR", REPO.parent / "shared")).resolve()

SCANNED = [
    "wire",
    "inference",
    "signaling",
    "mediabridge",
    "training",
    "lookout",
    "bench",
    "tests.test_blockbuster",
]
"""A blocking call fails the test when the project's code is on its stack (as aiohttp scans only its own
package). Test code is not scanned: it may arrange files, read logs and stop processes as it likes, except
tests/test_blockbuster.py, whose own time.sleep shows that the checker is on."""

EVERY = ("*",)
ALLOWED: list[tuple[tuple[str, ...], str, str]] = [
    # Library internals known to be harmless:
    # redis-py reads its own version from the installed package metadata (a few stat calls and a small
    # read in site-packages, from the page cache) once per new connection, never per command.
    (EVERY, "redis/utils.py", "get_lib_version"),
    # pydantic-settings reads the environment and a .env file, if there is one, when settings are built.
    # The services build them in their CLI before the loop starts and pass them down; only the
    # `settings or XSettings()` defaults, which tests use, build them on a loop.
    (EVERY, "pydantic_settings/main.py", "__init__"),
    # Start-up, not serving: the signaling app factory checks the page folder and aiohttp's add_static
    # resolves it (aiohttp's own tests allow add_static too). `lookout signaling` calls it before
    # web.run_app starts the loop; tests build the app inside theirs.
    (EVERY, "signaling/app.py", "create_app"),
    # A test helper's own work:
    # the tests' redis-server (tests/support/redis_server.py), started and stopped on purpose while the
    # test waits; it goes through lookout.up for the command line, which is what puts project code on
    # the stack.
    (EVERY, "tests/support/redis_server.py", "start"),
    (EVERY, "tests/support/redis_server.py", "stop"),
]
"""(blockbuster functions, file suffix, function in that file): blocking is allowed while that function
is on the stack. Each entry says why it is fine; project code that blocks is fixed, not listed here."""


@pytest.fixture(autouse=True)
def blockbuster(request: pytest.FixtureRequest) -> Iterator[BlockBuster | None]:
    """Blockbuster around each async test (sync tests that run servers in threads are not checked)."""
    if not inspect.iscoroutinefunction(getattr(request.node, "obj", None)):
        yield None
        return
    with blockbuster_ctx(SCANNED) as checker:
        for functions, filename, where in ALLOWED:
            for name in checker.functions if functions == EVERY else functions:
                checker.functions[name].can_block_in(filename, where)
        yield checker


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "models" / "yolox_nano.onnx").exists():
        pytest.fail(f"the shared data folder is missing: {SHARED} (expected beside the checkout)")
    return SHARED


@pytest.fixture(scope="session")
def model_path(shared_dir: Path) -> Path:
    return shared_dir / "models" / "yolox_nano.onnx"


@pytest.fixture(scope="session")
def images_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "images"


@pytest.fixture(scope="session")
def video_path(shared_dir: Path) -> Path:
    return shared_dir / "data" / "video" / "vtest.mp4"


@pytest.fixture(scope="session")
def output_dir() -> Path:
    path = REPO / "test-output"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session; tests that restart it use ``private_redis``."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, free to stop and restart."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client on the session's server, flushed before each test."""
    client = Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def keys() -> Keys:
    return Keys()
