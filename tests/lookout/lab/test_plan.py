"""The lab's plan: names, addresses, every ip/tc command, and the services, from a lab file alone."""

from __future__ import annotations

import ipaddress
import shlex
from pathlib import Path

from lookout.lab import plan
from lookout.lab.model import LINK_LOCAL, parse_lab
from tests.lookout.lab.test_model import BASE, EXAMPLE


def test_hosts_get_namespaces_ports_and_consecutive_link_local_addresses() -> None:
    hosts = plan.host_plans(parse_lab(BASE))
    assert [(h.name, h.namespace, h.address, h.port) for h in hosts] == [
        ("central", "lkl-t1-central", "169.254.77.1", "p0"),
        ("edge", "lkl-t1-edge", "169.254.77.2", "p1"),
        ("infa", "lkl-t1-infa", "169.254.77.3", "p2"),
        ("cams", "lkl-t1-cams", "169.254.77.4", "p3"),
    ]
    assert plan.switch_namespace("t1") == "lkl-t1--sw"  # no host's namespace can be named this


def test_every_command_acts_inside_the_labs_own_namespaces_and_never_routes_out() -> None:
    lab = parse_lab(EXAMPLE.read_text())
    commands = plan.network_commands(lab, netem=True)
    own = {h.namespace for h in plan.host_plans(lab)} | {plan.switch_namespace(lab.name)}
    for command in commands:
        assert command[0] in ("ip", "tc") and command[1] == "-n" and command[2] in own, command
        assert "route" not in command, command
        for word in command:
            if "/" in word and word[0].isdigit():
                assert ipaddress.IPv4Network(word, strict=False).subnet_of(LINK_LOCAL)
    # one veth per host, created in the switch namespace with its peer moved straight into the host's
    veths = [c for c in commands if "veth" in c]
    assert len(veths) == len(lab.hosts)
    assert veths[0] == (
        "ip",
        "-n",
        "lkl-four--sw",
        "link",
        "add",
        "p0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        "lkl-four-central",
    )


def test_a_link_is_an_htb_class_on_both_ends_filtered_on_the_peers_address() -> None:
    lab = parse_lab(BASE.replace("rate_mbit: 5", "rate_mbit: 2.5, delay_ms: 20, loss_percent: 1"))
    shaping = plan.shaping_commands(lab, netem=True)
    central = [shlex.join(c) for c in shaping if c[2] == "lkl-t1-central"]
    tc = "tc -n lkl-t1-central"
    assert central == [
        f"{tc} qdisc add dev eth0 root handle 1: htb",
        f"{tc} class add dev eth0 parent 1: classid 1:1 htb rate 2.5mbit ceil 2.5mbit",
        f"{tc} filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst 169.254.77.3/32 flowid 1:1",
        f"{tc} qdisc add dev eth0 parent 1:1 handle 2: netem limit 42 delay 20ms loss 1%",
    ]
    infa = [c for c in shaping if c[2] == "lkl-t1-infa"]
    assert "169.254.77.1/32" in infa[2]  # the other direction, towards central
    assert not [c for c in shaping if c[2] in ("lkl-t1-edge", "lkl-t1-cams")]  # no link: not shaped
    # Without netem: the same tree, with a queue of 100 ms of the rate instead of the netem leaf.
    without = [shlex.join(c) for c in plan.shaping_commands(lab, netem=False) if c[2] == "lkl-t1-central"]
    assert without[:3] == central[:3]
    assert without[3] == f"{tc} qdisc add dev eth0 parent 1:1 handle 2: bfifo limit 64000"
    assert plan.queue_bytes(0.01) == plan.MIN_QUEUE_BYTES


def test_class_ids_are_hex_and_distinct_per_link() -> None:
    hosts = "\n".join(f"  - {{name: i{n}, role: inference}}" for n in range(12))
    links = "\n".join(f"  - {{between: [c, i{n}], rate_mbit: 1}}" for n in range(12))
    lab = parse_lab(f"name: x\nhosts:\n  - {{name: c, role: central}}\n{hosts}\nlinks:\n{links}\n")
    classes = [c[c.index("classid") + 1] for c in plan.shaping_commands(lab, netem=False) if "class" in c]
    assert classes[:12] == [f"1:{n:x}" for n in range(1, 13)]


def test_cut_and_heal_set_the_hosts_switch_port_down_and_up() -> None:
    assert plan.cut_command("t1", "p2", up=False) == ("ip", "-n", "lkl-t1--sw", "link", "set", "p2", "down")
    assert plan.cut_command("t1", "p2", up=True)[-1] == "up"


def test_services_run_the_compose_commands_in_their_hosts() -> None:
    lab = parse_lab(BASE)
    specs = plan.service_specs(
        lab,
        python="py",
        redis_binary="redis-server",
        redis_conf=Path("/run/r.conf"),
        run_dir=Path("/runs/t1"),
        video_dir=Path("/videos"),
        lab_dir=Path("/runs"),
        secrets=plan.Secrets("pw", "key"),
    )
    by_name = {s.name: s for s in specs}
    assert [(s.host, s.kind) for s in specs] == [
        ("central", "redis"),
        ("central", "signaling"),
        ("edge", "bridge"),
        ("infa", "worker"),
        ("infa", "worker"),
        ("cams", "stream"),
        ("cams", "stream"),
        ("central", "recorder"),
    ]
    redis = by_name["central-redis"].argv
    assert redis[:2] == ("redis-server", "/run/r.conf") and redis[redis.index("--bind") + 1] == "169.254.77.1"
    assert "pw" not in redis  # the password is in the 0600 config file, not on the command line
    signaling = by_name["central-signaling"]
    assert signaling.argv[:4] == ("py", "-m", "lookout", "signaling")
    assert signaling.env["LOOKOUT_API_KEY"] == "key"
    assert signaling.metrics_url == "http://169.254.77.1:8080/metrics"
    worker = by_name["infa-worker1"]
    assert worker.argv[3:6] == ("worker", "--id", "t1-infa-w1")
    assert worker.metrics_url == f"http://169.254.77.3:{plan.WORKER_METRICS_BASE + 1}/metrics"
    assert worker.env["LOOKOUT_REDIS_URL"] == "redis://169.254.77.1:6379/0"
    assert worker.env["LOOKOUT_REDIS_PASSWORD"] == "pw"
    stream = by_name["cams-stream1"]
    assert stream.argv[3:7] == ("stream", "/videos/vtest.mp4", "--server", "http://169.254.77.1:8080")
    assert "--reconnect" in stream.argv and stream.argv[stream.argv.index("--fps") + 1] == "10"
    assert stream.out == "/runs/t1/out/cams-stream1.jsonl" and not stream.restart_on_clean_exit
    assert by_name["central-recorder"].argv[3:] == ("lab", "record", "--lab", "t1", "--lab-dir", "/runs")
    assert plan.videos(lab, Path("/videos")) == [Path("/videos/vtest.mp4")]
