"""lookout/supervisor.py (the restart policy), and the stack following it with real child processes."""

from __future__ import annotations

import sys
import time

import pytest

from lookout.supervisor import Backoff, RestartPolicy
from lookout.up import PartExitedError, Stack, UpError, free_port
from wire.config import UpSettings

POLICY = RestartPolicy(first_pause_s=0.5, max_pause_s=4.0, healthy_after_s=60.0)


def test_a_crash_is_restarted_after_a_pause_that_doubles_up_to_its_cap() -> None:
    backoff = Backoff(POLICY)
    pauses = [backoff.on_exit("worker-0", 1, ran_s=1.0).pause_s for _ in range(6)]
    assert pauses == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_crash_after_a_healthy_run_starts_again_from_the_first_pause() -> None:
    backoff = Backoff(POLICY)
    for _ in range(4):
        backoff.on_exit("worker-0", 1, ran_s=1.0)
    verdict = backoff.on_exit("worker-0", 1, ran_s=61.0)
    assert verdict.restart and verdict.pause_s == 0.5
    assert backoff.on_exit("worker-0", 1, ran_s=1.0).pause_s == 1.0  # and doubles from there


def test_a_signal_is_a_crash_and_says_which() -> None:
    verdict = Backoff(POLICY).on_exit("bridge-0", -9, ran_s=5.0, last_error="")
    assert verdict.restart and verdict.reason == "bridge-0 exited with signal 9; restarting in 0.5 s"


@pytest.mark.parametrize("code", [0, 2])
def test_exit_0_or_a_configuration_error_is_not_restarted_and_gives_the_childs_reason(code: int) -> None:
    backoff = Backoff(POLICY)
    verdict = backoff.on_exit(
        "bridge-0", code, ran_s=0.3, last_error="invalid bridge setting --in-flight: ..."
    )
    assert not verdict.restart
    assert verdict.reason.startswith("bridge-0 ") and verdict.reason.endswith(
        ": invalid bridge setting --in-flight: ..."
    )
    assert backoff.crashes == 0


def test_a_configuration_error_without_a_line_still_says_exit_2() -> None:
    assert Backoff(POLICY).on_exit("signaling", 2, ran_s=0.1).reason.endswith("(exit 2)")


def _stack(child_code: str) -> Stack:
    """A stack on an external 'Redis' (never contacted) whose parts are tiny Python commands."""
    settings = UpSettings(stack_redis="redis://127.0.0.1:1/0", port=free_port(), workers=1, bridges=1)
    stack = Stack(settings, POLICY)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    for child in stack.services:
        child.argv = sleeper
    stack.bridges[0].argv = [sys.executable, "-c", child_code]
    return stack


def test_a_part_that_exits_2_stops_the_whole_stack_with_its_reason() -> None:
    stack = _stack(
        "import sys; print('lookout: error: invalid bridge setting --x: no', file=sys.stderr); sys.exit(2)"
    )
    with pytest.raises(
        UpError, match=r"^bridge-0 cannot start with this configuration: invalid bridge setting"
    ):
        stack.run()
    assert not any(child.alive() for child in stack.services)  # the sleepers were stopped too
    assert stack.bridges[0].restarts == 0


def test_a_part_that_exits_0_stops_the_stack_and_up_exits_1() -> None:
    stack = _stack("pass")
    with pytest.raises(PartExitedError, match=r"^bridge-0 exited on its own \(code 0\)") as error:
        stack.run()
    assert error.value.exit_code == 1


def test_a_crashing_part_is_restarted() -> None:
    stack = _stack("import sys; sys.exit(3)")
    stack.start()
    try:
        deadline = time.monotonic() + 20
        while stack.bridges[0].restarts < 2 and time.monotonic() < deadline:
            stack.supervise_once()
            time.sleep(0.05)
        assert stack.bridges[0].restarts >= 2 and not stack.stopping
        assert stack.bridges[0].backoff.crashes >= 2
    finally:
        stack.stop()


def test_a_restart_of_the_embedded_redis_says_its_state_is_lost(caplog: pytest.LogCaptureFixture) -> None:
    stack = Stack(UpSettings(port=free_port(), workers=1, bridges=1), POLICY)
    assert stack.redis is not None
    stack.redis.argv = [sys.executable, "-c", "import sys; sys.exit(1)"]  # a redis-server that crashes
    stack.redis.start()
    try:
        assert stack.redis.process is not None
        stack.redis.process.wait(10)
        with caplog.at_level("WARNING", logger="lookout.up"):
            stack.supervise_once()
        said = " ".join(r.getMessage() for r in caplog.records)
        assert "redis exited with code 1; restarting in 0.5 s" in said
        assert "in memory" in said and "lost" in said
    finally:
        stack.stop()
