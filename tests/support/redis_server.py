"""A real redis-server for tests, started the way `lookout up` starts its embedded one."""

from __future__ import annotations

import socket
import subprocess
import time

from lookout.up import embedded_redis_command, free_port

__all__ = ["RedisServer", "free_port"]  # free_port is lookout.up's, re-exported for the tests


class RedisServer:
    """One redis-server process on a free loopback port, that a test may stop and restart."""

    def __init__(
        self,
        port: int | None = None,
        binary: str | None = None,
        *,
        password: str = "",
        extra_args: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.binary = binary
        """The redis-server to run (default: the one `lookout up` would pick)."""
        self.password = password
        """``requirepass`` of the server (empty: none); ``url`` carries it."""
        self.extra_args = extra_args or []
        """More redis-server arguments (TLS ports, ACL users)."""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def anonymous_url(self) -> str:
        """``url`` without the password."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *embedded_redis_command(self.port, self.binary),
                *(["--requirepass", self.password] if self.password else []),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith((b"+PONG", b"-NOAUTH")):  # NOAUTH: up, with a password
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()
