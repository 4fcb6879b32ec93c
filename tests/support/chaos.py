"""The chaos test's checker: an independent frame accounting (processes: ``tests.support.chaos_stack``).

The rule under test: every frame a bridge samples ends as exactly one result or one counted drop. The
checker does not trust what the services say about themselves as a whole; it adds up, from outside:

- frames sampled: each bridge incarnation's ``lookout_frames_in{site="bridge"}`` on its ``/metrics``;
- results and drops by reason: Redis's ``lookout:inferred:{model}`` counter and ``lookout:drops:{model}``
  tally, which the services write atomically with publishing each outcome (``wire.outcomes``);
- what each client was told: its ``--out`` JSON lines (session, seq, when), its exit code and last line.

Processes and Redis die, and a counter read from them restarts at zero. So every source is read in
*epochs*: the harness opens a new epoch when it restarts a source, and a total is the sum over epochs.
Just before it kills a bridge or Redis the harness freezes Redis writes (``CLIENT PAUSE WRITE``) and
takes a last reading: nothing can be counted between that reading and the kill, so no outcome falls
between two epochs. What a killed bridge held (its mailbox, a frame being encoded, a drop not yet
written) dies with it and nobody can count it; the checker shows it apart, within a stated bound.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from wire.keys import Keys

SAMPLED = "sampled"
HELD = "held_drops"
"""Drops the bridge held while Redis could not take their record (``lookout_drops_held``)."""
RESULTS = "results"
DROP = "drop:"
"""Key prefix of a drop reason in a reading (``drop:superseded``)."""
BRIDGE_DROP = "bridge-dropped:"
"""Key prefix of a drop the bridge counted in its own metrics (not part of the accounting)."""

HELD_PER_SESSION = 3
"""Frames a bridge holds for one session without their outcome written yet: the one-slot mailbox, the
frame being encoded and submitted, and a drop record being written (``mediabridge/sampler.py``)."""

RECOVERY_LIMIT_S = 5.0


# --- counting across epochs ------------------------------------------------------------------------------
class EpochTotals:
    """Totals of counters read from a source that may die and come back at zero.

    The first epoch counts from the first reading (the baseline); each later epoch counts from zero,
    because the harness opens it (``restart``) when it starts a fresh process or Redis.
    """

    def __init__(self) -> None:
        self._closed: dict[str, int] = {}
        self._base: dict[str, int] | None = None
        self._last: dict[str, int] = {}
        self.epochs = 1

    def read(self, values: Mapping[str, int]) -> None:
        if self._base is None:
            self._base = dict(values)
        self._last = dict(values)

    def restart(self) -> None:
        for key, value in self._current().items():
            self._closed[key] = self._closed.get(key, 0) + value
        self._base, self._last = {}, {}
        self.epochs += 1

    def _current(self) -> dict[str, int]:
        base = self._base or {}
        return {key: value - base.get(key, 0) for key, value in self._last.items()}

    def totals(self) -> dict[str, int]:
        totals = dict(self._closed)
        for key, value in self._current().items():
            totals[key] = totals.get(key, 0) + value
        return totals


# --- the accounting -------------------------------------------------------------------------------------
@dataclass
class Accounting:
    sampled: int
    results: int
    drops: dict[str, int]
    held_by_killed: int
    """Frames a killed bridge held when it died (bounded by ``held_allowance``): lost with the process."""
    held_allowance: int
    unaccounted: int
    """Sampled frames that ended as neither a result nor a counted drop; negative: counted twice."""


def account(sampled: int, results: int, drops: Mapping[str, int], *, held_allowance: int = 0) -> Accounting:
    """Frames sampled = results + drops + held by a killed process; the rest is unaccounted.

    Call it after the pipeline has drained (nothing in flight). ``held_allowance``: the most frames a
    killed bridge can have held (``HELD_PER_SESSION`` per session it served), 0 when none was killed.
    """
    missing = sampled - results - sum(drops.values())
    held = min(max(missing, 0), held_allowance)
    return Accounting(
        sampled=sampled,
        results=results,
        drops={k: v for k, v in sorted(drops.items()) if v},
        held_by_killed=held,
        held_allowance=held_allowance,
        unaccounted=missing - held,
    )


def split_reading(totals: Mapping[str, int]) -> tuple[int, int, dict[str, int]]:
    drops = {k.removeprefix(DROP): v for k, v in totals.items() if k.startswith(DROP)}
    return totals.get(SAMPLED, 0), totals.get(RESULTS, 0), drops


# --- reading the sources ---------------------------------------------------------------------------------
def read_bridge_metrics(url: str) -> dict[str, int]:
    """A bridge's sampled frames (``lookout_frames_in{site="bridge"}``) from its /metrics, and the drops
    it counted itself by reason (``BRIDGE_DROP`` keys: its own view, shown beside the Redis tally)."""
    with urllib.request.urlopen(url, timeout=1) as reply:
        text = reply.read().decode()
    reading = {SAMPLED: 0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            if family.name == "lookout_frames_in" and sample.labels.get("site") == "bridge":
                reading[SAMPLED] += int(sample.value)
            elif family.name == "lookout_drops_held":
                reading[HELD] = reading.get(HELD, 0) + int(sample.value)
            elif family.name == "lookout_frames_dropped":
                key = BRIDGE_DROP + sample.labels.get("reason", "?")
                reading[key] = reading.get(key, 0) + int(sample.value)
    return reading


def read_redis_tally(client: Redis, keys: Keys, model: str) -> dict[str, int]:
    """Results (``lookout:inferred:{model}``) and drops by reason (``lookout:drops:{model}``)."""
    pipe = client.pipeline(transaction=True)
    pipe.get(keys.inferred_count(model))
    pipe.hgetall(keys.drop_counts(model))
    inferred, tally = pipe.execute()
    reading = {RESULTS: int(inferred or 0)}
    reading.update({DROP + k.decode(): int(v) for k, v in tally.items()})
    return reading


class CounterWatch:
    """Reads the bridge's /metrics and the Redis tally ten times a second, in epochs (see the module)."""

    def __init__(self, redis_url: str, bridge_metrics_url: str, keys: Keys, model: str) -> None:
        self.redis_url = redis_url
        self.bridge_metrics_url = bridge_metrics_url
        self.keys = keys
        self.model = model
        self.bridge = EpochTotals()
        self.redis = EpochTotals()
        self._lock = threading.Lock()
        self._generation = {"bridge": 0, "redis": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-counter-watch", daemon=True)
        self._client = Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)

    def start(self) -> CounterWatch:
        assert self.poll(), "the counters could not be read at the start"
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.close()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            self.poll()

    def poll(self) -> bool:
        """One reading of both sources (a source that is down is skipped); True when both answered."""
        both = True
        for source, read in (("bridge", self._read_bridge), ("redis", self._read_redis)):
            generation = self._generation[source]
            try:
                values = read()
            except Exception:  # down, restarting, or half-started: the next poll reads it
                both = False
                continue
            with self._lock:
                # A reading taken from a source before it was restarted must not seed the new epoch.
                if generation == self._generation[source]:
                    getattr(self, source).read(values)
        return both

    def _read_bridge(self) -> dict[str, int]:
        return read_bridge_metrics(self.bridge_metrics_url)

    def _read_redis(self) -> dict[str, int]:
        return read_redis_tally(self._client, self.keys, self.model)

    def restarted(self, source: str, bridge_metrics_url: str | None = None) -> None:
        """Open a new epoch of ``source`` ("bridge" or "redis"): call it right after killing it."""
        with self._lock:
            self._generation[source] += 1
            getattr(self, source).restart()
            if bridge_metrics_url is not None:
                self.bridge_metrics_url = bridge_metrics_url

    @contextlib.contextmanager
    def frozen_writes(self) -> Any:
        """Pause every Redis write, take a last exact reading of both sources, and yield (to kill).

        Writes blocked by the pause are never executed when their sender or Redis dies meanwhile.
        """
        self._client.client_pause(10_000, all=False)  # WRITE mode: reads still answer
        try:
            time.sleep(0.05)  # let a write already executing finish before the last reading
            with self._lock:
                self._generation = {k: v + 1 for k, v in self._generation.items()}  # stale polls dropped
            assert self.poll(), "the counters could not be read before the kill"
            yield
        finally:
            with contextlib.suppress(Exception):
                self._client.client_unpause()

    def totals(self) -> dict[str, int]:
        with self._lock:
            return {**self.bridge.totals(), **self.redis.totals()}

    def drain(self, quiet_s: float = 2.5, timeout_s: float = 25.0) -> bool:
        """Wait until no counter has moved for ``quiet_s`` (the pipeline has drained); False on timeout."""
        deadline = time.monotonic() + timeout_s
        last, since = self.totals(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.totals()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return True
        return False


# --- the clients ---------------------------------------------------------------------------------------
def read_json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    messages = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # the last one may be being written
            messages.append(json.loads(line))
    return messages


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


@dataclass
class ClientReport:
    name: str
    exit_code: int | None
    exited_by_itself: bool
    last_line: str
    traceback: bool
    results: int
    sessions: int
    recovery_s: float | None
    verdict: str
    ok: bool


def judge_client(
    name: str,
    messages: list[dict[str, Any]],
    *,
    exit_code: int | None,
    exited_by_itself: bool,
    log: str,
    back_wall_s: float,
    reconnects: bool = False,
) -> ClientReport:
    """What a client was told, and whether it behaved: carried on, reconnected, or exited non-zero with a
    one-line reason. Exiting 0 by itself, a traceback, or running on without results is a failure; so is
    exiting at all for a client told to reconnect (``reconnects``: it ran with ``--reconnect``)."""
    results = {(m["session"], m["seq"]): m for m in messages if m.get("type") == "detections"}
    sessions = len({session for session, _ in results})
    after = [
        (m["received_ms"] + m.get("latency_ms", 0.0)) / 1000.0
        for m in results.values()
        if m["received_ms"] / 1000.0 >= back_wall_s
    ]
    recovery = round(min(after) - back_wall_s, 2) if after else None
    traceback = "Traceback (most recent call last)" in log
    if traceback:
        verdict, ok = "crashed with a traceback", False
    elif exited_by_itself and exit_code == 0:
        verdict, ok = "exited 0 having lost its stream", False
    elif exited_by_itself and reconnects:
        verdict, ok = f"exited {exit_code} although told to reconnect", False
    elif exited_by_itself:
        verdict, ok = f"exited {exit_code} with a reason", bool(last_line(log))
    elif recovery is None:
        verdict, ok = "ran on without results (lost its stream silently)", False
    elif recovery > RECOVERY_LIMIT_S:
        verdict, ok = f"recovered too late ({recovery:.1f} s)", False
    else:
        verdict, ok = ("reconnected" if sessions > 1 else "carried on"), exit_code == 0
    return ClientReport(
        name=name,
        exit_code=exit_code,
        exited_by_itself=exited_by_itself,
        last_line=last_line(log)[-200:],
        traceback=traceback,
        results=len(results),
        sessions=sessions,
        recovery_s=recovery,
        verdict=verdict,
        ok=ok,
    )


# --- the bridge's own log -------------------------------------------------------------------------------
def bridge_log_summary(log: str) -> dict[str, Any]:
    """Sessions a bridge answered and why it closed them, from its own log lines."""
    answered = log.count(" answered (model ")
    reasons: dict[str, int] = {}
    for line in log.splitlines():
        if ": closing (" in line:
            reason = line.split(": closing (", 1)[1].rsplit(")", 1)[0]
            reasons[reason] = reasons.get(reason, 0) + 1
    return {"answered": answered, "closed": reasons, "traceback": "Traceback (most recent call last)" in log}


# --- the report ----------------------------------------------------------------------------------------
@dataclass
class ScenarioReport:
    scenario: str
    accounting: Accounting
    recovery_s: float | None
    clients: list[ClientReport]
    bridge_log: list[dict[str, Any]]
    drained: bool
    duration_s: float
    notes: list[str] = field(default_factory=list)

    def failures(self) -> list[str]:
        found = []
        if self.accounting.unaccounted != 0:
            found.append(f"{self.accounting.unaccounted} frames unaccounted")
        if not self.drained:
            found.append("the counters never settled after the streams stopped")
        for client in self.clients:
            if not client.ok:
                found.append(
                    f"{client.name}: {client.verdict} (exit {client.exit_code}: {client.last_line!r})"
                )
        if self.recovery_s is not None and self.recovery_s > RECOVERY_LIMIT_S:
            found.append(f"recovery took {self.recovery_s:.1f} s (limit {RECOVERY_LIMIT_S:g} s)")
        return found

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failures": self.failures()}


def format_table(reports: Iterable[ScenarioReport]) -> str:
    rows = [
        ("scenario", "sampled", "results", "drops by reason", "held", "unacc.", "recovery", "clients told")
    ]
    for r in reports:
        a = r.accounting
        drops = ", ".join(f"{k} {v}" for k, v in a.drops.items()) or "-"
        told = "; ".join(f"{c.name}: {c.verdict}, exit {c.exit_code}" for c in r.clients)
        recovery = "-" if r.recovery_s is None else f"{r.recovery_s:.1f} s"
        held = f"{a.held_by_killed}/{a.held_allowance}" if a.held_allowance else "-"
        rows.append(
            (r.scenario, str(a.sampled), str(a.results), drops, held, str(a.unaccounted), recovery, told)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=False)) + "  " + row[-1]
        for row in rows
    ]
    return "\n".join(lines)
