"""Run named parts of a battery (`load.bench`, `load.faults`): each part is a module with `main`.

One broken part must not hide the others' figures: its exception is printed and it counts
as failed.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from types import ModuleType


def run_parts(
    parts: Mapping[str, str], names: list[str], call: Callable[[ModuleType], int | None]
) -> int:
    """Run `call(module)` for each named part (all when `names` is empty); 0 when all passed."""
    failed = []
    for name in names or list(parts):
        module_name = parts.get(name)
        if module_name is None:
            print(f"unknown part {name!r}; known: {', '.join(parts)}", file=sys.stderr)
            return 2
        print(f"\n=== {name} ({module_name}) ===", flush=True)
        try:
            rc = call(importlib.import_module(module_name))
        except Exception as exc:
            print(f"{name}: failed: {exc!r}", flush=True)
            rc = 1
        if rc:
            failed.append(name)
    if failed:
        print(f"\nparts that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
