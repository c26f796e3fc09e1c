"""JSON on the push path: orjson where it gives the same answer, the stdlib where not. Pure.

Every `push` costs a request decode, a reply encode and a JSON log line; with the
stdlib's `json` those were ~8 % of the sidecar's CPU per push (load/bench_service.py
profile). orjson does them several times faster, but it differs from `json`: it
refuses NaN/Infinity, lone surrogates ("\\ud800"), non-string keys and deep nesting,
reads integers beyond 64 bits as floats and writes NaN as null. Those cases go to the
stdlib, so what is accepted and what a reply says stays exactly what `json` accepts and
writes (the control protocol's rules, DESIGN §11, and the hardening battery depend on
it). Differences left: floats are written in orjson's shortest form (`1e-5`, not
`1e-05`), the same number to any JSON reader, and JSON log lines write NaN as null.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import orjson

_COMPACT = (",", ":")
# 19 digits in a row may be an integer orjson reads as a float (beyond 64 bits): let the
# stdlib read it. Rare in control requests (tokens are hex, ids are short).
_LONG_NUMBER = re.compile(rb"[0-9]{19}")


def loads(data: bytes) -> Any:
    """`json.loads(data)`, faster; raises what `json.loads` raises."""
    if _LONG_NUMBER.search(data) is None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)  # NaN, big integers, lone surrogates, UTF-16...: its verdict


def _has_nonfinite(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def dumps_compact(obj: Any) -> bytes | None:
    """Compact UTF-8 JSON of `obj`, or None when only the stdlib writes it as `json` would."""
    try:
        data = orjson.dumps(obj)
    except TypeError:  # lone surrogate, big integer, non-string key, deep nesting, other types
        return None
    if b"null" in data and _has_nonfinite(obj):
        return None  # orjson wrote NaN/Infinity as null; `json` writes NaN
    return data


def dumps_text(obj: Any, default: Callable[[Any], Any]) -> str:
    """`json.dumps(obj, ensure_ascii=False, default=default)`, in orjson's compact form,
    for log lines: a NaN or infinite float is written as null there (valid JSON, which
    the stdlib's NaN is not; not worth a walk of every line to keep)."""
    try:
        return orjson.dumps(obj, default=default).decode()
    except TypeError:
        return json.dumps(obj, ensure_ascii=False, default=default, separators=_COMPACT)
