"""The model registry against a real redis-server: register, list, promote, rollback, events."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import pytest
from redis.asyncio import Redis

from wire import registry
from wire.keys import Keys


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "candidate.onnx"
    path.write_bytes(b"not really onnx, the registry does not care" * 10)
    return path


async def test_register_copies_into_the_store_with_its_sha256(
    redis: Redis, keys: Keys, tmp_path: Path, model_file: Path
) -> None:
    store = tmp_path / "store"
    entry = await registry.register(
        redis, keys, store, "yolox_nano", model_file, metrics={"ap": 0.3}, parent="x"
    )
    assert entry.version == "v1"
    stored = registry.resolve_path(entry, store)
    assert stored == store / "yolox_nano" / "v1.onnx"
    assert stored.read_bytes() == model_file.read_bytes()  # noqa: ASYNC240
    assert entry.sha256 == await asyncio.to_thread(registry.sha256_file, model_file)
    assert not Path(entry.path).is_absolute()  # resolved against each host's mount of the store
    again = await registry.register(redis, keys, store, "yolox_nano", model_file)
    assert again.version == "v2"
    listed = await registry.list_versions(redis, keys, "yolox_nano")
    assert [v.version for v in listed] == ["v1", "v2"]
    assert listed[0].metrics == {"ap": 0.3} and listed[0].parent == "x"
    assert await registry.model_names(redis, keys) == ["yolox_nano"]
    assert await registry.promoted(redis, keys, "yolox_nano") is None


async def test_concurrent_registrations_get_distinct_versions(
    redis: Redis, keys: Keys, tmp_path: Path, model_file: Path
) -> None:
    entries = await asyncio.gather(
        *(registry.register(redis, keys, tmp_path / "store", "m", model_file) for _ in range(5))
    )
    assert sorted(e.version for e in entries) == ["v1", "v2", "v3", "v4", "v5"]


async def test_promote_rollback_and_events(
    redis: Redis, keys: Keys, tmp_path: Path, model_file: Path
) -> None:
    store = tmp_path / "store"
    for _ in range(3):
        await registry.register(redis, keys, store, "m", model_file)
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.model_events())
    assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"

    await registry.promote(redis, keys, "m", "v1")
    await registry.promote(redis, keys, "m", "v3")
    await registry.promote(redis, keys, "m", "v3")  # again: no duplicate history entry
    current = await registry.promoted(redis, keys, "m")
    assert current is not None and current.version == "v3"
    back = await registry.rollback(redis, keys, "m")
    assert back.version == "v1"
    current = await registry.promoted(redis, keys, "m")
    assert current is not None and current.version == "v1"
    with pytest.raises(registry.RegistryError, match="no earlier promoted version"):
        await registry.rollback(redis, keys, "m")

    events = []
    for _ in range(4):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        assert message is not None
        events.append(message["data"])
    assert events == [b"m"] * 4
    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves PubSub.aclose unannotated


async def test_clear_errors(redis: Redis, keys: Keys, tmp_path: Path, model_file: Path) -> None:
    with pytest.raises(registry.RegistryError, match="has no version 'v9'"):
        await registry.promote(redis, keys, "m", "v9")
    with pytest.raises(registry.RegistryError, match="not found"):
        await registry.register(redis, keys, tmp_path, "m", tmp_path / "missing.onnx")
    with pytest.raises(registry.RegistryError, match="invalid model name"):
        await registry.register(redis, keys, tmp_path, "../etc", model_file)


async def test_keys_stay_under_the_prefix(redis: Redis, tmp_path: Path, model_file: Path) -> None:
    keys = Keys("other")
    await registry.register(redis, keys, tmp_path, "m", model_file)
    assert all(k.startswith(b"other:") for k in cast(list[bytes], await redis.keys("*")))


def test_sha256_file_digests_the_whole_file_across_blocks(tmp_path: Path) -> None:
    import hashlib

    content = bytes(range(256)) * 8192 + b"tail"  # two 1 MiB blocks and a few bytes more
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    assert registry.sha256_file(path) == hashlib.sha256(content).hexdigest()
