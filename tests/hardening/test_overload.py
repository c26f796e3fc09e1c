"""Overload, short: 10x max_waiting push requests kept outstanding (load/faults_input.py)."""

from __future__ import annotations

import socket
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


async def test_no_wait_pushes_are_held_to_max_waiting(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with faults.open_sidecar(tmp_path, max_waiting=10) as sidecar:
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sender.bind(("127.0.0.1", 0))
            phone = faults.PhoneSim("slow")
            await sidecar.learn(phone, sender)
            sender.close()
            sidecar.pusher.delay = 0.5
            async with faults.rpc_connection(sidecar.tcp) as conn, trio.open_nursery() as nursery:
                for _ in range(100):
                    nursery.start_soon(conn.call, "push", {"aor": phone.aor, "wait": False})
            peak = sidecar.pusher.peak_in_flight
    assert peak <= 10
