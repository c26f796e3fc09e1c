"""The import rules of DESIGN §2: sip/ is stdlib only; only the shells import trio."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Pure modules: bytes and values in, values out (STYLE.md, "The sans-IO boundary").
PURE = {
    "model.py",
    "registrations.py",
    "jsonrpc.py",
    "apns.py",
    "fcm.py",
    "credentials.py",
    "proxy.py",
    "webpush.py",
    "events.py",
    "tables.py",
    "protocol.py",  # redis/
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted((ROOT / "sip").rglob("*.py")), ids=str)
def test_sip_imports_only_the_standard_library(path: Path) -> None:
    import sys

    foreign = {
        r for r in imported_roots(path) if r not in sys.stdlib_module_names and r != "sip"
    }
    assert not foreign, f"{path.name} imports {sorted(foreign)}"


@pytest.mark.parametrize(
    "path",
    sorted(p for p in (ROOT / "pusher_trio").rglob("*.py") if p.name in PURE),
    ids=str,
)
def test_pure_modules_import_no_io_framework(path: Path) -> None:
    roots = imported_roots(path)
    assert not roots & {"trio", "httpcore", "socket", "ssl", "sqlite3"}, roots
