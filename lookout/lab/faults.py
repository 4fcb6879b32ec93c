"""`lookout lab cut HOST`, `heal HOST` and `kill HOST KIND`: faults while traffic runs."""

from __future__ import annotations

import signal

from lookout.lab import netns, plan
from lookout.lab.model import LabFileError
from lookout.lab.state import LabState


def cut(state: LabState, host_name: str, *, heal: bool = False) -> str:
    """Take the host's port on the lab's switch down (cut) or up (heal); one line of what happened."""
    host = state.host(host_name)
    netns.run(plan.cut_command(state.lab, host.port, up=heal))
    if heal:
        return f"healed {host.name}: port {host.port} of the switch is up again"
    return f"cut {host.name} off: port {host.port} of the switch is down ({host.address} unreachable)"


def kill(state: LabState, host_name: str, kind: str) -> str:
    """SIGKILL every live process of ``kind`` on the host (a crash: `lab up` restarts it after a pause)."""
    host = state.host(host_name)
    mine = [p for p in state.processes if p.host == host.name]
    kinds = sorted({p.kind for p in mine})
    targets = [p for p in mine if p.kind == kind]
    if not targets:
        raise LabFileError(f"host {host.name} runs no {kind} (it runs: {', '.join(kinds) or 'nothing'})")
    killed = []
    for entry in targets:
        process = netns.same_process(entry.pid, entry.create_time)
        if process is not None:
            netns.signal_group(process, signal.SIGKILL)
            killed.append(f"{entry.name} (pid {entry.pid})")
    if not killed:
        return f"no {kind} of {host.name} was running (being restarted?)"
    return f"killed {', '.join(killed)} with SIGKILL; `lab up` restarts it after a pause"
