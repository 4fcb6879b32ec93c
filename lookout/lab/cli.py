"""`lookout lab up|down|cut|heal|kill|report`: the lab's commands (docs/lab.md)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from runtime.settings_cli import add_settings_arguments, load_settings
from wire.config import LabSettings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `lookout lab ...` to `lookout`."""
    parser = subparsers.add_parser(
        "lab",
        help="an emulated multi-host lab on this machine: namespaces, shaped links, faults, recording",
        description="Run Lookout over several emulated hosts on this machine (root): one network namespace "
        "per host, joined through a Linux bridge by veth pairs with link-local addresses, links shaped with "
        "tc, the same services as the Compose profiles, and a recording of each host's CPU, memory and "
        "Lookout metrics. See docs/lab.md.",
    )
    actions = parser.add_subparsers(dest="lab_command", required=True, metavar="ACTION")

    def action(name: str, help_text: str, func: object) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        add_settings_arguments(sub, LabSettings)
        sub.set_defaults(func=func)
        return sub

    up = action(
        "up", "build the lab of a lab file, start its services and supervise them (Ctrl-C: down)", run_up
    )
    up.add_argument("lab_file", type=Path, metavar="LAB.yaml", help="the lab file (see deploy/lab/)")
    up.add_argument(
        "--dry-run", action="store_true", help="print the ip/tc commands and services, start nothing"
    )
    for name, help_text, func in (
        (
            "down",
            "remove every process, link and namespace of a lab (also after a crash of `lab up`)",
            run_down,
        ),
        ("report", "plot each host's recording (PNG) and print a table", run_report),
        ("record", "(started by `lab up` inside the central host) write the lab's recording", run_record),
    ):
        sub = action(name, help_text, func)
        sub.add_argument("--lab", default=None, help="lab name (default: the only lab with a state file)")
        if name == "report":
            sub.add_argument(
                "--out", type=Path, default=None, help="folder of the PNGs (default: LAB_DIR/LAB/plots)"
            )
    for name, help_text, func in (
        ("cut", "cut a host off: its port on the lab's switch goes down", run_cut),
        ("heal", "connect a cut host again", run_heal),
        ("kill", "SIGKILL a host's processes of one kind (`lab up` restarts them)", run_kill),
    ):
        sub = action(name, help_text, func)
        sub.add_argument("host", help="host name from the lab file")
        if name == "kill":
            sub.add_argument("kind", choices=("redis", "signaling", "bridge", "worker", "stream", "recorder"))
        sub.add_argument("--lab", default=None, help="lab name (default: the only lab with a state file)")


def _settings(args: argparse.Namespace) -> LabSettings:
    return load_settings(LabSettings, args, command=f"lab {args.lab_command}")


def run_up(args: argparse.Namespace) -> int:
    from lookout.lab import plan
    from lookout.lab.model import load_lab
    from lookout.lab.up import run_lab_up

    settings = _settings(args)
    lab = load_lab(args.lab_file)
    if args.dry_run:
        for command in plan.network_commands(lab, netem=True):
            print(shlex.join(command))
        for host in plan.host_plans(lab):
            print(f"# {host.name} ({host.role.value}): namespace {host.namespace}, address {host.address}")
        return 0
    return run_lab_up(lab, args.lab_file, settings)


def _state_file(args: argparse.Namespace) -> tuple[LabSettings, Path]:
    from lookout.lab.state import find_state

    settings = _settings(args)
    return settings, find_state(settings.lab_dir.resolve(), args.lab)


def run_down(args: argparse.Namespace) -> int:
    from lookout.lab.down import run_lab_down

    settings, path = _state_file(args)
    return run_lab_down(path, grace_s=settings.lab_stop_grace_s)


def run_cut(args: argparse.Namespace, *, heal: bool = False) -> int:
    from lookout.lab import faults, netns
    from lookout.lab.state import read_state

    netns.require_root()
    path = _state_file(args)[1]
    print(f"lookout lab: {faults.cut(read_state(path), args.host, heal=heal)}", flush=True)
    return 0


def run_heal(args: argparse.Namespace) -> int:
    return run_cut(args, heal=True)


def run_kill(args: argparse.Namespace) -> int:
    from lookout.lab import faults, netns
    from lookout.lab.state import read_state

    netns.require_root()
    path = _state_file(args)[1]
    print(f"lookout lab: {faults.kill(read_state(path), args.host, args.kind)}", flush=True)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from lookout.lab.report import report

    settings = _settings(args)
    lab_dir = settings.lab_dir.resolve()
    if args.lab:
        run_dir = lab_dir / args.lab
    else:
        found = sorted(path.parent for path in lab_dir.glob("*/record.csv")) if lab_dir.is_dir() else []
        if len(found) != 1:
            from lookout.lab.model import LabFileError

            raise LabFileError(
                f"name the lab with --lab ({len(found)} recordings under {lab_dir}: "
                f"{', '.join(p.name for p in found) or 'none'})"
            )
        run_dir = found[0]
    plots, text = report(run_dir, args.out)
    print(text)
    for path in plots:
        print(f"plot: {path}")
    return 0


def run_record(args: argparse.Namespace) -> int:
    from lookout.lab.recorder import record

    path = _state_file(args)[1]
    return record(path)
