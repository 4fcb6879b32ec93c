"""The CPU and GPU Dockerfiles: one onnxruntime each, dependencies layered before the source."""

from __future__ import annotations

import fnmatch
import re
import runpy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.compose.composefile import COMPOSE_DIR, REPO

REQUIREMENTS: dict[str, Any] = runpy.run_path(str(COMPOSE_DIR / "requirements.py"))
PACKAGES = [
    p.rstrip("*")
    for p in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
        "include"
    ]
]


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_requirements_pick_exactly_one_onnxruntime() -> None:
    requirements = REQUIREMENTS["requirements"]
    pyproject = REPO / "pyproject.toml"
    cpu = [REQUIREMENTS["_name"](r) for r in requirements(pyproject, ["cpu"])]
    gpu = [REQUIREMENTS["_name"](r) for r in requirements(pyproject, ["gpu"])]
    assert "onnxruntime" in cpu and "onnxruntime-gpu" not in cpu
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu
    assert {"aiohttp", "aiortc", "redis", "prometheus-client"} <= set(cpu)
    with pytest.raises(SystemExit, match="never install"):
        requirements(pyproject, ["cpu", "gpu"])
    with pytest.raises(SystemExit, match="no extra named"):
        requirements(pyproject, ["cuda"])


@pytest.mark.parametrize(
    ("dockerfile", "base", "extra"),
    [("Dockerfile", "python:3.11", "cpu"), ("Dockerfile.gpu", "python:3.11", "gpu")],
)
def test_dockerfile_layers_and_extra(dockerfile: str, base: str, extra: str) -> None:
    steps = instructions(COMPOSE_DIR / dockerfile)
    args = dict(rest.split("=", 1) for keyword, rest in steps if keyword == "ARG" and "=" in rest)
    assert args == {"PYTHON_IMAGE": "python:3.11-slim-bookworm"}, (
        "one base, chosen by PYTHON_IMAGE (make images)"
    )
    assert all(value.startswith(base) for value in args.values()), f"{dockerfile} is not based on {base}"
    assert {rest.split()[0] for keyword, rest in steps if keyword == "FROM"} <= {"${PYTHON_IMAGE}", "deps"}
    runs = [rest for keyword, rest in steps if keyword == "RUN"]
    (install_deps,) = [r for r in runs if "requirements.py" in r]
    assert f"pyproject.toml {extra} " in install_deps and "pip install -r" in install_deps
    other = "gpu" if extra == "cpu" else "cpu"
    assert f" {other} " not in install_deps
    assert not any("onnxruntime" in r for r in runs), "the runtime comes from the extra, nothing else"

    copies = [(index, rest) for index, (keyword, rest) in enumerate(steps) if keyword == "COPY"]
    deps_index = next(i for i, (k, r) in enumerate(steps) if k == "RUN" and "requirements.py" in r)
    first_source = min(i for i, rest in copies if rest.split()[0] in PACKAGES)
    assert deps_index < first_source, "dependencies must be installed before the source is copied"
    copied = {rest.split()[0] for _, rest in copies}
    assert set(PACKAGES) <= copied, f"packages not copied: {set(PACKAGES) - copied}"
    assert "web" in copied  # signaling serves the page from LOOKOUT_WEB_DIR
    assert ("USER", "lookout") in steps
    assert steps[-1] == ("CMD", '["lookout", "--help"]')


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerignore_lets_in_what_is_copied_and_nothing_else(dockerfile: str) -> None:
    patterns = [
        line.strip()
        for line in (COMPOSE_DIR / f"{dockerfile}.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"

    def included(path: str) -> bool:
        keep = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            body = pattern.removeprefix("!")
            if fnmatch.fnmatch(path, body) or path.startswith(body.rstrip("/") + "/"):
                keep = negated
        return keep

    sources = {
        source
        for keyword, rest in instructions(COMPOSE_DIR / dockerfile)
        if keyword == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
    }
    for source in sources:
        assert included(source.rstrip("*")), f"{source} is copied but .dockerignore leaves it out"
    for left_out in (".venv/bin/python", "tests/conftest.py", "test-output/x", ".git/HEAD", "bench/raw.py"):
        assert not included(left_out), left_out


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_build_with_the_legacy_builder_too(dockerfile: str) -> None:
    # DOCKER_BUILDKIT=0 (where BuildKit's frontend cannot be pulled) ignores `# syntax=` but fails on
    # BuildKit-only instructions and flags.
    for keyword, rest in instructions(COMPOSE_DIR / dockerfile):
        assert not rest.startswith(("--mount", "--network", "--security")), f"{keyword} {rest}"
        assert keyword != "RUN" or "<<" not in rest, "heredocs need BuildKit"
        assert not (keyword == "COPY" and rest.startswith(("--link", "--parents", "--exclude"))), rest


def test_the_legacy_builders_dockerignore_is_the_dockerfiles() -> None:
    # The legacy builder reads only the context root's .dockerignore; BuildKit prefers
    # compose/Dockerfile*.dockerignore. The same patterns either way, so no .env, .venv or .git is sent.
    def patterns(path: Path) -> list[str]:
        return [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]

    root = patterns(REPO / ".dockerignore")
    assert (
        root
        == patterns(COMPOSE_DIR / "Dockerfile.dockerignore")
        == patterns(COMPOSE_DIR / "Dockerfile.gpu.dockerignore")
    )
    assert root[0] == "*" and "!.env" not in root


def test_the_gpu_image_takes_cuda_from_pip_wheels() -> None:
    gpu = REQUIREMENTS["requirements"](REPO / "pyproject.toml", ["gpu"])
    (runtime,) = [r for r in gpu if REQUIREMENTS["_name"](r) == "onnxruntime-gpu"]
    assert runtime.startswith("onnxruntime-gpu[cuda,cudnn]"), runtime  # the nvidia-* wheels
    runs = [rest for keyword, rest in instructions(COMPOSE_DIR / "Dockerfile.gpu") if keyword == "RUN"]
    assert any("ld.so.conf.d" in r and "ldconfig" in r for r in runs), (
        "the linker must find the wheels' libraries"
    )
