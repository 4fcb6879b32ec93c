"""The model registry: versions of each model in Redis, their files in a store on a shared volume.

Redis holds the index (``Keys.model_versions``, ``model_promoted``, ``model_history``, ``model_names``)
and announces promotions on ``Keys.model_events()``; the files live under ``registry_dir/NAME/``, one
per version, named by version. A version's ``path`` is relative to the store, so that every host (or
container) resolves it against its own mount of the shared volume. The sha256 lets a worker refuse a
file that changed after it was registered.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError
from redis.asyncio import Redis
from redis.exceptions import WatchError

from wire.errors import LookoutError
from wire.keys import Keys
from wire.messages import now_ms
from wire.names import MODEL_NAME_RULE, is_model_name


class RegistryError(LookoutError):
    """Unknown model or version, nothing to roll back to, or an unusable file."""


class ModelVersion(BaseModel):
    """One registered version of a model (JSON in ``Keys.model_versions(name)``)."""

    name: str = Field(description="Model name: the frame stream workers of it read.")
    version: str = Field(description="Version id, unique per name (v1, v2, ...).")
    sha256: str = Field(description="sha256 of the model file, checked before a worker loads it.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Evaluation figures (ap, ap50, ...).")
    parent: str = Field(default="", description="Version (or file) it was trained from; empty: none.")
    path: str = Field(description="File, relative to the registry store (or absolute).")
    created: float = Field(default_factory=now_ms, description="Registration time, ms since the epoch.")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in blocks (blocking: call it in a thread from async code).

    The one file digest of the project: it defines a version's ``sha256`` (checked by workers before they
    load a file), and the detector's fallback version id is its first 12 digits.
    """
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_path(version: ModelVersion, registry_dir: Path) -> Path:
    """Where this host finds the version's file."""
    path = Path(version.path)
    return path if path.is_absolute() else registry_dir / path


def _text(value: bytes | str) -> str:
    """redis-py's reply as text (it types replies as bytes or str, depending on decode_responses)."""
    return value.decode() if isinstance(value, bytes) else value


def check_name(name: str) -> str:
    if not is_model_name(name):
        raise RegistryError(f"invalid model name {name!r}: use {MODEL_NAME_RULE}")
    return name


def _copy_into_store(source: Path, target: Path) -> str:
    """Copy atomically (temporary name, then rename) and return the sha256 of what was written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(source, tmp)
    digest = sha256_file(tmp)
    os.replace(tmp, target)
    return digest


async def list_versions(redis: Redis, keys: Keys, name: str) -> list[ModelVersion]:
    """Every registered version of ``name``, oldest first."""
    raw = await redis.hgetall(keys.model_versions(name))
    versions = []
    for value in raw.values():
        try:
            versions.append(ModelVersion.model_validate_json(value))
        except ValidationError:
            continue  # written by an incompatible release: not listed rather than crashing every reader
    return sorted(versions, key=lambda v: (v.created, v.version))


async def get_version(redis: Redis, keys: Keys, name: str, version: str) -> ModelVersion:
    raw = await redis.hget(keys.model_versions(name), version)
    if raw is None:
        known = ", ".join(v.version for v in await list_versions(redis, keys, name)) or "none"
        raise RegistryError(f"model {name!r} has no version {version!r} (registered: {known})")
    return ModelVersion.model_validate_json(raw)


async def model_names(redis: Redis, keys: Keys) -> list[str]:
    return sorted(_text(n) for n in await redis.smembers(keys.model_names()))


async def promoted(redis: Redis, keys: Keys, name: str) -> ModelVersion | None:
    """The version workers of ``name`` should serve, or None when none was promoted."""
    raw = await redis.get(keys.model_promoted(name))
    if raw is None:
        return None
    try:
        return await get_version(redis, keys, name, _text(raw))
    except RegistryError:
        return None


async def register(
    redis: Redis,
    keys: Keys,
    registry_dir: Path,
    name: str,
    source: Path,
    *,
    metrics: dict[str, float] | None = None,
    parent: str = "",
) -> ModelVersion:
    """Copy ``source`` into the store as the next version of ``name`` and index it (not promoted)."""
    check_name(name)
    if not await asyncio.to_thread(source.is_file):
        raise RegistryError(f"model file not found: {source}")
    while True:
        # Reserve the next number with HSETNX, so that two publishers never take the same version.
        number = await redis.hlen(keys.model_versions(name)) + 1
        version = f"v{number}"
        placeholder = ModelVersion(name=name, version=version, sha256="", path="")
        if await redis.hsetnx(keys.model_versions(name), version, placeholder.model_dump_json()):
            break
    relative = Path(name) / f"{version}{source.suffix or '.onnx'}"
    try:
        digest = await asyncio.to_thread(_copy_into_store, source, registry_dir / relative)
    except OSError as exc:
        await redis.hdel(keys.model_versions(name), version)
        raise RegistryError(f"cannot write {registry_dir / relative}: {exc}") from exc
    entry = ModelVersion(
        name=name, version=version, sha256=digest, metrics=metrics or {}, parent=parent, path=str(relative)
    )
    pipe = redis.pipeline(transaction=True)
    pipe.hset(keys.model_versions(name), version, entry.model_dump_json())
    pipe.sadd(keys.model_names(), name)
    await pipe.execute()
    return entry


async def promote(redis: Redis, keys: Keys, name: str, version: str) -> ModelVersion:
    """Make ``version`` the one workers serve; the previous one goes on the rollback history."""
    entry = await get_version(redis, keys, name, version)
    if not entry.sha256:
        raise RegistryError(f"{name} {version} is still being registered")
    await _set_promoted(redis, keys, name, version, push_previous=True)
    return entry


async def rollback(redis: Redis, keys: Keys, name: str) -> ModelVersion:
    """Promote again the version promoted before the current one."""
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(keys.model_history(name), keys.model_promoted(name))
                raw: bytes | str | None = await pipe.lindex(keys.model_history(name), 0)
                if raw is None:
                    raise RegistryError(f"model {name!r} has no earlier promoted version to roll back to")
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.lpop(keys.model_history(name))
                pipe.set(keys.model_promoted(name), raw)
                pipe.publish(keys.model_events(), name)
                await pipe.execute()
                break
            except WatchError:
                continue
    return await get_version(redis, keys, name, _text(raw))


async def _set_promoted(redis: Redis, keys: Keys, name: str, version: str, *, push_previous: bool) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(keys.model_promoted(name))
                current: bytes | str | None = await pipe.get(keys.model_promoted(name))
                pipe.multi()  # type: ignore[no-untyped-call]
                if push_previous and current is not None and _text(current) != version:
                    pipe.lpush(keys.model_history(name), current)
                pipe.set(keys.model_promoted(name), version)
                pipe.sadd(keys.model_names(), name)
                pipe.publish(keys.model_events(), name)
                await pipe.execute()
                return
            except WatchError:
                continue
