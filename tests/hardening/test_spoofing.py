"""Spoofed REGISTER copies change no device record (load/faults_input.py)."""

from __future__ import annotations

from pathlib import Path

import trio

from load import faults_input as faults


async def test_spoofed_copies_change_no_device_record(tmp_path: Path) -> None:
    report = faults.Report("spoofing", echo=False)
    with trio.fail_after(15):
        await faults.check_spoofing(report, tmp_path)
    assert report.failures == [], "\n".join(report.lines)
    assert report.figures["attempts"] >= 12
