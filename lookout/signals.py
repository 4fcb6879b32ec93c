"""Ctrl-C and SIGTERM as an asyncio event, for the commands that stop by finishing what is in flight."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_requested() -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM while the block runs; the handlers go when it ends.

    Call it inside a running event loop. The handlers are set even where SIGINT was inherited as
    ignored (a script's background job), so both signals always stop the command.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
