"""runtime/redis_url.py: the password never shown, and the TLS files only on rediss:// URLs."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis

from runtime.redis_url import client_options, endpoint, redact_url
from wire.config import RegistrySection


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://worker:s3cret@169.254.10.5:6380/1", "rediss://worker:***@169.254.10.5:6380/1"),
        ("redis://:p%40ss@h/0", "redis://:***@h/0"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://worker@h:6379/0", "redis://worker@h:6379/0"),  # a user name alone is no secret
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_redact_url_masks_the_password_and_keeps_the_rest(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_endpoint_is_host_and_port() -> None:
    assert endpoint("rediss://:x@central.example/0") == "central.example:6379"
    assert endpoint("redis://169.254.10.5:6380/0") == "169.254.10.5:6380"
    assert endpoint("unix:///run/redis.sock") == "/run/redis.sock"


def test_the_tls_files_go_to_rediss_urls_only(tmp_path: Path) -> None:
    ca, cert, key = tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem"
    tls = RegistrySection(
        redis_url="rediss://h:6380/0", redis_ca_file=ca, redis_cert_file=cert, redis_key_file=key
    )
    expected = {"ssl_ca_certs": str(ca), "ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    assert client_options(tls) == expected
    plain = RegistrySection(redis_url="redis://h:6379/0", redis_ca_file=ca, redis_cert_file=cert)
    assert client_options(plain) == {}


def test_the_password_setting_is_passed_on_and_not_shown() -> None:
    settings = RegistrySection(redis_password="s3cret")
    assert client_options(settings) == {"password": "s3cret"}
    assert "s3cret" not in repr(settings)


def test_a_user_and_password_in_the_url_win_over_the_settings() -> None:
    settings = RegistrySection(
        redis_url="rediss://lookout-bridge:in-url@h:6380/0", redis_username="other", redis_password="setting"
    )
    assert client_options(settings) == {"username": "other", "password": "setting"}
    client = Redis.from_url(settings.redis_url, **client_options(settings))
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("lookout-bridge", "in-url")
    assert redact_url(settings.redis_url) == "rediss://lookout-bridge:***@h:6380/0"


def test_the_username_setting_applies_when_the_url_names_none() -> None:
    settings = RegistrySection(
        redis_url="redis://h:6379/0", redis_username="lookout-worker", redis_password="pw"
    )
    kwargs = Redis.from_url(settings.redis_url, **client_options(settings)).connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("lookout-worker", "pw")
