"""`python -m bench [NAME ...]`: run every bench/bench_*.py (or the ones named), one after another."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time

import bench


def main() -> int:
    found = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(found)})")
    args = parser.parse_args()
    chosen = [n if n.startswith("bench_") else f"bench_{n}" for n in args.names] or found
    failed = 0
    for name in chosen:
        if name not in found:
            print(f"bench: no benchmark named {name}", file=sys.stderr)
            return 2
        print(f"\n=== {name} ===", flush=True)
        started = time.monotonic()
        module = importlib.import_module(f"bench.{name}")
        code = int(module.main([]) or 0)
        failed += code != 0
        print(
            f"=== {name}: {'ok' if code == 0 else f'exit {code}'} in {time.monotonic() - started:.0f} s ==="
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
