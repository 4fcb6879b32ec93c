"""A real Docker engine for tests, and the local base images the project's Dockerfiles build on.

No image registry is reachable from the test machines, so nothing is pulled:

* ``DockerEngine.start()`` uses the engine that answers at ``$DOCKER_HOST`` (or the default socket), or
  starts a ``dockerd`` of its own (Debian's docker.io) on a socket under /run, with ``--bridge=none
  --iptables=false`` so that containers can only use the host network (every byte on 127.0.0.1) and a
  persistent ``--data-root`` (/var/lib/lookout-test-docker) so that reruns reuse the layer cache.
* ``ensure_base_image`` makes a Debian bookworm root file system with debootstrap (Python 3.11, as the
  official ``python:3.11-slim-bookworm``) and imports it. It carries this machine's CA bundle and
  pip.conf, as any base image behind a TLS-inspecting proxy would: that is the harness's business, not
  the Dockerfiles'. Builds use ``--network host`` so that pip and apt reach their indexes.
* ``ensure_redis_image`` adds Debian's redis-server to that base (the compose file's REDIS_IMAGE).

Images are kept between runs (skipped when they exist): delete them, or the data root, to start cold.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

DATA_ROOT = Path(os.environ.get("LOOKOUT_TEST_DOCKER_ROOT", "/var/lib/lookout-test-docker"))
RUN_DIR = Path("/run/lookout-test-docker")
BASE_IMAGE = "lookout-test/python:3.11-bookworm"
REDIS_IMAGE = "lookout-test/redis:bookworm"
BASE_PACKAGES = ["python3", "python3-venv", "python-is-python3", "ca-certificates"]
DEBIAN_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOST_PIP_CONF = Path("/etc/pip.conf")
OWN_HOST = f"unix://{RUN_DIR}/docker.sock"


class EngineUnavailableError(RuntimeError):
    """No Docker engine answers and none can be started here (the reason is the message)."""


class DockerEngine:
    """A Docker engine that answers, and the ``docker`` client pointed at it."""

    def __init__(self, host: str, process: subprocess.Popen[bytes] | None = None) -> None:
        self.host = host
        """The engine's address, as DOCKER_HOST takes it."""
        self.process = process
        """The dockerd this harness started, or None where an engine was already running."""

    @property
    def owned(self) -> bool:
        """Whether this is the harness's own engine (its data root is the tests' to tidy)."""
        return self.host == OWN_HOST

    @property
    def env(self) -> dict[str, str]:
        # The legacy builder: BuildKit's `# syntax=` frontend image cannot be pulled here.
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0"}

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["docker", *args],
            env=self.env,
            capture_output=True,
            text=input is None,
            input=input,
            timeout=timeout,
        )
        if isinstance(result.stdout, bytes):
            result = subprocess.CompletedProcess(
                result.args,
                result.returncode,
                result.stdout.decode(errors="replace"),
                result.stderr.decode(errors="replace"),
            )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args[:3])} ... exited {result.returncode}: {result.stderr[-3000:]}"
            )
        return result

    def image_exists(self, image: str) -> bool:
        return self.docker("image", "inspect", image, check=False).returncode == 0

    @classmethod
    def start(cls, *, timeout_s: float = 60) -> DockerEngine:
        """The engine at $DOCKER_HOST or the default socket if it answers, else a dockerd of our own."""
        if shutil.which("docker") is None:
            raise EngineUnavailableError("no docker client on the PATH (make system-deps installs docker.io)")
        current = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        if _answers(current):
            return cls(current)
        own = OWN_HOST
        if _answers(own):  # left by an earlier run that did not stop it
            return cls(own)
        dockerd = shutil.which("dockerd") or (
            "/usr/sbin/dockerd" if Path("/usr/sbin/dockerd").exists() else None
        )
        if dockerd is None:
            raise EngineUnavailableError("no dockerd here (make system-deps installs docker.io)")
        if os.geteuid() != 0:
            raise EngineUnavailableError("dockerd needs root, and no Docker engine answers at " + current)
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        DATA_ROOT.mkdir(parents=True, exist_ok=True)
        log = (RUN_DIR / "dockerd.log").open("wb")
        process = subprocess.Popen(
            [
                dockerd,
                "--host",
                own,
                "--data-root",
                str(DATA_ROOT),
                "--exec-root",
                str(RUN_DIR / "exec"),
                "--pidfile",
                str(RUN_DIR / "dockerd.pid"),
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while not _answers(own):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                tail = (RUN_DIR / "dockerd.log").read_text(errors="replace")[-1500:]
                raise EngineUnavailableError(f"dockerd did not start: {tail}")
            time.sleep(0.3)
        return cls(own, process)

    def stop(self) -> None:
        """Stop the dockerd this harness started (an engine it found running is left alone)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def _answers(host: str) -> bool:
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
        return False
    try:
        result = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            env={**os.environ, "DOCKER_HOST": host},
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _run(command: Sequence[str], *, timeout: float) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... exited {result.returncode}: {result.stderr[-2000:]}")


def _pip_conf() -> str:
    """This machine's pip.conf without lines that name local folders or extra indexes."""
    if not HOST_PIP_CONF.exists():
        return ""
    kept = [
        line
        for line in HOST_PIP_CONF.read_text().splitlines()
        if not line.strip().startswith(("find-links", "extra-index-url", "no-index"))
    ]
    return "\n".join(kept) + "\n"


def ensure_base_image(engine: DockerEngine, image: str = BASE_IMAGE) -> float:
    """Make ``image`` (Debian bookworm minbase + Python 3.11) unless it exists; the seconds it took."""
    if engine.image_exists(image):
        return 0.0
    if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
        raise EngineUnavailableError("no debootstrap here (make system-deps installs it)")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="lookout-rootfs-", dir="/var/tmp"))
    root = work / "rootfs"
    try:
        _run(["debootstrap", "--variant=minbase", "bookworm", str(root), DEBIAN_MIRROR], timeout=900)
        apt = ["chroot", str(root), "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
        _run([*apt, "install", "-y", "-q", "--no-install-recommends", *BASE_PACKAGES], timeout=900)
        _run([*apt, "clean"], timeout=60)
        shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
        (root / "var/lib/apt/lists/partial").mkdir(parents=True)
        if HOST_CA_BUNDLE.exists():
            shutil.copyfile(HOST_CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
        if pip_conf := _pip_conf():
            (root / "etc/pip.conf").write_text(pip_conf)
        with contextlib.suppress(FileNotFoundError):
            (root / "etc/resolv.conf").unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        imported = subprocess.run(
            ["docker", "import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["bash"]', "-", image],
            stdin=tar.stdout,
            env=engine.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        tar.stdout.close()
        tar.wait()
        if imported.returncode != 0:
            raise RuntimeError(f"docker import failed: {imported.stderr[-2000:]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return time.monotonic() - started


REDIS_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
RUN apt-get update -q \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server \\
 && rm -rf /var/lib/apt/lists/*
USER redis
CMD ["redis-server"]
"""


def ensure_redis_image(engine: DockerEngine, image: str = REDIS_IMAGE, base: str = BASE_IMAGE) -> float:
    """Debian's redis-server (with redis-cli) on the local base, unless ``image`` exists."""
    if engine.image_exists(image):
        return 0.0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lookout-redis-image-") as context:
        (Path(context) / "Dockerfile").write_text(REDIS_DOCKERFILE)
        engine.docker(
            "build", "--network", "host", "--build-arg", f"BASE={base}", "-t", image, context, timeout=900
        )
    return time.monotonic() - started


def build_image(
    engine: DockerEngine,
    dockerfile: str,
    tag: str,
    context: Path,
    build_args: dict[str, str],
    *,
    timeout: float,
) -> float:
    """``docker build`` with the legacy builder on the host network; the seconds it took.

    The image the tag named before is removed when the build replaced it: in the harness's persistent
    data root, every code change would otherwise keep one more copy of the whole virtualenv layer. (Not
    ``docker image prune``: the legacy builder's cache of the earlier stages is untagged images too.)
    """
    before = _image_id(engine, tag)
    started = time.monotonic()
    args = [arg for name, value in build_args.items() for arg in ("--build-arg", f"{name}={value}")]
    engine.docker(
        "build", "--network", "host", "-f", dockerfile, *args, "-t", tag, str(context), timeout=timeout
    )
    took = time.monotonic() - started
    if engine.owned and before and before != _image_id(engine, tag):
        engine.docker("image", "rm", before, check=False, timeout=300)  # refused while a container uses it
    return took


def _image_id(engine: DockerEngine, image: str) -> str:
    result = engine.docker("image", "inspect", "--format", "{{.Id}}", image, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def image_size(engine: DockerEngine, image: str) -> int:
    return int(engine.docker("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())
