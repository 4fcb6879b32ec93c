"""wire/config/errors.py: one line per invalid setting, and LOOKOUT_* names that nobody reads."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from wire.config import WorkerSettings, describe_invalid, known_variables, unknown_variables


def invalid(**values: object) -> ValidationError:
    with pytest.raises(ValidationError) as exc:
        WorkerSettings(**values)  # type: ignore[arg-type]
    return exc.value


def test_a_flag_given_is_named_by_its_flag_with_the_rule_and_the_value() -> None:
    line = describe_invalid(
        invalid(batch="0"), command="worker", flag_of={"batch": "--batch"}, given={"batch"}
    )
    assert line == "invalid worker setting --batch: Input should be greater than or equal to 1 (got '0')"


def test_a_value_from_the_environment_is_named_by_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKOUT_CONF", "2")
    line = describe_invalid(invalid(), command="worker", flag_of={"conf": "--conf"}, given=set())
    assert line == "invalid worker setting LOOKOUT_CONF: Input should be less than or equal to 1 (got '2')"


def test_a_rejected_redis_url_is_not_repeated_since_it_may_carry_a_password() -> None:
    line = describe_invalid(invalid(redis_url="http://:s3cret@h:6379/0"), command="worker", given=set())
    assert line == (
        "invalid worker setting LOOKOUT_REDIS_URL: invalid Redis URL: must start with redis://, rediss://, unix://"
    )


def test_a_rule_across_fields_names_them_without_pydantics_prefix() -> None:
    line = describe_invalid(invalid(hard_examples_low=0.9), command="worker")
    assert line == "invalid worker settings: hard_examples_low (0.9) must be below hard_examples_high (0.6)"
    assert "\n" not in line


def test_unknown_names_get_the_closest_known_one() -> None:
    found = dict(unknown_variables(["LOOKOUT_REDIS_ULR", "LOOKOUT_METRIC_PORT", "LOOKOUT_QQQQQQ", "PATH"]))
    assert found == {
        "LOOKOUT_REDIS_ULR": "LOOKOUT_REDIS_URL",
        "LOOKOUT_METRIC_PORT": "LOOKOUT_METRICS_PORT",
        "LOOKOUT_QQQQQQ": None,
    }


def test_every_field_and_the_compose_only_names_are_known() -> None:
    known = known_variables()
    assert {"LOOKOUT_REDIS_URL", "LOOKOUT_TRAIN_DATA", "LOOKOUT_STACK_REDIS", "LOOKOUT_CPU_IMAGE"} <= known
    assert unknown_variables(sorted(known)) == []
