"""The `pusher-trio` command as a subprocess, against a stopped daemon and a running one."""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from pusher_trio.app import Running, run
from pusher_trio.config import load_config
from pusher_trio.demo import Mirror, Phone
from pusher_trio.standins.certs import (
    Authority,
    make_p8,
    make_service_account,
    random_id,
    service_account_json,
)
from tests.integration.test_app import ScriptedPusher

BUNDLE = "org.example.phone"
TEAM = "TEAM123456"


CONFIG = """
[control]
unix_socket = "run/control.sock"
tcp = ""
[sniffer]
listen = ["udp:127.0.0.1:0"]
[store]
path = "state/pusher.db"
[log]
level = "warning"
"""

UA_JSON = '{"regex":"^MyApp","properties":{"Token-App":"app-id","Token-Type":"pn-type","Token-ID":"pn-tok"}}'


@attrs.frozen
class Result:
    code: int
    out: str
    err: str


async def cli(config: Path, *args: str) -> Result:
    with trio.fail_after(30):
        done = await trio.run_process(
            [sys.executable, "-m", "pusher_trio", "--config", str(config), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and err.startswith("pusher-trio: error: ")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    file = tmp_path / "pusher.toml"
    file.write_text(CONFIG)
    return file


@pytest.fixture
def cert_file(tmp_path: Path) -> Path:
    path = tmp_path / "myapp.pem"
    path.write_text(Authority().apns_client_pem(BUNDLE))
    return path


@attrs.define
class Daemon:
    running: Running
    pusher: ScriptedPusher


@pytest.fixture
async def daemon(config: Path) -> AsyncIterator[Daemon]:
    pusher = ScriptedPusher()
    async with trio.open_nursery() as nursery:
        running: Running = await nursery.start(
            lambda task_status: run(
                load_config(config), task_status=task_status, handle_signals=False, pusher=pusher
            )
        )
        yield Daemon(running, pusher)
        running.shutdown()


# --- daemon stopped: apps and config go to the store file -------------------------------------


async def test_stopped_daemon_add_apple_app_and_config_then_serve_sees_them(
    config: Path, cert_file: Path
) -> None:
    added = await cli(
        config, "add-apple-app", BUNDLE, str(cert_file), "api.development.push.apple.com"
    )
    assert added.code == 0, added.err
    assert "daemon not running" in added.out
    pem_body = (await trio.Path(cert_file).read_text()).split("\n")[1]
    assert pem_body not in added.out + added.err

    listed = await cli(config, "apps", "list", "--json")
    assert listed.code == 0, listed.err
    apps = json.loads(listed.out)["apps"]
    assert apps[0]["app_id"] == BUNDLE
    assert apps[0]["host"] == "api.development.push.apple.com"
    assert apps[0]["auth"] == "certificate"
    assert "BEGIN" not in listed.out

    seed = [
        ("config", "set-json", "User-Agents.MyApp", UA_JSON),
        ("config", "set", "User-Agents.MyApp.properties.Token-ID", "pn-tok"),
        ("config", "set", "User-Agents.Other.regex", "^Other"),
    ]
    for args in seed:
        result = await cli(config, *args)
        assert result.code == 0, result.err
    got = await cli(config, "config", "get", "User-Agents")
    assert got.code == 0
    assert json.loads(got.out)["MyApp"] == json.loads(UA_JSON)
    assert json.loads(got.out)["Other"] == {"regex": "^Other"}
    regex = await cli(config, "config", "get", "User-Agents.MyApp.regex")
    assert regex.out == "^MyApp\n"
    deleted = await cli(config, "config", "delete", "User-Agents.Other")
    assert deleted.code == 0
    missing = await cli(config, "config", "get", "User-Agents.Other")
    assert missing.code == 1 and one_line(missing.err)

    # the daemon reads what was stored while it was stopped
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            running: Running = await nursery.start(
                lambda task_status: run(
                    load_config(config), task_status=task_status, handle_signals=False,
                    pusher=ScriptedPusher(),
                )
            )  # fmt: skip
            assert BUNDLE in running.store.apps()
            assert running.store.get_config("User-Agents.MyApp.properties.Token-ID") == "pn-tok"
            running.shutdown()

    removed = await cli(config, "apps", "remove", BUNDLE)
    assert removed.code == 0
    again = await cli(config, "apps", "remove", BUNDLE)
    assert again.code == 1 and one_line(again.err)


async def test_stopped_daemon_devices_push_status_fail_with_one_line(config: Path) -> None:
    for args in (("devices", "list"), ("push", "alice@example.com"), ("status",)):
        result = await cli(config, *args)
        assert result.code == 1, result
        assert one_line(result.err)
        assert "no daemon answers" in result.err


async def test_token_auth_and_firebase_apps(config: Path, tmp_path: Path) -> None:
    key_pem, _public = make_p8()
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_text(key_pem)
    key_id, team = random_id(), random_id()
    result = await cli(
        config, "add-apple-app", "org.example.token", "--key-file", str(key_file),
        "--key-id", key_id, "--team-id", team, "--push-type", "voip",
    )  # fmt: skip
    assert result.code == 0, result.err
    account, _ = make_service_account(project_id="demo-project")
    sa = tmp_path / "sa.json"
    sa.write_text(service_account_json(account))
    result = await cli(
        config, "add-firebase-app", "org.example.android", str(sa), "--project-number", "1234",
        "--base-url", "https://127.0.0.1:9",
    )  # fmt: skip
    assert result.code == 0, result.err
    listed = json.loads((await cli(config, "apps", "list", "--json")).out)["apps"]
    by_id = {a["app_id"]: a for a in listed}
    assert by_id["org.example.token"]["auth"] == "token"
    assert by_id["org.example.token"]["push_type"] == "voip"
    assert by_id["org.example.android"]["auth"] == "service-account"
    assert by_id["org.example.android"]["project_number"] == "1234"
    text = json.dumps(listed)
    assert "PRIVATE KEY" not in text and account["private_key_id"] not in text


async def test_expiring_certificate_warns_on_stderr(config: Path, tmp_path: Path) -> None:
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=10)
    pem = tmp_path / "soon.pem"
    pem.write_text(Authority().apns_client_pem(BUNDLE, not_after=soon))
    result = await cli(config, "add-apple-app", BUNDLE, str(pem))
    assert result.code == 0, result.err
    assert "warning" in result.err and "expire" in result.err


async def test_mismatched_key_is_refused(config: Path, tmp_path: Path) -> None:
    authority = Authority()
    one = authority.apns_client_pem(BUNDLE)
    other = authority.apns_client_pem("org.other")
    cert_part = one.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    key_part = other[other.index("-----BEGIN", other.index("-----END CERTIFICATE-----")) :]
    pem = tmp_path / "mixed.pem"
    pem.write_text(cert_part + key_part)
    result = await cli(config, "add-apple-app", BUNDLE, str(pem))
    assert result.code == 2
    assert one_line(result.err)
    assert "PRIVATE KEY" not in result.err


# --- daemon running ---------------------------------------------------------------------------


def phone(token: str) -> Phone:
    return Phone(
        "iOS",
        "alice",
        "198.51.100.7",
        50600,
        f"pn-provider=apns;pn-prid={token};pn-param={TEAM}.{BUNDLE}.voip",
        "TestPhone/1.0",
    )


async def registered(daemon: Daemon, p: Phone) -> None:
    mirror = Mirror(daemon.running.sniffer[0])
    mirror.send(p, p.register(600))
    mirror.close()
    with trio.fail_after(3):
        while not daemon.running.store.devices(p.aor):  # noqa: ASYNC110
            await trio.sleep(0.005)


async def test_running_daemon_add_app_devices_push_status(
    daemon: Daemon, config: Path, cert_file: Path
) -> None:
    with trio.fail_after(60):
        added = await cli(config, "add-apple-app", BUNDLE, str(cert_file), "--push-type", "voip")
        assert added.code == 0, added.err
        assert "to the daemon" in added.out
        assert BUNDLE in daemon.running.store.apps()

        token = "0123456789abcdef" * 4
        p = phone(token)
        await registered(daemon, p)
        listed = await cli(config, "devices", "list")
        assert listed.code == 0, listed.err
        assert token not in listed.out
        assert "012345…cdef" in listed.out
        as_json = await cli(config, "devices", "list", p.aor, "--json")
        device: dict[str, Any] = json.loads(as_json.out)["devices"][0]
        assert device["token"] == "012345…cdef"
        assert token not in device["contact"]

        # push: the scripted provider wakes the phone, which registers again
        mirror = Mirror(daemon.running.sniffer[0])
        daemon.pusher.on_push = lambda _device: mirror.send(p, p.register(600))
        pushed = await cli(config, "push", p.aor, "--timeout", "5", "--caller-name", "Bob")
        assert pushed.code == 0, pushed.err
        assert f"registered {p.aor}" in pushed.out
        assert token not in pushed.out
        assert daemon.pusher.sent[-1][2].caller_name == "Bob"

        # no REGISTER this time: Timeout, exit 1, one line
        daemon.pusher.on_push = None
        timed_out = await cli(config, "push", p.aor, "--timeout", "0.3")
        assert timed_out.code == 1
        assert one_line(timed_out.err)
        assert "Timeout" in timed_out.err
        assert token not in timed_out.err
        mirror.close()

        nobody = await cli(config, "push", "nobody@example.com")
        assert nobody.code == 1 and "NoPushTarget" in nobody.err

        missing = await cli(config, "config", "get", "User-Agents.Nope")
        assert missing.code == 1 and one_line(missing.err)
        assert "no config key User-Agents.Nope" in missing.err

        status = await cli(config, "status", "--json")
        assert status.code == 0
        numbers = json.loads(status.out)
        assert numbers["devices"] == 1
        assert numbers["pushes"]["delivered"] >= 2

        removed = await cli(config, "devices", "remove", p.aor, token)
        assert removed.code == 0, removed.err
        assert token not in removed.out
        assert daemon.running.store.devices(p.aor) == []


async def test_socket_option_reaches_the_daemon(daemon: Daemon, tmp_path: Path) -> None:
    assert daemon.running.control_socket is not None
    other = tmp_path / "empty.toml"
    other.write_text("")
    with trio.fail_after(30):
        done = await trio.run_process(
            [sys.executable, "-m", "pusher_trio", "status", "--socket",
             daemon.running.control_socket, "--json"],
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "uptime_s" in json.loads(done.stdout)


def _run_on_a_terminal(argv: list[str]) -> tuple[int, str]:
    """Run the CLI with stdout on a pseudo-terminal (what an operator's shell gives it)."""
    import os
    import pty
    import subprocess

    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(argv, stdout=follower, stderr=follower, stdin=subprocess.DEVNULL)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = process.wait(timeout=30)
    finally:
        os.close(leader)
    return code, b"".join(chunks).decode().replace("\r\n", "\n")


async def test_status_and_devices_list_print_tables_on_a_terminal_and_json_when_piped(
    daemon: Daemon,
) -> None:
    socket_path = daemon.running.control_socket
    assert socket_path is not None
    token = "0123456789abcdef" * 4
    await registered(daemon, phone(token))
    base = [sys.executable, "-m", "pusher_trio"]
    with trio.fail_after(60):
        code, text = await trio.to_thread.run_sync(
            _run_on_a_terminal, [*base, "status", "--socket", socket_path]
        )
        assert code == 0, text
        assert ["devices:", "1"] in [line.split() for line in text.splitlines()]
        assert "DATAGRAMS" in text
        code, text = await trio.to_thread.run_sync(
            _run_on_a_terminal, [*base, "devices", "list", "--socket", socket_path]
        )
        assert code == 0, text
        assert text.splitlines()[0].split()[:4] == ["AOR", "TYPE", "APP", "TOKEN"]
        assert "012345…cdef" in text and token not in text
        piped = await trio.run_process(
            [*base, "devices", "list", "--socket", socket_path],
            capture_stdout=True, capture_stderr=True,
        )  # fmt: skip
        devices = json.loads(piped.stdout)["devices"]
        assert [d["token"] for d in devices] == ["012345…cdef"]
