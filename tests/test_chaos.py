"""Chaos (issue #12's acceptance): two live 10 fps streams while Redis, a worker, the bridge or signaling
is killed with ``kill -9``, accounted from outside by ``tests/support/chaos.py``.

For each fault the report gives frames sampled, results, drops by reason, frames held by a killed bridge
(lost with it, bounded), frames unaccounted (must be 0), the time to recovery (first result for a frame
received after the part is back; at most 5 s) and what each client was told. A client must carry on,
reconnect by itself (``--reconnect`` where `lookout stream` has it), or exit non-zero with a reason.

The report is printed (``pytest -s``) and written to test-output/chaos-report.json. The checker's own
logic is tested first, on crafted inputs: a checker that cannot see a lost frame would prove nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter
from redis import Redis

from tests.support.chaos import (
    BRIDGE_DROP,
    DROP,
    HELD_PER_SESSION,
    RECOVERY_LIMIT_S,
    RESULTS,
    SAMPLED,
    ClientReport,
    CounterWatch,
    EpochTotals,
    ScenarioReport,
    account,
    bridge_log_summary,
    format_table,
    judge_client,
    split_reading,
)
from tests.support.chaos_stack import ChaosStack, StreamClient, log_text
from tests.support.processes import OUTPUT, run_lookout
from tests.support.redis_server import RedisServer
from wire.keys import WORKER_GROUP, Keys
from wire.metrics import start_metrics_server

MODEL = "yolox_nano"
FPS = 10.0
STREAMS = 2
LOAD_BEFORE_FAULT_S = 4.0
WATCH_AFTER_BACK_S = RECOVERY_LIMIT_S + 1.0
REPORT = OUTPUT / "chaos-report.json"


# --- the checker on crafted inputs ------------------------------------------------------------------------
def test_a_missing_frame_is_unaccounted() -> None:
    books = account(100, 80, {"superseded": 15, "deadline_expired": 4})
    assert (books.unaccounted, books.held_by_killed) == (1, 0)
    assert account(100, 80, {"superseded": 20}).unaccounted == 0


def test_a_frame_counted_twice_is_negative_unaccounted() -> None:
    assert account(10, 8, {"timeout": 3}).unaccounted == -1


def test_a_killed_bridge_may_hold_only_its_bound() -> None:
    within = account(100, 90, {"superseded": 6}, held_allowance=6)
    assert (within.held_by_killed, within.unaccounted) == (4, 0)
    beyond = account(100, 80, {"superseded": 6}, held_allowance=6)
    assert (beyond.held_by_killed, beyond.unaccounted) == (6, 8)


def test_epoch_totals_add_up_across_restarts_from_zero() -> None:
    totals = EpochTotals()
    totals.read({SAMPLED: 40})  # the baseline: what was counted before the scenario
    totals.read({SAMPLED: 55, DROP + "superseded": 2})
    totals.restart()  # the process died; its successor counts from zero
    totals.read({SAMPLED: 7})
    assert totals.totals() == {SAMPLED: 22, DROP + "superseded": 2}
    assert split_reading(totals.totals()) == (22, 0, {"superseded": 2})


def test_clients_are_judged_by_how_they_ended() -> None:
    back = 1000.0
    line = {"type": "detections", "session": "a", "seq": 1, "received_ms": 1_001_000.0, "latency_ms": 500.0}
    late = {**line, "session": "b", "received_ms": 1_007_000.0}

    def judge(messages: list[dict[str, Any]], code: int | None, itself: bool, log: str = "x") -> ClientReport:
        return judge_client("c", messages, exit_code=code, exited_by_itself=itself, log=log, back_wall_s=back)

    assert judge([line], 0, False).ok and judge([line], 0, False).recovery_s == 1.5
    assert judge([line, {**line, "session": "b"}], 0, False).verdict == "reconnected"
    assert not judge([], 0, True).ok
    assert judge([], 2, True, "lookout: error: the server ended the stream").ok
    assert not judge([], 1, True, "Traceback (most recent call last):\n  boom").ok
    assert not judge([], 0, False).ok
    assert not judge([late], 0, False).ok
    told_to_reconnect = judge_client(
        "c", [], exit_code=2, exited_by_itself=True, log="gave up", back_wall_s=back, reconnects=True
    )
    assert not told_to_reconnect.ok


def test_the_watch_counts_across_a_redis_kill_and_a_bridge_restart() -> None:
    """The real readers: a /metrics endpoint and a redis-server killed with SIGKILL and restarted."""
    registry = CollectorRegistry()
    frames_in = Counter("lookout_frames_in", "", ["site", "model"], registry=registry)
    dropped = Counter("lookout_frames_dropped", "", ["model", "site", "reason"], registry=registry)
    server, _thread = start_metrics_server(0, "127.0.0.1", registry)
    redis_server = RedisServer()
    redis_server.start()
    keys = Keys()
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    watch = CounterWatch(redis_server.url, url, keys, MODEL)
    try:
        frames_in.labels(site="bridge", model=MODEL).inc(5)  # before the baseline: not counted
        watch.start()
        client = Redis.from_url(redis_server.url)
        frames_in.labels(site="bridge", model=MODEL).inc(4)
        client.incrby(keys.inferred_count(MODEL), 3)
        client.hincrby(keys.drop_counts(MODEL), "superseded", 1)
        dropped.labels(model=MODEL, site="bridge", reason="superseded").inc()
        client.close()
        with watch.frozen_writes():
            server_process = redis_server.process
            assert server_process is not None
            server_process.kill()
            server_process.wait()
            redis_server.process = None
            watch.restarted("redis")
        redis_server.start()
        client = Redis.from_url(redis_server.url)
        client.hincrby(keys.drop_counts(MODEL), "redis_unavailable", 2)  # the new Redis counts from 0
        client.close()
        watch.restarted("bridge")  # as if the bridge was replaced: all 10 its successor reads are new
        frames_in.labels(site="bridge", model=MODEL).inc(1)
        time.sleep(0.5)
        assert watch.totals() == {
            SAMPLED: 14,
            RESULTS: 3,
            DROP + "superseded": 1,
            DROP + "redis_unavailable": 2,
            BRIDGE_DROP + "superseded": 2,  # 1 before the restart, and the successor's 1
        }
    finally:
        watch.stop()
        server.shutdown()
        redis_server.stop()


def test_the_bridge_log_is_summarised() -> None:
    log = (
        "x: bridge b: session s1 answered (model m, 10.0 fps)\n"
        "y: session s1: closing (hung up by signaling)\n"
    )
    assert bridge_log_summary(log) == {
        "answered": 1,
        "closed": {"hung up by signaling": 1},
        "traceback": False,
    }


# --- the stack under chaos --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chaos(shared_dir: Path) -> Iterator[ChaosStack]:
    stack = ChaosStack(shared_dir / "models", workers=2)
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def stream_extra() -> list[str]:
    """``--reconnect`` where `lookout stream` has it (issue #12); without it the clients are judged as-is."""
    helped = run_lookout("stream", "--help", timeout=60)
    return ["--reconnect"] if "--reconnect" in helped.stdout else []


@pytest.fixture(scope="module")
def reports() -> Iterator[list[ScenarioReport]]:
    collected: list[ScenarioReport] = []
    yield collected
    if collected:
        print("\n\nchaos report\n" + format_table(collected))


Faulted = tuple[float, int, list[str]]
"""The wall-clock time the part is back, the frames a killed bridge may have held (``HELD_PER_SESSION``
per session it served), and notes for the report."""
Fault = Callable[[ChaosStack, CounterWatch, list[StreamClient]], Faulted]


def pending_by_worker(stack: ChaosStack) -> dict[str, int]:
    """Frames each worker has claimed and not ended (the consumer group's pending list)."""
    client = Redis.from_url(stack.live.redis_server.url)
    try:
        pending = client.xpending(stack.live.keys.frames(MODEL), WORKER_GROUP)
    finally:
        client.close()
    return {c["name"].decode(): int(c["pending"]) for c in pending["consumers"]}


def kill_worker(stack: ChaosStack, watch: CounterWatch, clients: list[StreamClient]) -> Faulted:
    # A worker caught holding frames, so that the other worker has something to claim.
    deadline = time.monotonic() + 5
    victims: list[str] = []
    while not victims and time.monotonic() < deadline:
        victims = [name for name, n in pending_by_worker(stack).items() if n and name in stack.live.workers]
    victim = victims[0] if victims else sorted(stack.live.workers)[0]
    stack.live.workers[victim].kill9()
    back = time.time()  # the other worker is there all along: the service is "back" at once
    held = pending_by_worker(stack).get(victim, 0)  # a dead consumer's entries stay until claimed
    stack.restart_worker(victim)  # not waited for: it loads beside the running streams
    return back, 0, [f"killed {victim} holding {held} claimed frames"]


def kill_bridge(stack: ChaosStack, watch: CounterWatch, clients: list[StreamClient]) -> Faulted:
    old = stack.bridge.name
    sessions = sum(c.process.alive() for c in clients)  # what it served when it died
    with watch.frozen_writes():
        stack.bridge.kill9()
        watch.restarted("bridge")
    stack.start_bridge()  # a fresh id, as a restarted bridge gets by default
    client = Redis.from_url(stack.live.redis_server.url)
    try:
        deadline = time.monotonic() + 30
        while client.exists(stack.live.keys.bridge(old)) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        client.close()
    # Back: a new bridge serves, and the dead one's heartbeat has expired (signaling can know it is dead).
    return time.time(), HELD_PER_SESSION * sessions, [f"killed {old}; restarted as {stack.bridge.name}"]


def kill_signaling(stack: ChaosStack, watch: CounterWatch, clients: list[StreamClient]) -> Faulted:
    assert stack.live.signaling is not None
    stack.live.signaling.kill9()
    stack.restart_signaling()
    deadline = time.monotonic() + 60
    while not stack.live.healthy():
        assert time.monotonic() < deadline, f"signaling did not come back\n{stack.live.logs()}"
        time.sleep(0.1)
    return time.time(), 0, []


def kill_redis(stack: ChaosStack, watch: CounterWatch, clients: list[StreamClient]) -> Faulted:
    with watch.frozen_writes():
        stack.kill_redis()
        watch.restarted("redis")
    time.sleep(3.0)
    stack.live.redis_server.start()  # the same port, empty (no persistence, as `lookout up` runs it)
    return time.time(), 0, []


SCENARIOS: dict[str, Fault] = {
    "worker kill -9": kill_worker,
    "bridge kill -9": kill_bridge,
    "signaling kill -9": kill_signaling,
    "redis kill -9, back after 3 s": kill_redis,
}


def wait_for_results(clients: list[StreamClient], count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(c.results() >= count for c in clients):
        for c in clients:
            assert c.process.alive(), f"{c.name} exited before streaming:\n{c.process.log()[-3000:]}"
        assert time.monotonic() < deadline, "no results from the streams:\n" + "\n".join(
            c.process.log()[-2000:] for c in clients
        )
        time.sleep(0.2)


def run_on(clients: list[StreamClient], back: float) -> None:
    """Keep the load on for WATCH_AFTER_BACK_S after ``back`` (less if every client has exited)."""
    while time.time() < back + WATCH_AFTER_BACK_S and any(c.process.alive() for c in clients):
        for c in clients:
            c.note_exit()
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_chaos(
    scenario: str,
    chaos: ChaosStack,
    stream_extra: list[str],
    video_path: Path,
    tmp_path: Path,
    reports: list[ScenarioReport],
) -> None:
    started = time.monotonic()
    chaos.ensure_whole()
    watch = CounterWatch(chaos.live.redis_server.url, chaos.bridge_metrics_url, chaos.live.keys, MODEL)
    watch.start()
    log_start = {p.name: len(log_text(p)) for p in chaos.bridge_logs}  # this scenario's lines only
    slug = scenario.split()[0]
    clients = [
        StreamClient(
            f"chaos-{slug}-stream{i}",
            chaos.live,
            video_path,
            tmp_path / f"s{i}.jsonl",
            fps=FPS,
            extra=stream_extra,
        )
        for i in range(STREAMS)
    ]
    fault_ran = False
    try:
        wait_for_results(clients, 3, timeout_s=90)
        time.sleep(LOAD_BEFORE_FAULT_S)
        back, held_allowance, notes = SCENARIOS[scenario](chaos, watch, clients)
        run_on(clients, back)
        fault_ran = True
    finally:
        codes = [c.stop() for c in clients]
        drained = fault_ran and watch.drain()  # the watch is stopped even when the scenario broke
        watch.stop()
    sampled, results, drops = split_reading(watch.totals())
    streamed = sum(c.streamed_s() for c in clients)
    judged = [
        judge_client(
            c.name,
            c.messages(),
            exit_code=code,
            exited_by_itself=c.exited_by_itself,
            log=log_text(c.process),
            back_wall_s=back,
            reconnects="--reconnect" in stream_extra,
        )
        for c, code in zip(clients, codes, strict=True)
    ]
    recoveries = [j.recovery_s for j in judged if j.recovery_s is not None and not j.exited_by_itself]
    report = ScenarioReport(
        scenario=scenario,
        accounting=account(sampled, results, drops, held_allowance=held_allowance),
        recovery_s=max(recoveries) if recoveries else None,
        clients=judged,
        bridge_log=[
            {"bridge": p.name, **bridge_log_summary(log_text(p)[log_start.get(p.name, 0) :])}
            for p in chaos.bridge_logs
            if p.name not in log_start or len(log_text(p)) > log_start[p.name]
        ],
        drained=drained,
        duration_s=round(time.monotonic() - started, 1),
        notes=[
            *notes,
            f"the bridge's own /metrics counted drops: {bridge_counted_drops(watch.totals())}",
            f"sampled {sampled / max(streamed, 0.1):.1f} frames per stream-second ({FPS:g} asked)",
            f"delivered to clients: {sum(j.results for j in judged)} results",
            f"client flags: {stream_extra}",
        ],
    )
    reports.append(report)
    write_report(reports)
    print(f"\n{format_table([report])}")
    assert not report.failures(), f"{scenario}: {report.failures()}\n{json.dumps(report.as_dict(), indent=1)}"


def bridge_counted_drops(totals: dict[str, int]) -> dict[str, int]:
    return {k.removeprefix(BRIDGE_DROP): v for k, v in totals.items() if k.startswith(BRIDGE_DROP) and v}


def write_report(reports: list[ScenarioReport]) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps([r.as_dict() for r in reports], indent=1) + "\n")
