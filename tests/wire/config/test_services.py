"""wire/config/services.py: each service's constraints and the rules across its fields."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from wire.config import BridgeSettings, SignalingSettings, UpSettings, WorkerSettings
from wire.config.errors import settings_classes


def message(cls: type[Any], **values: Any) -> str:
    with pytest.raises(ValidationError) as exc:
        cls(**values)
    return str(exc.value.errors()[0]["msg"])


def test_the_hard_example_band_must_be_a_band() -> None:
    assert "hard_examples_low (0.6) must be below hard_examples_high (0.6)" in message(
        WorkerSettings, hard_examples_low=0.6, hard_examples_high=0.6
    )
    assert WorkerSettings(hard_examples_low=0.1, hard_examples_high=0.2).hard_examples_high == 0.2


@pytest.mark.parametrize(
    "values",
    [
        {"batch": 0},
        {"threads": 0},
        {"conf": 1.5},
        {"nms": -0.1},
        {"provider": "gpu"},
        {"claim_interval_s": 0},
    ],
)
def test_worker_values_out_of_range_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        WorkerSettings(**values)


def test_the_udp_range_is_both_or_neither_and_in_order() -> None:
    assert BridgeSettings(udp_port_min=40000, udp_port_max=40000).udp_port_max == 40000
    assert "must not be above udp_port_max" in message(BridgeSettings, udp_port_min=40100, udp_port_max=40000)
    assert "set both udp_port_min and udp_port_max" in message(BridgeSettings, udp_port_min=40000)
    with pytest.raises(ValidationError):
        BridgeSettings(udp_port_min=1, udp_port_max=70000)


def test_bridge_addresses_must_be_ip_addresses() -> None:
    assert BridgeSettings(ice_host_addresses="127.0.0.1, ::1", advertised_address="203.0.113.5")
    assert "does not appear to be an IPv4 or IPv6 address" in message(BridgeSettings, ice_host_addresses="lo")
    assert "does not appear to be an IPv4 or IPv6 address" in message(BridgeSettings, advertised_address="x")


def test_the_bridge_has_no_sample_rate_of_its_own_only_the_shared_cap() -> None:
    assert "sample_fps" not in BridgeSettings.model_fields  # it never read one: signaling picks the rate
    assert {"max_sample_fps", "metrics_port"} <= set(BridgeSettings.model_fields)


def test_every_field_is_declared_by_one_class_only() -> None:
    # Shared knobs (metrics_port, max_sample_fps, model, host/port, ...) live in one section each.
    declared: dict[str, list[str]] = {}
    for cls in settings_classes():
        for name in inspect.get_annotations(cls):
            if name in cls.model_fields:
                declared.setdefault(name, []).append(cls.__name__)
    twice = {name: owners for name, owners in declared.items() if len(owners) > 1}
    assert not twice


def test_signaling_port_and_rates() -> None:
    assert "less than or equal to 65535" in message(SignalingSettings, port=65536)
    assert "greater than or equal to 1" in message(SignalingSettings, port=0)
    assert "sample_fps (31) must not be above max_sample_fps (30)" in message(
        SignalingSettings, sample_fps=31
    )
    assert SignalingSettings(sample_fps=31, max_sample_fps=60).sample_fps == 31
    assert "scale_window_s (2) must be greater than monitor_interval_s (2)" in message(
        SignalingSettings, scale_window_s=2, monitor_interval_s=2
    )


def test_the_web_dir_must_be_a_folder(tmp_path: Path) -> None:
    assert SignalingSettings(web_dir=tmp_path).web_dir == tmp_path
    assert "is not a folder" in message(SignalingSettings, web_dir=tmp_path / "missing")


def test_up_takes_embedded_or_a_redis_url() -> None:
    assert UpSettings().stack_redis == "embedded"
    assert UpSettings(stack_redis="redis://h:1/0").stack_redis == "redis://h:1/0"
    assert "must be 'embedded' or a Redis URL" in message(UpSettings, stack_redis="http://h")
    assert "greater than or equal to 1" in message(UpSettings, workers=0)
