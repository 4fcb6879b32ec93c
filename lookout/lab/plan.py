"""A lab file turned into names, addresses, ``ip``/``tc`` command lines and service command lines.

Pure: nothing here touches the network or starts a process, so that the whole plan is tested on its own
(``tests/lookout/lab/test_plan.py``) and ``lookout lab up --dry-run`` can print it.

The topology is a star. Every host is a network namespace ``lkl-LAB-HOST`` with one interface, ``eth0``,
whose peer ``pN`` is a port of the Linux bridge ``br0`` in the switch namespace ``lkl-LAB--sw``. Every
veth is created inside the lab's namespaces (``ip -n``), never in the machine's own, so deleting the
namespaces removes every link, and nothing outside the lab is touched. Hosts get consecutive addresses of
the lab's link-local subnet, with the on-link route only: no default route, so nothing routes out.

A link between two hosts is an htb class on each end's ``eth0`` that the peer's address is filtered
into: the cap holds in both directions, and traffic to hosts the link does not name passes unshaped.
Under each class a short queue (``QUEUE_S`` of its rate, bfifo), or the netem qdisc that adds the
link's delay and loss where the kernel has netem.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lookout.lab.model import Host, LabFile, Role

PREFIX = "lkl-"
"""Every namespace a lab creates starts with this, then the lab's name: ``lkl-LAB-``."""
HOST_IFACE = "eth0"
SWITCH_BRIDGE = "br0"

# Ports inside the lab's own namespaces: each host has its own network stack, so these collide with
# nothing on the machine (the machine's own 6379 or 8080 are not in the lab's namespaces).
REDIS_PORT = 6379
SIGNALING_PORT = 8080
BRIDGE_METRICS_PORT = 9102
WORKER_METRICS_BASE = 9110
"""Worker ``i`` of a host serves /metrics on ``WORKER_METRICS_BASE + i``."""

Command = tuple[str, ...]


def namespace(lab: str, host: str) -> str:
    return f"{PREFIX}{lab}-{host}"


def switch_namespace(lab: str) -> str:
    """The switch's namespace; ``--`` cannot appear in a host's namespace (host names have no dash)."""
    return f"{PREFIX}{lab}--sw"


@dataclass(frozen=True)
class HostPlan:
    name: str
    role: Role
    namespace: str
    address: str
    port: str
    """The host's veth end in the switch namespace (``lab cut`` takes it down)."""


def host_plans(lab: LabFile) -> list[HostPlan]:
    base = int(lab.subnet.network_address)
    return [
        HostPlan(
            name=host.name,
            role=host.role,
            namespace=namespace(lab.name, host.name),
            address=str(ipaddress.IPv4Address(base + 1 + index)),
            port=f"p{index}",
        )
        for index, host in enumerate(lab.hosts)
    ]


def network_commands(lab: LabFile, *, netem: bool) -> list[Command]:
    """Every ``ip``/``tc`` command that builds the lab, in order (namespaces are created before).

    ``netem``: whether the kernel has sch_netem; without it delay and loss are left out (the caller has
    decided, per the lab's ``without_netem`` rule, that this is acceptable).
    """
    switch = switch_namespace(lab.name)
    prefix = lab.subnet.prefixlen
    commands: list[Command] = [
        ("ip", "-n", switch, "link", "set", "lo", "up"),
        ("ip", "-n", switch, "link", "add", SWITCH_BRIDGE, "type", "bridge"),
        ("ip", "-n", switch, "link", "set", SWITCH_BRIDGE, "up"),
    ]
    for host in host_plans(lab):
        ns = host.namespace
        commands += [
            ("ip", "-n", ns, "link", "set", "lo", "up"),
            (
                "ip",
                "-n",
                switch,
                "link",
                "add",
                host.port,
                "type",
                "veth",
                "peer",
                "name",
                HOST_IFACE,
                "netns",
                ns,
            ),
            ("ip", "-n", switch, "link", "set", host.port, "master", SWITCH_BRIDGE),
            ("ip", "-n", switch, "link", "set", host.port, "up"),
            ("ip", "-n", ns, "addr", "add", f"{host.address}/{prefix}", "dev", HOST_IFACE),
            ("ip", "-n", ns, "link", "set", HOST_IFACE, "up"),
        ]
    return commands + shaping_commands(lab, netem=netem)


QUEUE_S = 0.1
"""Each shaped class queues about this long of its rate: a capped link drops (and TCP backs off)
rather than buffering seconds of traffic in front of every other flow, as a small router buffer would.
(This kernel has htb, tbf, pfifo and bfifo, but no fq_codel, codel, sfq or fq.)"""
MIN_QUEUE_BYTES = 64_000
"""At least a TCP initial window's worth of a few replies (43 full-size packets), whatever the rate: with
less, a 33 KB frame sent at once over a slow link loses its tail and waits for a retransmission timeout
(seen at 1 Mbit/s with 6 KB: a worker got 13 frames in 90 s)."""


def queue_bytes(rate_mbit: float) -> int:
    return max(MIN_QUEUE_BYTES, int(rate_mbit * 1e6 / 8 * QUEUE_S))


def shaping_commands(lab: LabFile, *, netem: bool) -> list[Command]:
    """The htb tree on each end of every link, with a short bfifo (or the netem qdisc) under each class."""
    plans = {plan.name: plan for plan in host_plans(lab)}
    commands: list[Command] = []
    for host in lab.hosts:
        links = [link for link in lab.links if host.name in link.between]
        if not links:
            continue
        tc = ("tc", "-n", plans[host.name].namespace)
        dev = ("dev", HOST_IFACE)
        # No default class: traffic no filter picks (other hosts, ARP) is not shaped.
        commands.append((*tc, "qdisc", "add", *dev, "root", "handle", "1:", "htb"))
        for index, link in enumerate(links, start=1):
            peer = link.between[1] if link.between[0] == host.name else link.between[0]
            classid = f"1:{index:x}"  # tc reads the minor number in hex
            rate = f"{link.rate_mbit:g}mbit"
            queue = queue_bytes(link.rate_mbit)
            commands.append(
                (*tc, "class", "add", *dev, "parent", "1:", "classid", classid, "htb", "rate", rate)
            )
            commands[-1] += ("ceil", rate)
            commands.append(
                (*tc, "filter", "add", *dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32")
            )
            commands[-1] += ("match", "ip", "dst", f"{plans[peer].address}/32", "flowid", classid)
            leaf = (*tc, "qdisc", "add", *dev, "parent", classid, "handle", f"{index + 1:x}:")
            if netem and link.needs_netem:
                shape: tuple[str, ...] = ("limit", str(max(4, queue // 1500)))
                if link.delay_ms > 0:
                    shape += ("delay", f"{link.delay_ms:g}ms")
                if link.loss_percent > 0:
                    shape += ("loss", f"{link.loss_percent:g}%")
                commands.append((*leaf, "netem", *shape))
            else:
                commands.append((*leaf, "bfifo", "limit", str(queue)))
    return commands


def cut_command(lab: str, port: str, *, up: bool) -> Command:
    """Take a host's port on the switch (``HostPlan.port``) down (``lab cut``) or up again (``lab heal``).

    The host keeps its address and its sockets; its packets go nowhere until the port is up again, as
    when a cable is pulled, so TCP connections either ride it out or time out on their own."""
    return ("ip", "-n", switch_namespace(lab), "link", "set", port, "up" if up else "down")


def netem_probe_commands(switch_ns: str) -> tuple[Command, Command]:
    """Try a netem qdisc on the switch namespace's loopback, and remove it again."""
    return (
        ("tc", "-n", switch_ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"),
        ("tc", "-n", switch_ns, "qdisc", "del", "dev", "lo", "root"),
    )


# --- services ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServiceSpec:
    """One process of the lab: what runs, in which host, with which settings."""

    name: str
    host: str
    kind: str
    """redis, signaling, bridge, worker, stream or recorder (``lab kill HOST KIND``)."""
    argv: Command
    env: Mapping[str, str] = field(default_factory=dict)
    metrics_url: str = ""
    """Where its Lookout metrics are scraped, over the lab's links; empty: none."""
    out: str = ""
    """A stream client's JSON lines of detections."""

    @property
    def restart_on_clean_exit(self) -> bool:
        """A stream that ends by itself (exit 0) is done; any other service exiting 0 is a problem."""
        return self.kind != "stream"


@dataclass(frozen=True)
class Secrets:
    redis_password: str
    api_key: str


def service_specs(
    lab: LabFile,
    *,
    python: str,
    redis_binary: str,
    redis_conf: Path,
    run_dir: Path,
    video_dir: Path,
    lab_dir: Path,
    secrets: Secrets,
) -> list[ServiceSpec]:
    """The lab's services, host by host, as the Compose profiles run them (central: redis-server and
    `lookout signaling`; bridge: `lookout bridge`; inference: N x `lookout worker`; clients: `lookout
    stream`), plus the recorder, which runs on the central host so that it scrapes over the lab's links."""
    plans = {plan.name: plan for plan in host_plans(lab)}
    central = plans[lab.central.name].address
    signaling_url = f"http://{central}:{SIGNALING_PORT}"
    lookout = (python, "-m", "lookout")
    common = {
        "LOOKOUT_REDIS_URL": f"redis://{central}:{REDIS_PORT}/0",
        "LOOKOUT_REDIS_PASSWORD": secrets.redis_password,
        "LOOKOUT_DEFAULT_MODEL": lab.model,
        "LOOKOUT_MODEL": lab.model,
        **lab.env,
    }
    specs: list[ServiceSpec] = []
    for host in lab.hosts:
        address = plans[host.name].address
        prefix = f"{host.name}-"
        if host.role is Role.CENTRAL:
            specs.append(
                ServiceSpec(
                    prefix + "redis",
                    host.name,
                    "redis",
                    (
                        redis_binary,
                        str(redis_conf),
                        "--port",
                        str(REDIS_PORT),
                        "--bind",
                        address,
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--loglevel",
                        "warning",
                    ),
                )
            )
            specs.append(
                ServiceSpec(
                    prefix + "signaling",
                    host.name,
                    "signaling",
                    (*lookout, "signaling", "--host", address, "--port", str(SIGNALING_PORT)),
                    {**common, "LOOKOUT_API_KEY": secrets.api_key},
                    f"{signaling_url}/metrics",
                )
            )
        elif host.role is Role.BRIDGE:
            specs.append(
                ServiceSpec(
                    prefix + "bridge",
                    host.name,
                    "bridge",
                    (
                        *lookout,
                        "bridge",
                        "--id",
                        f"{lab.name}-{host.name}-bridge",
                        "--metrics-port",
                        str(BRIDGE_METRICS_PORT),
                    ),
                    common,
                    f"http://{address}:{BRIDGE_METRICS_PORT}/metrics",
                )
            )
        elif host.role is Role.INFERENCE:
            for i in range(host.worker_count):
                port = WORKER_METRICS_BASE + i
                specs.append(
                    ServiceSpec(
                        f"{prefix}worker{i}",
                        host.name,
                        "worker",
                        (
                            *lookout,
                            "worker",
                            "--id",
                            worker_id(lab.name, host.name, i),
                            "--model",
                            lab.model,
                            "--threads",
                            str(host.threads),
                            "--metrics-port",
                            str(port),
                        ),
                        common,
                        f"http://{address}:{port}/metrics",
                    )
                )
        else:
            specs += _streams(lab, host, lookout, signaling_url, run_dir, video_dir, common, secrets)
    specs.append(
        ServiceSpec(
            lab.central.name + "-recorder",
            lab.central.name,
            "recorder",
            (*lookout, "lab", "record", "--lab", lab.name, "--lab-dir", str(lab_dir)),
        )
    )
    return specs


def worker_id(lab: str, host: str, index: int) -> str:
    """The consumer name of a lab worker in Redis: the host it runs on can be read from it."""
    return f"{lab}-{host}-w{index}"


def _streams(
    lab: LabFile,
    host: Host,
    lookout: Command,
    signaling_url: str,
    run_dir: Path,
    video_dir: Path,
    common: Mapping[str, str],
    secrets: Secrets,
) -> list[ServiceSpec]:
    specs = []
    index = 0
    for stream in host.streams:
        video = stream.video if stream.video.is_absolute() else video_dir / stream.video
        for _ in range(stream.count):
            out = run_dir / "out" / f"{host.name}-stream{index}.jsonl"
            specs.append(
                ServiceSpec(
                    f"{host.name}-stream{index}",
                    host.name,
                    "stream",
                    (
                        *lookout,
                        "stream",
                        str(video),
                        "--server",
                        signaling_url,
                        "--loop",
                        "--fps",
                        f"{stream.fps:g}",
                        "--out",
                        str(out),
                        "--reconnect",
                    ),
                    {**common, "LOOKOUT_API_KEY": secrets.api_key},
                    out=str(out),
                )
            )
            index += 1
    return specs


def videos(lab: LabFile, video_dir: Path) -> list[Path]:
    """Every video file the lab's clients stream (to check before anything is created)."""
    return [
        stream.video if stream.video.is_absolute() else video_dir / stream.video
        for host in lab.hosts
        for stream in host.streams
    ]
