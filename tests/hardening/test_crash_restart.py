"""kill -9 of `pusher-trio serve` during a REGISTER storm, then a restart on the same store
(short version of `python -m load.faults providers --crash-only`)."""

from __future__ import annotations

from pathlib import Path

import trio

from load import faults_providers


async def test_kill_during_a_register_storm_loses_nothing_older_than_1s(tmp_path: Path) -> None:
    with trio.fail_after(25):
        report = await faults_providers.crash_restart(tmp_path, quick=True)
    assert report.ok, "\n".join(report.lines())
    assert report.sent_early > 100
    assert report.found_early == report.sent_early
    assert report.integrity == "ok"
    assert report.held_push == "connection closed"
