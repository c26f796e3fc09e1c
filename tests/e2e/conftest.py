"""End-to-end tests need a real Kamailio and sipp: skip without them, fail under CI=true.

Every test module here sets `pytestmark = pytest.mark.e2e`; the hook below marks
anything else collected in this folder too (`pytest -m "not e2e"` skips them all).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.harness import KAMAILIO, SIPP

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _tools_present() -> None:
    missing = [name for name, path in (("kamailio", KAMAILIO), ("sipp", SIPP)) if path is None]
    if not missing:
        return
    reason = f"{', '.join(missing)} not installed"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)
