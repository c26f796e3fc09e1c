"""`nox -s faults`: the hardening battery at full size. Prints what it tried and what happened.

`python -m load.faults [input|providers ...] [--quick]` runs the named parts only; the test
suite runs the same code with small counts (tests/hardening/).
"""

from __future__ import annotations

import sys

from load.parts import run_parts

PARTS = {
    "input": "load.faults_input",
    "providers": "load.faults_providers",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    flags = [a for a in args if a.startswith("-")]
    names = [a for a in args if not a.startswith("-")]
    return run_parts(PARTS, names, lambda module: module.main(flags))


if __name__ == "__main__":
    raise SystemExit(main())
