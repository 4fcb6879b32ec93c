"""How a service reaches its Redis: the options a URL needs beside it (password, TLS files), and the URL
as it may be shown.

A Redis published beyond one host needs a password and, across hosts, TLS (``rediss://``). The password
may come in the URL (``redis://:PASSWORD@host:6379/0``, with an ACL user ``redis://USER:PASSWORD@...``)
or from ``redis_password`` (and ``redis_username``); the certificate
files come from the ``redis_ca_file``/``redis_cert_file``/``redis_key_file`` settings. Every client a
service opens goes through ``client_options``, so each one speaks TLS and authenticates the same way;
every log line and error shows the URL through ``redact_url``, so the password never reaches a log.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from wire.config import RegistrySection

MASK = "***"


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: the form every log line and error shows."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def endpoint(url: str) -> str:
    """``HOST:PORT`` of a Redis URL (the socket path of a ``unix://`` one), for one-line errors."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"


def client_options(settings: RegistrySection) -> dict[str, Any]:
    """The keyword arguments of ``Redis.from_url`` (or a pool's) that ``settings`` add to the URL.

    A user or password in the URL (``redis://USER:PASSWORD@host``) wins over ``redis_username`` and
    ``redis_password`` (redis-py lets the URL's override these). The
    certificate files apply to ``rediss://`` URLs only: redis-py rejects ``ssl_*`` arguments otherwise.
    """
    options: dict[str, Any] = {}
    if settings.redis_username:
        options["username"] = settings.redis_username
    if settings.redis_password:
        options["password"] = settings.redis_password
    if settings.redis_url.startswith("rediss://"):
        if settings.redis_ca_file is not None:
            options["ssl_ca_certs"] = str(settings.redis_ca_file)
        if settings.redis_cert_file is not None:
            options["ssl_certfile"] = str(settings.redis_cert_file)
        if settings.redis_key_file is not None:
            options["ssl_keyfile"] = str(settings.redis_key_file)
    return options


PROBE_TIMEOUT_S = 3.0
"""How long ``transport_mismatch`` waits for the other side's first answer."""

_TLS_REASONS = {
    "CERTIFICATE_REQUIRED": "wants a client certificate (set redis_cert_file and redis_key_file)",
    "CERTIFICATE_VERIFY_FAILED": "has a certificate that redis_ca_file does not verify",
    "UNKNOWN_CA": "does not trust this client's certificate (signed by another CA?)",
    "BAD_CERTIFICATE": "refused this client's certificate",
}


def tls_refusal(exc: BaseException) -> str | None:
    """Why a TLS handshake failed, in words, when ``exc`` (or what caused it) is a certificate problem."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            reason = str(getattr(seen, "reason", "") or seen)
            for key, words in _TLS_REASONS.items():
                if key in reason:
                    return words
            return None
        seen = seen.__cause__ or seen.__context__
    return None


def _probe_context() -> ssl.SSLContext:
    """A TLS client context that verifies nothing: the probes only ask what the server speaks."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def transport_mismatch(
    url: str, *, client_certificate: bool = True, timeout_s: float = PROBE_TIMEOUT_S
) -> str | None:
    """What is wrong when a client of ``url`` could not talk to its Redis: the server speaks TLS and the
    URL is ``redis://``, the URL is ``rediss://`` and the server speaks plain RESP, or (without
    ``client_certificate``) the server wants one. None otherwise (or when the server does not answer
    the probe: it may simply be down)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return None
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    try:
        if parts.scheme == "redis":
            # A TLS handshake that completes, or a TLS alert, shows the server speaks TLS.
            try:
                _reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port, ssl=_probe_context()), timeout_s
                )
                writer.close()
            except ssl.SSLError as exc:
                if "ALERT" not in str(exc).upper():
                    return None
            return "wants TLS: use a rediss:// URL (with redis_ca_file, redis_cert_file, redis_key_file)"
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        try:
            writer.write(b"PING\r\n")
            first = await asyncio.wait_for(reader.read(1), timeout_s)
        finally:
            writer.close()
        if first in (b"+", b"-"):  # a RESP reply: PONG, or NOAUTH/an error
            return "does not speak TLS: use a redis:// URL, or the server's TLS port"
    except (OSError, TimeoutError, ssl.SSLError):
        pass
    if parts.scheme == "rediss" and not client_certificate:
        # With TLS 1.3 a refused client shows as a reset after the handshake, or as an alert, as timing
        # falls; with TLS 1.2 a server that wants a certificate fails the handshake itself.
        context = _probe_context()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=context), timeout_s
            )
            writer.close()
        except ssl.SSLError:
            return _TLS_REASONS["CERTIFICATE_REQUIRED"]
        except (OSError, TimeoutError):
            return None
    return None
