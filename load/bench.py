"""`nox -s bench`: every benchmark in one run. Prints figures; asserts nothing about speed.

`python -m load.bench [sip|push|sniffer ...]` runs the named parts only.
"""

from __future__ import annotations

import importlib
import sys

PARTS = {
    "sip": "load.bench_sip",
    "push": "load.bench_push",
    "sniffer": "load.bench_sniffer",
}


def main(argv: list[str] | None = None) -> int:
    names = (sys.argv[1:] if argv is None else argv) or list(PARTS)
    failed = []
    for name in names:
        module_name = PARTS.get(name)
        if module_name is None:
            print(f"unknown benchmark {name!r}; known: {', '.join(PARTS)}", file=sys.stderr)
            return 2
        print(f"\n=== {name} ({module_name}) ===", flush=True)
        try:
            module = importlib.import_module(module_name)
            rc = module.main()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            print(f"{name}: failed: {exc!r}", flush=True)
            rc = 1
        if rc:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that failed to run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
