"""The import boundaries between the packages, read from the source (ast), lazy imports included.

* a service (signaling, mediabridge, inference, training) imports only itself, ``wire`` and ``runtime``;
* ``wire`` (contracts: what crosses a process boundary) imports nothing of the project but ``wire``;
* ``runtime`` (behaviour services share) imports only ``runtime`` and ``wire``.

``lookout`` (the umbrella CLI), ``bench`` and ``tests`` sit above all of them and are not checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

SERVICES = frozenset({"signaling", "mediabridge", "inference", "training"})
ABOVE = frozenset({"lookout", "bench", "tests"})
PROJECT = SERVICES | ABOVE | {"wire", "runtime"}
ALLOWED: dict[str, frozenset[str]] = {
    "wire": frozenset({"wire"}),
    "runtime": frozenset({"runtime", "wire"}),
    **{service: frozenset({service, "wire", "runtime"}) for service in SERVICES},
}
"""For each checked package, the project packages it may import."""

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a module, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package, up level - 1 packages
                base = _package_of(path).split(".")
                base = base[: len(base) - (node.level - 1)]
                found.append((node.lineno, ".".join([*base, *([node.module] if node.module else [])])))
            elif node.module:
                found.append((node.lineno, node.module))
    return found


def _package_of(path: Path) -> str:
    """The dotted package a module file belongs to (its folder, up to the first without __init__.py)."""
    parts: list[str] = []
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts)


def violations(root: Path) -> list[str]:
    """Every import that crosses a boundary, as ``file:line: package imports module``."""
    found = []
    for package, allowed in sorted(ALLOWED.items()):
        for path in sorted((root / package).rglob("*.py")):
            for line, module in imported_modules(path):
                top = module.split(".")[0]
                if top in PROJECT and top not in allowed:
                    found.append(f"{path.relative_to(root)}:{line}: {package} imports {module}")
    return found


def test_the_project_keeps_its_boundaries() -> None:
    assert (ROOT / "wire" / "__init__.py").is_file() and (ROOT / "runtime" / "__init__.py").is_file()
    assert violations(ROOT) == []


def write(root: Path, relative: str, source: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    for folder in [path.parent, *path.parent.parents]:
        if folder == root:
            break
        (folder / "__init__.py").touch()
    path.write_text(source)


def test_the_checker_reports_each_kind_of_crossing(tmp_path: Path) -> None:
    write(tmp_path, "signaling/rest.py", "from inference.images import decode_image\nimport wire.keys\n")
    write(tmp_path, "inference/worker.py", "def later():\n    import mediabridge.bridge\n")  # lazy
    write(tmp_path, "training/data.py", "from runtime.letterbox import letterbox\nimport numpy\n")
    write(tmp_path, "wire/client.py", "from runtime.redis import Outage\nfrom . import keys\n")
    write(tmp_path, "wire/keys.py", "from .messages import now_ms\n")
    write(tmp_path, "runtime/redis.py", "from wire.redis_down import REDIS_DOWN_ERRORS\n")
    write(tmp_path, "runtime/images.py", "from signaling.rest_errors import RestError\n")
    write(tmp_path, "runtime/sub/deep.py", "from ...lookout import cli\n")  # relative, out of runtime
    write(tmp_path, "mediabridge/peer.py", "from lookout.report import BatchReport\n")
    assert violations(tmp_path) == [
        "inference/worker.py:2: inference imports mediabridge.bridge",
        "mediabridge/peer.py:1: mediabridge imports lookout.report",
        "runtime/images.py:1: runtime imports signaling.rest_errors",
        "runtime/sub/deep.py:1: runtime imports lookout",
        "signaling/rest.py:1: signaling imports inference.images",
        "wire/client.py:1: wire imports runtime.redis",
    ]
