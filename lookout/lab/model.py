"""The lab file: hosts with their roles, the links between them, and what the services run with.

A YAML file such as ``deploy/lab/four-hosts.yaml``. Every field is typed, bounded and described, and the
file as a whole is checked: host names are unique, exactly one host is central, links name hosts that
exist, and roles only carry the fields that mean something for them. ``load_lab`` reads and checks a
file and raises one line naming the problem (``LabFileError``, exit 2).
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from pathlib import Path
from typing import Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from wire.errors import LookoutError

LINK_LOCAL = ipaddress.IPv4Network("169.254.0.0/16")
"""The only addresses a lab uses. RFC 3927 reserves its first and last /24; a lab's subnet avoids them."""
RESERVED = (ipaddress.IPv4Network("169.254.0.0/24"), ipaddress.IPv4Network("169.254.255.0/24"))

HOST_NAME = r"^[a-z][a-z0-9]{0,11}$"
LAB_NAME = r"^[a-z][a-z0-9]{0,9}$"
"""Short, so that every namespace name (``lkl-LAB-HOST``) stays readable in ``ip netns list``."""


class LabFileError(LookoutError):
    """The lab file cannot be read, or describes a lab that cannot exist."""


class Role(StrEnum):
    CENTRAL = "central"
    """Redis and `lookout signaling`."""
    BRIDGE = "bridge"
    """One `lookout bridge`."""
    INFERENCE = "inference"
    """``workers`` x `lookout worker`."""
    CLIENTS = "clients"
    """`lookout stream` sources (``streams``)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Stream(_Strict):
    """One `lookout stream` client: a video file, looped, analysed at ``fps``."""

    video: Path = Field(description="Video file; a relative path is looked up in LOOKOUT_LAB_VIDEO_DIR.")
    fps: float = Field(default=10.0, gt=0, le=30, description="Frames per second the session samples.")
    count: int = Field(default=1, ge=1, le=16, description="How many identical clients to start.")


class Host(_Strict):
    """One emulated machine: a network namespace with one veth to the lab's switch."""

    name: str = Field(pattern=HOST_NAME, description="Host name (also in its namespace's name).")
    role: Role = Field(description="central, bridge, inference or clients.")
    workers: int | None = Field(
        default=None, ge=1, le=16, description="inference: `lookout worker` processes (default 1)."
    )
    threads: int = Field(default=1, ge=1, le=16, description="inference: ONNX Runtime threads per worker.")
    streams: list[Stream] = Field(
        default_factory=list, max_length=16, description="clients: the `lookout stream` sources."
    )

    @model_validator(mode="after")
    def _fields_of_its_role(self) -> Self:
        if self.role is not Role.INFERENCE and self.workers is not None:
            raise ValueError(f"host {self.name}: only an inference host has workers")
        if self.role is Role.CLIENTS and not self.streams:
            raise ValueError(f"host {self.name}: a clients host needs at least one stream")
        if self.role is not Role.CLIENTS and self.streams:
            raise ValueError(f"host {self.name}: only a clients host has streams")
        return self

    @property
    def worker_count(self) -> int:
        return (self.workers or 1) if self.role is Role.INFERENCE else 0


class Link(_Strict):
    """The path between two hosts, shaped in both directions (an htb class on each end's veth)."""

    between: tuple[str, str] = Field(description="The two hosts this link joins.")
    rate_mbit: float = Field(gt=0, le=100_000, description="Bandwidth cap, each direction, Mbit/s.")
    delay_ms: float = Field(default=0.0, ge=0, le=10_000, description="One-way delay (needs netem).")
    loss_percent: float = Field(default=0.0, ge=0, le=100, description="Packet loss, % (needs netem).")

    @model_validator(mode="after")
    def _two_hosts(self) -> Self:
        if self.between[0] == self.between[1]:
            raise ValueError(f"link {self.between[0]}-{self.between[1]}: a link joins two different hosts")
        return self

    @property
    def needs_netem(self) -> bool:
        return self.delay_ms > 0 or self.loss_percent > 0

    @property
    def label(self) -> str:
        return f"{self.between[0]}-{self.between[1]}"


class LabFile(_Strict):
    """A whole lab."""

    name: str = Field(pattern=LAB_NAME, description="Lab name: the prefix of everything it creates.")
    subnet: ipaddress.IPv4Network = Field(
        default=ipaddress.IPv4Network("169.254.77.0/24"),
        description="Link-local subnet of the hosts' addresses (inside 169.254.0.0/16).",
    )
    model: str = Field(default="yolox_nano", min_length=1, description="Model the workers serve.")
    without_netem: Literal["refuse", "warn"] = Field(
        default="refuse",
        description="When a link asks for delay or loss and the kernel has no sch_netem: refuse to start "
        "(exit 2), or warn and apply the bandwidth caps only.",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra LOOKOUT_* settings for every service of the lab (e.g. LOOKOUT_CLAIM_IDLE_MS).",
    )
    hosts: list[Host] = Field(min_length=2, max_length=32, description="The hosts.")
    links: list[Link] = Field(default_factory=list, max_length=256, description="Shaped links.")

    @field_validator("subnet")
    @classmethod
    def _link_local(cls, subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        if not subnet.subnet_of(LINK_LOCAL):
            raise ValueError(f"{subnet} is not link-local: a lab uses addresses in {LINK_LOCAL} only")
        if any(subnet.overlaps(reserved) for reserved in RESERVED):
            raise ValueError(f"{subnet} overlaps 169.254.0.0/24 or 169.254.255.0/24 (reserved by RFC 3927)")
        return subnet

    @field_validator("env")
    @classmethod
    def _lookout_settings(cls, env: dict[str, str]) -> dict[str, str]:
        for key in env:
            if not key.startswith("LOOKOUT_"):
                raise ValueError(f"env: {key} is not a LOOKOUT_* setting")
        return env

    @model_validator(mode="after")
    def _a_lab_that_can_exist(self) -> Self:
        names = [host.name for host in self.hosts]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"host names must be unique: {', '.join(twice)} given twice")
        if self.subnet.num_addresses - 2 < len(self.hosts):
            raise ValueError(f"subnet {self.subnet} has too few addresses for {len(self.hosts)} hosts")
        centrals = [host.name for host in self.hosts if host.role is Role.CENTRAL]
        if len(centrals) != 1:
            raise ValueError(f"exactly one host must be central (found {len(centrals)})")
        roles = {host.role for host in self.hosts}
        if Role.CLIENTS in roles and Role.BRIDGE not in roles:
            raise ValueError("clients need a bridge host to stream to")
        if Role.INFERENCE not in roles:
            raise ValueError("a lab needs at least one inference host")
        pairs: set[frozenset[str]] = set()
        for link in self.links:
            for end in link.between:
                if end not in names:
                    raise ValueError(f"link {link.label}: no host named {end}")
            pair = frozenset(link.between)
            if pair in pairs:
                raise ValueError(f"link {link.label} is given twice")
            pairs.add(pair)
        return self

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise LabFileError(
            f"no host named {name} in lab {self.name} ({', '.join(h.name for h in self.hosts)})"
        )

    @property
    def central(self) -> Host:
        return next(host for host in self.hosts if host.role is Role.CENTRAL)

    @property
    def netem_links(self) -> list[Link]:
        return [link for link in self.links if link.needs_netem]


def parse_lab(text: str, source: str = "lab file") -> LabFile:
    """A lab from YAML text; ``LabFileError`` with one line when it is not valid YAML or not a valid lab."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise LabFileError(f"{source}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise LabFileError(f"{source}: expected a mapping with name, hosts and links")
    try:
        return LabFile.model_validate(data)
    except ValidationError as exc:
        raise LabFileError(f"{source}: {describe_lab_error(exc, data)}") from None


def describe_lab_error(exc: ValidationError, data: dict[str, object]) -> str:
    """The first problem of a lab file in one line: where (``hosts[infa].workers``) and which rule."""
    first = exc.errors()[0]
    where: list[str] = []
    node: object = data
    for part in first["loc"]:
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            item = node[part]
            named = item.get("name") if isinstance(item, dict) else None
            where[-1:] = [f"{where[-1] if where else ''}[{named if named else part}]"]
            node = item
        else:
            where.append(str(part))
            node = node.get(str(part)) if isinstance(node, dict) else None
    message = str(first["msg"]).removeprefix("Value error, ")
    got = first.get("input")
    shown = f" (got {got!r})" if isinstance(got, str | int | float) and first["type"] != "missing" else ""
    return f"{'.'.join(where)}: {message}{shown}" if where else message


def load_lab(path: Path) -> LabFile:
    try:
        text = path.read_text()
    except OSError as exc:
        raise LabFileError(f"cannot read lab file {path}: {exc.strerror or exc}") from None
    return parse_lab(text, str(path))
