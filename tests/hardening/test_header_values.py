"""A Call-ID that is no valid HTTP/2 header value must not cost the APNs pool its connection
(load/faults_input.py, real provider pool against the APNs stand-in)."""

from __future__ import annotations

from pathlib import Path

import trio

from load import faults_input as faults


async def test_odd_call_id_keeps_the_apns_connection(tmp_path: Path) -> None:
    report = faults.Report("header values", echo=False)
    with trio.fail_after(20):
        await faults.check_header_values(
            report, tmp_path, call_ids=["a\r\nx-injected: 1", "nul\x00byte", " lead"]
        )
    assert report.failures == [], "\n".join(report.lines)
    assert report.figures["connections"] == 1
