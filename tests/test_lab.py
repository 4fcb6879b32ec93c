"""`lookout lab` end to end (issue 14's acceptance), as root, in one lab run of the shipped example file.

The lab: deploy/lab/four-hosts.yaml under a test-unique name: central (Redis, signaling), a bridge host,
two inference hosts with one worker each, and a client host with two `lookout stream` clients at 10 fps.
Its link to the inference host ``infb`` is capped at ``CAP_MBIT``: the example's 5 Mbit/s does not bite
at 2 x 10 fps of 33 KB frames (about 2.6 Mbit/s per worker), 1 Mbit/s does (about 260 ms per frame).
In order, against the running lab:

1. both inference hosts serve frames, and the JSON summary gives each one's share;
2. the constrained link: ``infb`` keeps delivering results, each within the frame deadline plus its own
   inference (plus a stated delivery allowance), and the drops are counted with their reason;
3. ``cut`` of ``infa`` under load: the frames it held (its consumer's pending entries) are claimed and
   ended by ``infb`` within 10 s; ``heal``: ``infa`` serves again within 10 s;
4. ``cut`` of the bridge host: the clients are told (their logs), and they reconnect once it heals;
5. the clients stop, the pipeline drains, and every frame the bridge sampled is a result or a counted
   drop, accounted from outside the services (tests/support/chaos.py: the bridge's /metrics and the Redis
   tallies, read over the lab's links from a thread inside the central namespace), not from the clients;
6. ``lab kill infb worker``: `lab up` restarts it; then ``kill -9`` of `lab up`: its services keep
   running, and ``lab down`` leaves no namespace, veth or process behind;
7. ``lab report`` saves a PNG per host (test-output/lab/) and prints the table.

The figures go to test-output/lab-report.json and stdout (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from redis import Redis

from lookout.lab import faults, netns
from lookout.lab.recorder import scrape
from lookout.lab.state import LabState, state_path
from tests.support.chaos import HELD, RESULTS, SAMPLED, CounterWatch, account, read_json_lines, split_reading
from tests.support.lab import LabRun, root_veths
from tests.support.processes import OUTPUT, REPO, run_lookout
from wire.keys import WORKER_GROUP, Keys
from wire.messages import DropReason

EXAMPLE = REPO / "deploy" / "lab" / "four-hosts.yaml"
MODEL = "yolox_nano"
CAP_MBIT = 1.0
DEADLINE_MS = 1000.0
DELIVERY_ALLOWANCE_MS = 250.0
"""Worker -> Redis -> signaling -> WebSocket -> client, on a busy 2-core machine."""
CLAIM_LIMIT_S = 10.0
REJOIN_LIMIT_S = 10.0
REPORT = OUTPUT / "lab-report.json"

T = TypeVar("T")


def _lab_skip_reason() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root: network namespaces, veth pairs and tc need CAP_NET_ADMIN"
    probe = f"lkl-probe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


SKIP = _lab_skip_reason()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Iterator[LabRun]:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["name"] = f"t{os.getpid() % 1_000_000}"
    for link in data["links"]:
        if sorted(link["between"]) == ["central", "infb"]:
            link["rate_mbit"] = CAP_MBIT
    folder = tmp_path_factory.mktemp("lab")
    lab_file = folder / "lab.yaml"
    lab_file.write_text(yaml.safe_dump(data))
    print(f"\nlab run folder: {folder}")
    run = LabRun(data["name"], lab_file, folder / "runs", shared_dir)
    try:
        yield run.start()
    finally:
        run.cleanup()


def in_central(state: LabState, function: Callable[[], T]) -> T:
    return netns.call_in_namespace(state.host("central").namespace, function)


def redis_client(state: LabState) -> Redis:
    return Redis.from_url(state.redis_url, password=state.redis_password, socket_timeout=2)


def pending(state: LabState, consumer: str | None = None) -> list[str]:
    """Entry ids of the frame stream's group still pending (of one consumer, or all)."""

    def read() -> list[str]:
        client = redis_client(state)
        try:
            found = client.xpending_range(
                Keys().frames(MODEL), WORKER_GROUP, min="-", max="+", count=1000, consumername=consumer
            )
            return [str(entry["message_id"], "ascii") for entry in found]  # type: ignore[arg-type]
        finally:
            client.close()

    return in_central(state, read)


def inferred_by(state: LabState, host: str) -> int:
    urls = [p.metrics_url for p in state.processes if p.host == host and p.kind == "worker"]
    readings = in_central(state, lambda: [scrape(url) for url in urls])
    if any(r is None for r in readings):
        return -1  # unreachable just now (a cut, or a slow link): callers wait for a reading
    return int(sum(r.get("inferred", 0) for r in readings if r is not None))


def wait(what: str, check: Callable[[], bool], timeout_s: float, interval: float = 0.2) -> float:
    """Seconds until ``check()`` holds; fails the test with ``what`` after ``timeout_s``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, f"timed out after {timeout_s:.0f} s: {what}"
        time.sleep(interval)
    return round(time.monotonic() - started, 2)


def test_lab_end_to_end(lab: LabRun) -> None:
    started = time.monotonic()
    figures: dict[str, Any] = {"cap_mbit": CAP_MBIT, "up_s": lab.up_s}
    state = lab.state()
    infa, infb = "infa", "infb"
    infa_id, infb_id = f"{lab.name}-infa-w0", f"{lab.name}-infb-w0"
    central_ns = state.host("central").namespace
    bridge_url = next(p.metrics_url for p in state.processes if p.kind == "bridge")
    watch_url = state.redis_url.replace("redis://", f"redis://:{state.redis_password}@")
    with netns.in_namespace(central_ns):  # its sockets and its thread stay in the central host
        watch = CounterWatch(watch_url, bridge_url, Keys(), MODEL)
        # The lab's Redis (no persistence) and its bridge started fresh with it and count from zero: the
        # baseline is zero, so that frames already in flight when the watch starts are counted too.
        watch.bridge.read({SAMPLED: 0})
        watch.redis.read({RESULTS: 0})
        watch.start()
    try:
        # 1. Both inference hosts serve, and the summary gives their shares.
        wait(
            "both inference hosts serve",
            lambda: min(inferred_by(state, infa), inferred_by(state, infb)) >= 5,
            90,
        )

        time.sleep(6.0)  # the constrained-link check (2.) reads the results of this window

        # The recorder scrapes every 2 s over the same links (the capped one too): wait for its summary.
        def both_shares() -> bool:
            try:
                shares = json.loads(state.summary_json.read_text())["inference_share"]
            except (OSError, ValueError, KeyError):
                return False
            return set(shares) == {infa, infb} and min(shares.values()) > 0

        wait("the recorder's summary shows both inference hosts' shares", both_shares, 30)
        summary = json.loads(state.summary_json.read_text())
        figures["shares_before_faults"] = summary["inference_share"]
        before_faults_ms = time.time() * 1000.0

        # 3. Cut infa while it holds frames: infb claims and ends them within 10 s.
        wait("infa holds a frame", lambda: bool(pending(state, infa_id)), 10, interval=0.05)
        cut_at = time.monotonic()
        faults.cut(state, infa)
        time.sleep(0.3)  # a read blocked in Redis before the cut may still hand infa one more entry
        held = pending(state, infa_id)
        served_by_b = inferred_by(state, infb)
        assert held and served_by_b >= 0, "infa held nothing to claim at the cut"
        wait(
            f"infa's {len(held)} pending frames claimed and ended",
            lambda: not set(held) & set(pending(state)),
            CLAIM_LIMIT_S + 5,
        )
        figures["cut_infa"] = {"held": len(held), "claimed_and_ended_s": round(time.monotonic() - cut_at, 2)}
        assert time.monotonic() - cut_at <= CLAIM_LIMIT_S, figures["cut_infa"]
        assert not pending(state, infa_id)
        wait("infb serves on while infa is cut", lambda: inferred_by(state, infb) > served_by_b, 10)

        # ... and heal: infa serves again within 10 s.
        outs = {p.name: Path(p.out) for p in state.processes if p.kind == "stream"}
        heal_at, heal_wall_ms = time.monotonic(), time.time() * 1000.0

        def infa_serves_again() -> bool:  # a result from infa for a frame sampled after the heal
            return any(
                m.get("worker") == infa_id and m["received_ms"] >= heal_wall_ms
                for out in outs.values()
                for m in read_json_lines(out)
            )

        healed = lab.cli("heal", infa)
        assert "healed infa" in healed.stdout, healed.stderr
        wait("infa serves again", infa_serves_again, REJOIN_LIMIT_S + 10)
        rejoin_s = round(time.monotonic() - heal_at, 2)  # from before the CLI call
        figures["heal_infa_serves_again_s"] = rejoin_s
        assert rejoin_s <= REJOIN_LIMIT_S

        # 4. Cut the bridge host: the clients are told, and reconnect when it heals.
        logs = {p.name: Path(p.log) for p in state.processes if p.kind == "stream"}
        offsets = {name: path.stat().st_size for name, path in logs.items()}
        cut = lab.cli("cut", "edge")
        assert "cut edge off" in cut.stdout, cut.stderr
        told_s = wait(
            "every client told its stream was lost",
            lambda: all("stream lost" in _read_from(path, offsets[name]) for name, path in logs.items()),
            30,
        )
        time.sleep(2.0)
        heal_wall = time.time()
        lab.cli("heal", "edge")

        def reconnected() -> bool:
            return all(
                any(
                    m.get("type") == "detections" and m["received_ms"] / 1000 >= heal_wall
                    for m in read_json_lines(out)
                )
                for out in outs.values()
            )

        figures["cut_bridge"] = {
            "clients_told_s": told_s,
            "results_again_after_heal_s": wait("clients back", reconnected, 40),
        }
        told = {
            name: _read_from(path, offsets[name]).split("stream lost", 1)[1].split(")")[0]
            for name, path in logs.items()
        }
        figures["cut_bridge"]["told"] = told

        # 5. Stop the clients, drain, account from outside.
        for process in state.processes:
            if process.kind == "stream":
                found = netns.same_process(process.pid, process.create_time)
                if found is not None:
                    found.send_signal(signal.SIGTERM)
        drained = watch.drain(quiet_s=3.0, timeout_s=30.0)
    finally:
        watch.stop()
    sampled, results, drops = split_reading(watch.totals())
    books = account(sampled, results, drops)
    figures["accounting"] = vars(books)
    assert drained, "the counters never settled after the clients stopped"
    # No frame may be lost (unaccounted > 0). A frame may be counted twice in one known way, shown apart:
    # a write that timed out while the bridge host was cut (a frame's XADD, or a drop's record) is
    # counted by the bridge itself and held for the Redis tally, but the command may still have reached
    # Redis once the link healed (TCP retransmits it), and the frame is then ended there too. The bridge
    # cannot know, having no entry id to claim it by. Bounded by the drops it held (lookout_drops_held).
    ambiguous = watch.totals().get(HELD, 0)
    figures["accounting"]["counted_twice_bound"] = ambiguous
    assert -ambiguous <= books.unaccounted <= 0, books
    assert sampled > 150 and results > 0  # two 10 fps streams for well over 10 s, faults aside

    # 2. The constrained link, from the clients' own lines before the faults: results kept coming from
    # infb, each within the deadline plus its own inference (and the delivery allowance).
    lines = [m for out in outs.values() for m in read_json_lines(out) if m.get("type") == "detections"]
    from_b = [m for m in lines if m["worker"] == infb_id and m["received_ms"] < before_faults_ms]
    assert len(from_b) >= 10, f"infb delivered only {len(from_b)} results over its {CAP_MBIT:g} Mbit/s link"
    over = []
    for m in from_b:
        timings = m["timings"]
        one_inference = sum(
            timings.get(k, 0.0) for k in ("decode_ms", "preprocess_ms", "inference_ms", "postprocess_ms")
        )
        if m["latency_ms"] > DEADLINE_MS + one_inference + DELIVERY_ALLOWANCE_MS:
            over.append(round(m["latency_ms"]))
    latencies = sorted(m["latency_ms"] for m in from_b)
    figures["constrained_link"] = {
        "infb_results": len(from_b),
        "infa_results": sum(
            1 for m in lines if m["worker"] == infa_id and m["received_ms"] < before_faults_ms
        ),
        "latency_p50_ms": round(latencies[len(latencies) // 2]),
        "latency_max_ms": round(latencies[-1]),
        "over_bound": over,
        "drops_by_reason": books.drops,
    }
    assert not over, figures["constrained_link"]
    assert books.drops and set(books.drops) <= {r.value for r in DropReason}, books.drops

    # `lab kill`: a role's processes get SIGKILL, and `lab up` starts them again after its pause.
    old_worker = next(p for p in lab.state().processes if p.name == "infb-worker0")
    killed_at = time.monotonic()
    killed = lab.cli("kill", infb, "worker")
    assert "killed infb-worker0" in killed.stdout, killed.stderr
    assert netns.same_process(old_worker.pid, old_worker.create_time) is None

    def restarted() -> bool:
        again = [p for p in lab.state().processes if p.name == "infb-worker0"]
        return bool(again) and again[0].pid != old_worker.pid and again[0].restarts == 1

    wait("lab up restarts the killed worker", restarted, 15)
    figures["kill_worker_restarted_s"] = round(time.monotonic() - killed_at, 2)

    # 6. kill -9 of `lab up`, then `lab down`.
    state = lab.state()
    alive_before = [p.name for p in state.processes if netns.same_process(p.pid, p.create_time)]
    lab.up.send_signal(signal.SIGKILL)
    lab.up.wait(10)
    time.sleep(0.5)
    survivors = [p.name for p in state.processes if netns.same_process(p.pid, p.create_time)]
    assert survivors, "nothing survived the kill -9 of lab up: the test would not show that down cleans up"
    decoy = f"lkl-{lab.name}-decoy"  # named like the lab's, but not made by it: down must leave it
    subprocess.run(["ip", "netns", "add", decoy], check=True)
    try:
        down_started = time.monotonic()
        down = lab.cli("down")
        figures["down_s"] = round(time.monotonic() - down_started, 1)
        assert down.returncode == 0, down.stderr
        assert decoy in netns.namespaces(), "lab down deleted a namespace it had not made"
    finally:
        subprocess.run(["ip", "netns", "del", decoy], check=False)
    assert not [n for n in netns.namespaces() if n.startswith(f"lkl-{lab.name}-")], netns.namespaces()
    left = [p.name for p in state.processes if netns.same_process(p.pid, p.create_time)]
    assert not left, f"left running after lab down: {left}"
    assert root_veths() == lab.veths_before, "a veth appeared in the machine's own namespace"
    assert not state_path(lab.lab_dir, lab.name).exists()
    figures["teardown"] = {
        "alive_before_kill": len(alive_before),
        "survived_kill_9": len(survivors),
        "left_after_down": 0,
    }

    # 7. The report: a PNG per host, and the table.
    out_dir = OUTPUT / "lab"
    report = lab.cli("report", "--out", str(out_dir))
    assert report.returncode == 0, report.stderr
    plots = sorted(out_dir.glob("*.png"))
    assert {p.stem for p in plots} == {h.name for h in state.hosts}
    assert all(p.stat().st_size > 20_000 for p in plots)
    final = json.loads(state.summary_json.read_text())
    figures["final_shares"] = final["inference_share"]
    figures["report_table"] = report.stdout
    figures["duration_s"] = round(time.monotonic() - started, 1)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"\nlab report\n{json.dumps({k: v for k, v in figures.items() if k != 'report_table'}, indent=1)}")
    print(report.stdout)
    assert min(final["inference_share"].values()) > 0


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as file:
        file.seek(offset)
        return file.read().decode(errors="replace")


def test_a_lab_file_asking_for_delay_without_netem_is_refused_or_warned(lab: LabRun) -> None:
    """The explicit rule: ``without_netem: refuse`` stops `lab up` with one line (exit 2) and leaves
    nothing behind; the example's ``warn`` said so in one line and ran with the caps only."""
    if "no sch_netem" not in lab.up_output():
        pytest.skip("this kernel has sch_netem: the delay was applied (checked in the lab's qdiscs)")
    data = yaml.safe_load(EXAMPLE.read_text())
    data["name"] = f"r{os.getpid() % 1_000_000}"
    data["without_netem"] = "refuse"
    refused_file = lab.lab_file.with_name("refuse.yaml")
    refused_file.write_text(yaml.safe_dump(data))
    done = run_lookout("lab", "up", refused_file, env=lab.env, timeout=60)
    assert done.returncode == 2, done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("lookout: error:")]
    assert len(error) == 1 and "no sch_netem" in error[0] and "without_netem: refuse" in error[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not [n for n in netns.namespaces() if n.startswith(f"lkl-{data['name']}-")]
