"""`nox -s bench`: every benchmark in one run. Prints figures; asserts nothing about speed.

`python -m load.bench [sip|push|service|sniffer|store|metrics ...]` runs the named parts only.
`service` is the figure a deployment sees (pushes through the running sidecar's control
socket); `push` measures the provider layer in-process.
"""

from __future__ import annotations

import sys
from types import ModuleType

from load.parts import run_parts

PARTS = {
    "sip": "load.bench_sip",
    "push": "load.bench_push",
    "service": "load.bench_service",
    "sniffer": "load.bench_sniffer",
    "store": "load.bench_store",
    "metrics": "load.bench_metrics",
}


def main(argv: list[str] | None = None) -> int:
    names = sys.argv[1:] if argv is None else argv
    return run_parts(PARTS, names, _run_with_defaults)


def _run_with_defaults(module: ModuleType) -> int:
    result = module.main([])  # default settings: our argv names parts, not their options
    return result if isinstance(result, int) else 0  # bench_push returns its figures


if __name__ == "__main__":
    raise SystemExit(main())
