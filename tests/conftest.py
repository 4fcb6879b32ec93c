"""Fixtures shared by the whole suite: the shared data folder and a real redis-server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.support.redis_server import RedisServer
from wire.keys import Keys

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOOKOUT_SHARED_DIR", REPO.parent / "shared")).resolve()


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
