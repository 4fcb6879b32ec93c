"""Print the pip requirements of pyproject.toml (dependencies plus the extras named), one per line.

The Dockerfiles install these before copying the source, so that the dependency layer stays cached
while only the code changes: ``python compose/requirements.py pyproject.toml cpu``.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

RUNTIMES = ("onnxruntime", "onnxruntime-gpu")


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"requirements.py: no extra named {', '.join(unknown)} in {pyproject}")
    found = list(project["dependencies"]) + [req for extra in extras for req in optional[extra]]
    runtimes = {name for name in RUNTIMES for req in found if _name(req) == name}
    if len(runtimes) > 1:
        # Both wheels install the module `onnxruntime`; one would silently shadow the other.
        raise SystemExit("requirements.py: never install onnxruntime and onnxruntime-gpu together")
    return found


def _name(requirement: str) -> str:
    for stop in "<>=!~;[ ":
        requirement = requirement.split(stop, 1)[0]
    return requirement.strip().lower()


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: requirements.py PYPROJECT [EXTRA ...]", file=sys.stderr)
        return 2
    print("\n".join(requirements(Path(argv[0]), argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
