"""`nox -s faults`: the hardening battery at full size. Prints what it tried and what happened.

`python -m load.faults [input|providers ...] [--quick]` runs the named parts only; the test
suite runs the same code with small counts (tests/hardening/).
"""

from __future__ import annotations

import importlib
import sys

PARTS = {
    "input": "load.faults_input",
    "providers": "load.faults_providers",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    flags = [a for a in args if a.startswith("-")]
    names = [a for a in args if not a.startswith("-")] or list(PARTS)
    failed = []
    for name in names:
        module_name = PARTS.get(name)
        if module_name is None:
            print(f"unknown part {name!r}; known: {', '.join(PARTS)}", file=sys.stderr)
            return 2
        print(f"\n=== {name} ({module_name}) ===", flush=True)
        module = importlib.import_module(module_name)
        if module.main(flags):
            failed.append(name)
    if failed:
        print(f"\nparts with failures: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
