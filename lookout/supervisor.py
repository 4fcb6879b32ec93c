"""What `lookout up` does when one of its children exits: restart it after a pause, or stop everything.

Pure logic (no processes, no clock), so the policy is tested on its own:

- a crash (any other exit code, or a signal) is restarted after an exponential pause, capped, that
  starts again from the first pause once the child had run healthy for a while;
- exit 0 means the child finished although nobody asked it to stop, and exit 2 means it cannot use its
  configuration (``LookoutError``'s code): restarting would only repeat that, so the stack stops and
  says why in the child's own line.
"""

from __future__ import annotations

from dataclasses import dataclass

CONFIG_ERROR_EXIT = 2
"""The exit code of a configuration the process cannot use (``wire.errors.LookoutError.exit_code``)."""


@dataclass(frozen=True)
class RestartPolicy:
    """How long to wait before restarting a crashed child."""

    first_pause_s: float = 0.5
    max_pause_s: float = 30.0
    healthy_after_s: float = 60.0
    """A child that ran this long before it crashed counts as healthy: its next pause is the first again."""

    def pause(self, crashes_in_a_row: int) -> float:
        """The pause before restart number ``crashes_in_a_row`` (1 for the first crash): doubling, capped."""
        return min(self.max_pause_s, self.first_pause_s * 2.0 ** max(0, crashes_in_a_row - 1))


@dataclass(frozen=True)
class Verdict:
    """What to do about a child that exited."""

    restart: bool
    pause_s: float
    reason: str
    """One line: why it is restarted, or why the stack stops."""


@dataclass
class Backoff:
    """The restart state of one child: how many times it crashed in a row."""

    policy: RestartPolicy
    crashes: int = 0

    def on_exit(self, name: str, code: int, ran_s: float, last_error: str = "") -> Verdict:
        """Decide about ``name``, which exited with ``code`` after running ``ran_s`` seconds.

        ``last_error`` is the child's own one-line error (its ``lookout: error:`` line), if it printed one.
        """
        said = f": {last_error}" if last_error else ""
        if code == 0:
            return Verdict(False, 0.0, f"{name} exited on its own (code 0){said}")
        if code == CONFIG_ERROR_EXIT:
            return Verdict(False, 0.0, f"{name} cannot start with this configuration{said or ' (exit 2)'}")
        if ran_s >= self.policy.healthy_after_s:
            self.crashes = 0
        self.crashes += 1
        pause = self.policy.pause(self.crashes)
        how = f"signal {-code}" if code < 0 else f"code {code}"
        return Verdict(True, pause, f"{name} exited with {how}{said}; restarting in {pause:.1f} s")
