"""Overload, short: 10x max_waiting push requests kept outstanding (load/faults_input.py)."""

from __future__ import annotations

from pathlib import Path

import trio

from load import faults_input as faults


async def test_overload_answers_overloaded_fast_and_recovers(tmp_path: Path) -> None:
    report = faults.Report("overload", echo=False)
    with trio.fail_after(30):
        await faults.check_overload(report, tmp_path, cap=50, seconds=2.5)
    assert report.failures == [], "\n".join(report.lines)
    figures = report.figures
    assert figures["overloaded"] > 0
    assert figures["peak_waiting"] <= 50
    assert figures["recovered_s"] < 2.0
