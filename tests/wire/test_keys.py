"""Key names: every key lives under the prefix, and no two kinds of key can collide."""

from __future__ import annotations

import inspect

from wire.keys import WORKER_GROUP, Keys


def _builders(keys: Keys) -> dict[str, str]:
    built = {}
    for name, method in inspect.getmembers(keys, inspect.ismethod):
        if name.startswith("_"):
            continue
        arity = len(inspect.signature(method).parameters)
        built[name] = method(*["x"] * arity)
    return built


def test_every_key_is_under_the_prefix() -> None:
    for name, key in _builders(Keys("tenant-a")).items():
        assert key.startswith("tenant-a:"), name


def test_two_prefixes_never_share_a_key() -> None:
    first, second = set(_builders(Keys("a")).values()), set(_builders(Keys("b")).values())
    assert not first & second


def test_distinct_kinds_of_key_for_the_same_name() -> None:
    keys = Keys()
    per_name = [
        keys.frames("m"),
        keys.results("m"),
        keys.drop_counts("m"),
        keys.worker("m"),
        keys.bridge("m"),
    ]
    assert len(set(per_name)) == len(per_name)


def test_patterns_match_their_keys() -> None:
    from fnmatch import fnmatchcase

    keys = Keys()
    assert fnmatchcase(keys.worker("w-1"), keys.worker_pattern())
    assert fnmatchcase(keys.bridge("b-1"), keys.bridge_pattern())
    assert not fnmatchcase(keys.bridge("b-1"), keys.worker_pattern())


def test_documented_names_stay_stable() -> None:
    # Other services and the dashboards spell these; a rename is a protocol change.
    keys = Keys()
    assert keys.frames("yolox_nano") == "lookout:frames:yolox_nano"
    assert keys.results("s1") == "lookout:results:s1"
    assert keys.drop_counts("yolox_nano") == "lookout:drops:yolox_nano"
    assert keys.worker("w1") == "lookout:worker:w1"
    assert WORKER_GROUP == "workers"
