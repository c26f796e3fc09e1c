"""`pusher-trio demo`: the whole flow on this machine, as the README's first command runs it."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]

STEPS = ("registered", "token learned", "phone sleeps", "call arrives", "push sent",
         "REGISTER seen", "call resumed")  # fmt: skip


async def run_demo(*args: str) -> tuple[int, str, str]:
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "pusher_trio", "demo", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_demo_runs_the_whole_flow_for_ios_and_android() -> None:
    code, out, err = await run_demo()
    assert code == 0, err
    assert "iOS phone: alice@example.com (APNs)" in out
    assert "Android phone: bob@example.com (FCM)" in out
    assert "Browser: carol@example.com (Web Push)" in out
    for step in STEPS:
        assert out.count(step) >= 2, (step, out)
    # every step line carries its milliseconds
    step_lines = [line for line in out.splitlines() if re.match(r"\s*\d+\.\d ms ", line)]
    assert len(step_lines) >= 2 * len(STEPS)
    assert all(re.search(r"\(\+\d+\.\d ms\)$", line) for line in step_lines)
    assert "push answered registered after" in out
    # tokens are masked in the timeline
    assert re.search(r"token [0-9a-f]{6}…[0-9a-f]{4}", out)
    assert not re.search(r"[0-9a-f]{64}", out)
    assert out.rstrip().endswith("done: every call was delivered after a push")


async def test_demo_json_lines_ios_only() -> None:
    code, out, err = await run_demo("--no-fcm", "--json")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    whats = [e["what"] for e in events]
    for step in STEPS:
        assert step in whats
    assert all(isinstance(e["step_ms"], float | int) for e in events)
    assert not any("bob@example.com" in e["detail"] for e in events)


def test_the_stand_ins_need_only_the_packages_dependencies() -> None:
    # `pip install pusher-trio && pusher-trio demo`: nothing of the test extras may be imported.
    code = (
        "import sys, importlib\n"
        "sys.modules['trustme'] = None  # an import of it fails\n"
        "for name in ('certs', 'fake_apns', 'fake_fcm'):\n"
        "    importlib.import_module('pusher_trio.standins.' + name)\n"
        "print('ok')\n"
    )
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"
