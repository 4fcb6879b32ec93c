"""An aiohttp app served on a loopback port from a thread of its own, for synchronous HTTP clients.

Schemathesis sends its requests with ``requests`` (blocking), so the server cannot share the test's
event loop; here it gets its own loop in a daemon thread, and ``close`` tears it down cleanly.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from aiohttp import web

from tests.support.redis_server import free_port


class ThreadedServer:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._stopped = asyncio.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rest-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"the test server did not start: {self._error!r}")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the test server did not stop"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        runner = web.AppRunner(self.app, access_log=None)
        try:
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise
        self._ready.set()
        await self._stopped.wait()
        await runner.cleanup()
