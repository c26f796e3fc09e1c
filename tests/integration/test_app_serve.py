"""`pusher-trio serve` as a subprocess: start-up, SIGTERM with a waiting push, SIGHUP reload."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from load.serve import ServeProcess
from pusher_trio.control import jsonrpc
from pusher_trio.control.client import open_control
from pusher_trio.demo import Mirror, Phone

BUNDLE = "org.example.phone"

CONFIG = """
[control]
unix_socket = "run/control.sock"
tcp = "127.0.0.1:0"
[sniffer]
listen = ["udp:127.0.0.1:0"]
[store]
path = "state/pusher.db"
[push]
wait_timeout = {wait_timeout}
[log]
level = "info"
format = "json"
"""


@pytest.fixture
def daemon_config(tmp_path: Path) -> Path:
    config = tmp_path / "pusher.toml"
    config.write_text(CONFIG.format(wait_timeout=20))
    return config


@pytest.fixture
def daemon(daemon_config: Path) -> Iterator[ServeProcess]:
    d = ServeProcess(daemon_config, timeout=10.0)
    try:
        yield d
    finally:
        d.kill()


def stalling_listener() -> Any:
    """A TCP port that accepts and never answers: an APNs that stalls (the push stays open)."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


async def test_serve_with_a_bad_config_exits_2_naming_key_and_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[sniffer]\nrequire_2xx = 'sometimes'\n")
    with trio.fail_after(20):
        result = await trio.run_process(
            [sys.executable, "-m", "pusher_trio", "serve", "--config", str(config)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 2
    err = result.stderr.decode()
    assert err.count("\n") == 1
    assert f"{config}: sniffer.require_2xx" in err


async def test_sigterm_answers_waiting_calls_shutting_down_and_exits_0(daemon: ServeProcess) -> None:
    from pusher_trio.standins.certs import Authority

    stall = stalling_listener()
    try:
        with trio.fail_after(20):
            async with open_control(daemon.socket) as admin:
                from pusher_trio.model import App
                from pusher_trio.providers import load_apple_cert
                from pusher_trio.store import unstructure_app

                pem = Authority().apns_client_pem(BUNDLE)
                auth, _ = load_apple_cert(pem, time.time())
                app = App(BUNDLE, "apple", auth, host=f"127.0.0.1:{stall.getsockname()[1]}")
                await admin.call("apps.add", {"app": unstructure_app(app)})
                phone = Phone(
                    "iOS", "alice", "198.51.100.7", 50600,
                    f"pn-provider=apns;pn-prid={'ab' * 32};pn-param=TEAM123456.{BUNDLE}.voip", "T/1",
                )  # fmt: skip
                mirror = Mirror(daemon.sniffer)
                mirror.send(phone, phone.register(600))
                mirror.close()
                with trio.fail_after(3):
                    while not (await admin.call("devices.list", {"aor": phone.aor}))["devices"]:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                errors: list[jsonrpc.ControlError] = []

                async def call(call_id: str) -> None:
                    try:
                        async with open_control(daemon.socket) as client:
                            await client.call("push", {"aor": phone.aor, "call_id": call_id})
                    except jsonrpc.ControlError as exc:
                        errors.append(exc)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(call, "c1")
                    nursery.start_soon(call, "c2")
                    with trio.fail_after(3):
                        while (await admin.call("status", {}))["waiting"] < 2:  # noqa: ASYNC110
                            await trio.sleep(0.01)
                    sent = time.monotonic()
                    daemon.proc.send_signal(signal.SIGTERM)
            code = await trio.to_thread.run_sync(daemon.proc.wait, 6)
            took = time.monotonic() - sent
        assert code == 0
        assert took < 5
        assert [e.code for e in errors] == [-32005, -32005]
        assert not await trio.Path(daemon.socket).exists()  # removed on exit
    finally:
        stall.close()


async def test_sighup_reloads_and_a_bad_file_keeps_the_old_one(
    daemon: ServeProcess, daemon_config: Path
) -> None:
    with trio.fail_after(20):
        await trio.Path(daemon_config).write_text(CONFIG.format(wait_timeout=0.3))
        daemon.proc.send_signal(signal.SIGHUP)
        await trio.to_thread.run_sync(daemon.wait_for, "configuration reloaded")
        await trio.Path(daemon_config).write_text("[push]\nwait_timeout = 'soon'\n")
        daemon.proc.send_signal(signal.SIGHUP)
        line = await trio.to_thread.run_sync(daemon.wait_for, "reload failed")
        assert "push.wait_timeout" in line["msg"]
        assert str(daemon_config) in line["msg"]
        # the bad file was refused and the daemon goes on serving
        async with open_control(daemon.socket) as client:
            assert "uptime_s" in await client.call("status", {})
        assert daemon.proc.poll() is None


async def test_serve_on_a_busy_port_exits_2_naming_the_key(tmp_path: Path) -> None:
    busy = trio.socket.socket()
    await busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    config = tmp_path / "busy.toml"
    await trio.Path(config).write_text(
        CONFIG.format(wait_timeout=20).replace('tcp = "127.0.0.1:0"', f'tcp = "127.0.0.1:{port}"')
    )
    with trio.fail_after(20):
        result = await trio.run_process(
            [sys.executable, "-m", "pusher_trio", "serve", "--config", str(config)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    busy.close()
    assert result.returncode == 2
    last = result.stderr.decode().splitlines()[-1]
    assert last.startswith(f"pusher-trio: error: {config}: control: cannot listen")
