"""The event-loop rule is enforced: blockbuster (tests/conftest.py) is on during every async test.

Without these, a broken fixture (never activated, or activated for the wrong tests) would let every
blocking call through in silence and the suite would still pass.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from blockbuster import BlockBuster, BlockingError

from inference.model_store import resolve_model
from tests.conftest import ALLOWED, EVERY


async def test_a_blocking_call_on_the_loop_fails_an_async_test() -> None:
    with pytest.raises(BlockingError, match="sleep"):
        time.sleep(0.01)  # noqa: ASYNC251  (the point of the test)


async def test_project_code_that_blocks_the_loop_fails_and_passes_in_a_thread(model_path: Path) -> None:
    with pytest.raises(BlockingError, match=r"os\.stat"):
        resolve_model(model_path, model_path.parent)  # stats the file on the event loop
    assert await asyncio.to_thread(resolve_model, model_path, model_path.parent) == model_path


def test_sync_tests_are_not_checked(blockbuster: BlockBuster | None) -> None:
    assert blockbuster is None
    time.sleep(0.01)


async def test_every_allowlist_entry_names_functions_blockbuster_checks(
    blockbuster: BlockBuster | None,
) -> None:
    assert blockbuster is not None
    for functions, filename, where in ALLOWED:
        assert functions == EVERY or set(functions) <= set(blockbuster.functions), (filename, where)
        assert filename.endswith(".py") and where.isidentifier(), (filename, where)
