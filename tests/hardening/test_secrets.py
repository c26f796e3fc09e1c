"""No full token, key or certificate body in logs, CLI output, RPC answers or errors; file
modes of the store and the control socket (load/faults_input.py, a `serve` subprocess)."""

from __future__ import annotations

from pathlib import Path

import trio

from load import faults_input as faults


async def test_no_secret_reaches_logs_output_or_errors(tmp_path: Path) -> None:
    report = faults.Report("secrets", echo=False)
    with trio.fail_after(40):
        await faults.check_secrets(report, tmp_path, fmt="json")
    assert report.failures == [], "\n".join(report.lines)
    assert report.figures["tokens"] >= 6
    assert report.figures["fragments"] > 100


def test_needles_find_a_rewrapped_key_body() -> None:
    from pusher_trio.standins.certs import make_p8

    p8, _ = make_p8()
    needles = faults.secret_needles(p8)
    body = "".join(p8.split("-----")[2].split())
    rewrapped = "\\n".join(body[i : i + 40] for i in range(0, len(body), 40))
    assert any(n in rewrapped for n in needles)
    assert not any(n in "nothing secret here" for n in needles)
