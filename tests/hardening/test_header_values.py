"""A Call-ID that is no valid HTTP/2 header value must not cost the APNs pool its connection
(load/faults_input.py, real provider pool against the APNs stand-in)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from load import faults_input as faults


@pytest.mark.xfail(reason=faults.KNOWN_GAPS["header values"])
async def test_odd_call_id_keeps_the_apns_connection(tmp_path: Path) -> None:
    report = faults.Report("header values", echo=False)
    with trio.fail_after(20):
        await faults.check_header_values(report, tmp_path, call_ids=["a\r\nx-injected: 1"])
    assert report.failures == [], "\n".join(report.lines)
    assert report.gaps == [], "\n".join(report.lines)
