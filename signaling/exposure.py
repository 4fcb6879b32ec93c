"""Who can reach signaling without a key: refuse to serve beyond loopback with the API key off.

Signaling on 0.0.0.0 without ``api_key`` lets anyone who reaches the port start sessions, use the
workers and read /metrics. That must be a choice, not a default: ``lookout signaling`` bound to an
address other than loopback refuses to start (exit 2, one line) unless an API key is set or
``insecure_no_auth`` says it is meant, and then it says so on every start.
"""

from __future__ import annotations

import ipaddress

from wire.config import SignalingSettings
from wire.errors import LookoutError

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class ExposedWithoutKeyError(LookoutError):
    """Bound beyond loopback with no API key and no ``--insecure-no-auth``: a configuration to change."""


def binds_beyond_loopback(host: str) -> bool:
    """Whether a server bound to ``host`` can be reached from other machines.

    Empty, 0.0.0.0 and :: are every interface; a host name other than localhost may resolve to anything.
    """
    if host.lower() in LOOPBACK_NAMES:
        return False
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return True


def check_exposure(settings: SignalingSettings) -> str | None:
    """None when the bind is safe; the warning to log when it is exposed on purpose.

    Raises ExposedWithoutKeyError when it would be exposed without a key by accident.
    """
    if settings.api_key or not binds_beyond_loopback(settings.host):
        return None
    if not settings.insecure_no_auth:
        raise ExposedWithoutKeyError(
            f"signaling: refusing to serve on {settings.host or 'every interface'} without an API key; "
            "set LOOKOUT_API_KEY (--api-key), bind 127.0.0.1 (--host), or pass --insecure-no-auth"
        )
    return (
        f"serving on {settings.host or 'every interface'} WITHOUT an API key (--insecure-no-auth): "
        "anyone who reaches this port can use the API, the workers and /metrics"
    )
