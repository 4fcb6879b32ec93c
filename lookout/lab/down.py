"""`lookout lab down`: remove every process, link and namespace a lab made, and nothing else.

What to remove comes from the state file only: the processes it lists (each checked against its start
time, so that a reused pid is never hit), then whatever still runs inside the lab's namespaces (those
can only be the lab's: nothing else starts processes in them), then the namespaces the lab created,
which takes every veth and the switch's bridge with them (the lab never creates a link outside its own
namespaces). If the lab's `lab up` still runs, it is asked to stop first (SIGTERM) and does this itself.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil

from lookout.lab import netns
from lookout.lab.state import LabState, ProcessState, read_state, remove_state

STOP_ORDER = (("stream",), ("bridge", "worker", "signaling", "recorder"), ("redis",))
"""Clients first, so that no new frame enters while the rest stops (together); Redis last."""


def teardown(state: LabState, path: Path, *, grace_s: float) -> str:
    """Stop the lab's processes, delete its namespaces and its state file; one line of what went."""
    stopped = 0
    for kinds in STOP_ORDER:
        mine = [p for p in state.processes if p.kind in kinds]
        stopped += len(netns.stop_processes(_alive(mine), grace_s))
    strays = 0
    for name in state.namespaces:
        if name in netns.namespaces():
            leftovers = [psutil.Process(pid) for pid in netns.namespace_pids(name) if psutil.pid_exists(pid)]
            strays += len(netns.stop_processes(leftovers, 2.0))
    deleted = [name for name in reversed(state.namespaces) if netns.delete_namespace(name)]
    remove_state(path)
    return (
        f"lab {state.lab} is down: {stopped} process(es) stopped"
        + (f" and {strays} more found in its namespaces" if strays else "")
        + f", {len(deleted)} namespace(s) deleted with their links; "
        f"recordings and logs kept in {state.run_dir}"
    )


def _alive(processes: list[ProcessState]) -> list[psutil.Process]:
    found = [netns.same_process(p.pid, p.create_time) for p in processes]
    return [p for p in found if p is not None]


def run_lab_down(path: Path, *, grace_s: float) -> int:
    netns.require_root()
    state = read_state(path)
    supervisor = netns.same_process(state.supervisor_pid, state.supervisor_create_time)
    if supervisor is not None:
        print(f"lookout lab: asking `lab up` (pid {supervisor.pid}) to take lab {state.lab} down", flush=True)
        supervisor.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 3 * grace_s + 30
        while supervisor.is_running() and time.monotonic() < deadline:
            time.sleep(0.2)
            if supervisor.status() == psutil.STATUS_ZOMBIE:
                break
        if supervisor.is_running() and supervisor.status() != psutil.STATUS_ZOMBIE:
            print("lookout lab: `lab up` did not finish: killing it and removing the rest here", flush=True)
            supervisor.kill()
        if not path.exists():
            print(f"lookout lab: lab {state.lab} is down", flush=True)
            return 0
        state = read_state(path)  # what it had not removed yet
    print(f"lookout lab: {teardown(state, path, grace_s=grace_s)}", flush=True)
    return 0
