"""wire/config/base.py: the constrained types and the rules every process's settings share."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from wire.config import CommonSettings, MetricsSection, RegistrySection, StreamSettings


def error_of(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return str(exc.value.errors()[0]["msg"])


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://h/1", "unix:///run/redis.sock"])
def test_redis_urls_are_accepted(url: str) -> None:
    assert RegistrySection(redis_url=url).redis_url == url


def test_a_redis_url_of_another_scheme_is_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        RegistrySection(redis_url="http://example.org")
    assert "invalid Redis URL: must start with redis://" in error_of(exc)


@pytest.mark.parametrize(
    ("port", "ok"), [(0, True), (9101, True), (65535, True), (65536, False), (-1, False)]
)
def test_the_metrics_port_is_0_or_a_port(port: int, ok: bool) -> None:
    if ok:
        assert MetricsSection(metrics_port=port).metrics_port == port
    else:
        with pytest.raises(ValidationError):
            MetricsSection(metrics_port=port)


def test_a_heartbeat_must_outlive_its_interval() -> None:
    with pytest.raises(ValidationError) as exc:
        CommonSettings(heartbeat_interval_s=2.0, heartbeat_ttl_s=2.0)
    assert "heartbeat_ttl_s (2) must be greater than heartbeat_interval_s (2)" in error_of(exc)
    assert CommonSettings(heartbeat_interval_s=0.5, heartbeat_ttl_s=0.6).heartbeat_ttl_s == 0.6


@pytest.mark.parametrize(
    "values", [{"heartbeat_interval_s": 0}, {"influx_interval_s": -1}, {"frame_stream_maxlen": 0}]
)
def test_intervals_and_sizes_must_be_positive(values: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        StreamSettings(**values)  # type: ignore[arg-type]


def test_the_log_level_is_a_level_name() -> None:
    assert CommonSettings(log_level="debug").log_level == "debug"
    with pytest.raises(ValidationError):
        CommonSettings(log_level="LOUD")


def test_variables_are_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKOUT_METRICS_PORT", "9102")
    assert MetricsSection().metrics_port == 9102
    monkeypatch.setenv("LOOKOUT_METRICS_PORT", "70000")
    with pytest.raises(ValidationError):
        MetricsSection()
