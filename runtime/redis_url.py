"""How a service reaches its Redis: the options a URL needs beside it (password, TLS files), and the URL
as it may be shown.

A Redis published beyond one host needs a password and, across hosts, TLS (``rediss://``). The password
may come in the URL (``redis://:PASSWORD@host:6379/0``) or from ``redis_password``; the certificate
files come from the ``redis_ca_file``/``redis_cert_file``/``redis_key_file`` settings. Every client a
service opens goes through ``client_options``, so each one speaks TLS and authenticates the same way;
every log line and error shows the URL through ``redact_url``, so the password never reaches a log.
"""

from __future__ import annotations

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

    A password in the URL wins over ``redis_password`` (redis-py lets the URL's override these). The
    certificate files apply to ``rediss://`` URLs only: redis-py rejects ``ssl_*`` arguments otherwise.
    """
    options: dict[str, Any] = {}
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
