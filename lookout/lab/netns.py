"""The IO of a lab: ``ip``/``tc`` commands, network namespaces, and processes started inside them.

``ip`` and ``tc`` (iproute2) are run as subprocesses: the commands are the plan's (``lookout.lab.plan``),
readable as they are printed and documented, and the same a user would type.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import psutil

from wire.errors import LookoutError

NETNS_DIR = Path("/run/netns")


class LabError(LookoutError):
    """The lab cannot be created, changed or removed on this machine."""


def require_root() -> None:
    """Namespaces, veths and qdiscs need root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2."""
    if os.geteuid() != 0:
        raise LabError("lookout lab needs root (network namespaces, veth pairs and tc need CAP_NET_ADMIN)")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise LabError(f"`{tool}` not found: install iproute2 (make system-deps)")


def run(command: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one ``ip``/``tc`` command; on failure, ``LabError`` with the command and its own error line."""
    done = subprocess.run(list(command), capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        said = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise LabError(f"`{' '.join(command)}` failed: {said}")
    return done


def namespaces() -> set[str]:
    """The names of every network namespace ``ip netns`` knows."""
    listed = run(("ip", "netns", "list"), check=False).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


def add_namespace(name: str) -> None:
    if name in namespaces():
        raise LabError(
            f"network namespace {name} exists already: another lab of this name is up "
            "(`lookout lab down --lab NAME`), or remove it with `ip netns del` if it is a leftover"
        )
    run(("ip", "netns", "add", name))


def delete_namespace(name: str) -> bool:
    """Delete a namespace (and with it its veths and bridge); False if it was not there."""
    if name not in namespaces():
        return False
    run(("ip", "netns", "del", name))
    return True


def namespace_pids(name: str) -> list[int]:
    """Every process whose network namespace is ``name`` (``ip netns pids``)."""
    listed = run(("ip", "netns", "pids", name), check=False).stdout
    return [int(word) for word in listed.split() if word.isdigit()]


def has_netem(probe: tuple[Sequence[str], Sequence[str]]) -> bool:
    """Whether ``tc`` can add a netem qdisc here (the probe adds one and removes it)."""
    add, delete = probe
    if run(add, check=False).returncode != 0:
        return False
    run(delete, check=False)
    return True


def namespace_inode(name: str) -> int:
    return os.stat(NETNS_DIR / name).st_ino


def process_namespace_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def spawn(namespace: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` inside ``namespace`` (``ip netns exec`` execs it: the pid is the command's), in a
    session of its own, its output appended to ``log``. It does not die with its parent: ``lab down``
    finds it through the state file and the namespace."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        child = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            start_new_session=True,
        )
    return child


def same_process(pid: int, create_time: float) -> psutil.Process | None:
    """The process ``pid`` if it is still the one started at ``create_time`` (not a reused pid)."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - create_time) > 0.05 or process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except psutil.Error:
        return None


def signal_group(process: psutil.Process, sig: int) -> None:
    """``sig`` to the process's group (it leads one: ``spawn`` starts a session), else to it alone."""
    with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)


def stop_processes(processes: Iterable[psutil.Process], grace_s: float) -> list[int]:
    """SIGTERM to each (and its group), SIGKILL to what is left after ``grace_s``; the pids stopped."""
    targets = [p for p in processes if p.is_running()]
    for process in targets:
        signal_group(process, signal.SIGTERM)
    _gone, alive = psutil.wait_procs(targets, timeout=grace_s)
    for process in alive:
        signal_group(process, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in targets]


def wait_gone(pids: Iterable[int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    waiting = set(pids)
    while waiting and time.monotonic() < deadline:
        waiting = {pid for pid in waiting if psutil.pid_exists(pid)}
        time.sleep(0.1)
    return not waiting


CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def in_namespace(name: str) -> Iterator[None]:
    """Run the calling thread (only it) inside network namespace ``name``, then move it back.

    Sockets opened meanwhile stay in that namespace for good: the lab's own checks reach the lab's
    addresses over its links this way, and nothing is routed out of the lab to reach them.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(NETNS_DIR / name, os.O_RDONLY)
    except OSError as exc:
        os.close(own)
        raise LabError(f"no network namespace {name}: {exc.strerror}") from None
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise LabError(f"cannot enter network namespace {name}: {os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover - the thread's own namespace
                raise LabError(f"cannot leave network namespace {name}")
    finally:
        os.close(target)
        os.close(own)


T = TypeVar("T")


def call_in_namespace(name: str, function: Callable[[], T], timeout_s: float = 30.0) -> T:
    """``function()`` on a fresh thread inside namespace ``name``: this thread never changes namespace."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            with in_namespace(name):
                result.append(function())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name=f"in-{name}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if error:
        raise error[0]
    if not result:
        raise LabError(f"a check inside {name} did not finish within {timeout_s:.0f} s")
    return result[0]
