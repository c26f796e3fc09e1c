"""CLI (DESIGN §6): argument parsing, exit codes, one-line errors, masking. No daemon needed."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from pusher_trio import cli
from pusher_trio.control.client import parse_target
from pusher_trio.control.jsonrpc import ControlError, InvalidParams

TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    out = io.StringIO()
    code = cli.main(argv, out=out)
    captured = capsys.readouterr()
    return code, out.getvalue() + captured.out, captured.err


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The embedded defaults put state under $XDG_DATA_HOME: keep each test's apart.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv(cli.CONFIG_ENV, raising=False)


def assert_one_line_error(err: str) -> None:
    assert err.endswith("\n")
    assert err.count("\n") == 1, err
    assert err.startswith("pusher-trio: error: ")


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "a.toml", "status"],
        ["status", "--config", "a.toml"],
    ],
)
def test_config_before_or_after_the_command(argv: list[str]) -> None:
    args = cli.build_parser().parse_args(argv)
    assert args.config == "a.toml"
    assert args.command == "status"


@pytest.mark.parametrize(
    "argv",
    [
        ["--socket", "/tmp/x.sock", "devices", "list"],
        ["devices", "--socket", "/tmp/x.sock", "list"],
        ["devices", "list", "--socket", "/tmp/x.sock"],
    ],
)
def test_socket_anywhere(argv: list[str]) -> None:
    args = cli.build_parser().parse_args(argv)
    assert args.socket == "/tmp/x.sock"


def test_kazoo_argument_order_for_add_apple_app() -> None:
    args = cli.build_parser().parse_args(
        ["add-apple-app", "org.myorg.myapp", "/tmp/myapp.pem", "api.development.push.apple.com"]
    )
    assert (args.app_id, args.cert_file, args.host_positional) == (
        "org.myorg.myapp",
        "/tmp/myapp.pem",
        "api.development.push.apple.com",
    )
    assert args.push_type == "alert"


def test_token_form_of_add_apple_app() -> None:
    args = cli.build_parser().parse_args(
        ["add-apple-app", "org.x", "--key-file", "k.p8", "--key-id", "K", "--team-id", "T",
         "--push-type", "voip"]
    )  # fmt: skip
    assert (args.key_file, args.key_id, args.team_id, args.push_type) == ("k.p8", "K", "T", "voip")
    assert args.cert_file is None


def test_seed_config_commands_parse() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(
        ["config", "set-json", "User-Agents.MyApp", '{"regex":"^MyApp","properties":{}}']
    )
    assert (args.key, args.func) == ("User-Agents.MyApp", cli.cmd_config_set_json)
    args = parser.parse_args(["config", "set", "User-Agents.MyApp.properties.Token-ID", "pn-tok"])
    assert (args.key, args.value) == ("User-Agents.MyApp.properties.Token-ID", "pn-tok")


def test_push_options() -> None:
    args = cli.build_parser().parse_args(
        ["push", "alice@example.com", "--timeout", "7.5", "--caller-number", "100",
         "--caller-name", "Bob"]
    )  # fmt: skip
    assert (args.aor, args.timeout, args.caller_number, args.caller_name) == (
        "alice@example.com",
        7.5,
        "100",
        "Bob",
    )


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    for command in ("serve", "add-apple-app", "add-firebase-app", "apps", "config", "devices",
                    "push", "status", "demo"):  # fmt: skip
        assert command in out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["apps"],
        ["push"],
        ["push", "a@b", "--timeout", "soon"],
        ["push", "a@b", "--timeout", "nan"],
        ["add-apple-app", "--push-type", "loud", "x", "y"],
        ["config", "set", "only-key"],
        ["devices", "list", "a@b", "extra"],
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2
    assert_one_line_error(err)


def test_bad_config_file_exits_2_naming_key_and_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "bad.toml"
    file.write_text("[push]\nwait_timeout = 'x'\n")
    code, _, err = run(["status", "--config", str(file)], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert f"{file}: push.wait_timeout" in err


def test_config_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "bad.toml"
    file.write_text("[log]\nlevel = 'loud'\n")
    monkeypatch.setenv(cli.CONFIG_ENV, str(file))
    code, _, err = run(["status"], capsys)
    assert code == 2
    assert "log.level" in err


def test_no_daemon_exits_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["status", "--socket", str(tmp_path / "none.sock")], capsys)
    assert code == 1
    assert_one_line_error(err)
    assert "no daemon answers" in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["add-apple-app", "org.x"], "CERT_FILE or --key-file"),
        (["add-apple-app", "org.x", "--key-file", "k.p8"], "--key-id and --team-id"),
        (["add-apple-app", "org.x", "c.pem", "--key-id", "K"], "go with --key-file"),
        (["add-apple-app", "org.x", "/nonexistent/c.pem"], "cannot read certificate file"),
        (["add-firebase-app", "org.x", "/nonexistent/sa.json"], "cannot read service account"),
        (["config", "set-json", "User-Agents.X", "{not json"], "VALUE is not JSON"),
        (["push", "a@b", "--timeout", "0"], "--timeout must be greater than 0"),
    ],
)
def test_bad_input_exits_2(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2, err
    assert_one_line_error(err)
    assert words in err


def test_payload_template_must_be_a_json_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = tmp_path / "t.json"
    template.write_text("[1, 2]")
    cert = tmp_path / "c.pem"
    cert.write_text("whatever")
    code, _, err = run(
        ["add-apple-app", "org.x", str(cert), "--payload-template", str(template)], capsys
    )
    assert code == 2
    assert "must be a JSON object" in err


def test_garbage_certificate_is_refused_without_echoing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nSECRETSECRET\n-----END CERTIFICATE-----\n")
    code, out, err = run(["add-apple-app", "org.x", str(cert)], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert "SECRETSECRET" not in err + out


def test_legacy_fcm_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "legacy.txt"
    key.write_text(
        "AAAAxyz:APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8OvPVGJ-hQMRKRrZuJAEcl7B338qju59zJMjw2DELjzEvxwYv7hH5Ynpc1ODQ0aT4U4OFEeco8ohsN5PjL1iC2dNtk2BAokeMCg2ZXKqpc8FXKmhX94kIxQ"
    )
    code, out, err = run(["add-firebase-app", "org.x", str(key)], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert "legacy" in err.lower()
    assert "APA91b" not in err + out


# --- output masking, with the daemon call replaced -----------------------------------------------


class FakeDaemon:
    def __init__(self, results: dict[str, Any]) -> None:
        self.results = results
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, target: str, method: str, params: dict[str, Any], timeout: float) -> Any:
        self.calls.append((method, dict(params)))
        result = self.results[method]
        if isinstance(result, Exception):
            raise result
        return result


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch) -> FakeDaemon:
    fake = FakeDaemon({})
    monkeypatch.setattr(cli, "call", fake)
    return fake


def test_devices_list_masks_tokens_even_if_the_daemon_did_not(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.results["devices.list"] = {
        "devices": [
            {"aor": "alice@example.com", "device_id": TOKEN, "type": "apple", "app": "org.x",
             "token": TOKEN, "sandbox": False, "push_type": "voip", "state": "valid",
             "reason": None, "user_agent": "MyApp iOS 1.0", "contact": "sip:alice@h",
             "last_registered": 1_700_000_000},
        ]
    }  # fmt: skip
    for argv in (
        ["devices", "list", "--table"],
        ["devices", "list"],
        ["devices", "list", "--json"],
    ):
        code, out, err = run(argv, capsys)
        assert code == 0, err
        assert TOKEN not in out
        assert "a1b2c3…8f90" in out
    assert daemon.calls[0] == ("devices.list", {})


def test_devices_list_for_an_aor(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.results["devices.list"] = {"devices": []}
    code, out, _ = run(["devices", "list", "bob@example.com", "--table"], capsys)
    assert code == 0
    assert "no devices for bob@example.com" in out
    assert daemon.calls == [("devices.list", {"aor": "bob@example.com"})]


def test_devices_remove_nothing_exits_1(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.results["devices.remove"] = {"removed": 0}
    code, _, err = run(["devices", "remove", "bob@example.com", TOKEN], capsys)
    assert code == 1
    assert_one_line_error(err)
    assert TOKEN not in err
    assert daemon.calls == [("devices.remove", {"aor": "bob@example.com", "token": TOKEN})]


def test_push_registered_exits_0(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.results["push"] = {
        "status": "registered",
        "aor": "alice@example.com",
        "contact": "sip:alice@198.51.100.7;pn-prid=a1b2c3…8f90",
        "waited_ms": 412,
        "pushes": [{"token": TOKEN, "outcome": "delivered"}],
    }
    code, out, _ = run(
        ["push", "alice@example.com", "--timeout", "5", "--caller-name", "Bob"], capsys
    )
    assert code == 0
    assert "registered alice@example.com after 412 ms" in out
    assert TOKEN not in out
    method, params = daemon.calls[0]
    assert method == "push"
    assert params["aor"] == "alice@example.com"
    assert params["timeout"] == 5.0
    assert params["caller_name"] == "Bob"
    assert params["call_id"]


@pytest.mark.parametrize(
    ("code", "name"),
    [(-32001, "NoPushTarget"), (-32002, "Timeout"), (-32003, "PushRejected"),
     (-32004, "Overloaded"), (-32005, "ShuttingDown"), (-32006, "Cancelled")],
)  # fmt: skip
def test_push_errors_exit_1_with_one_line(
    code: int, name: str, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.results["push"] = cli.RemoteError(
        name, f"{name}\nsecond line", code, {"pushes": [{"token": TOKEN, "outcome": "x"}]}
    )
    exit_code, _, err = run(["push", "alice@example.com"], capsys)
    assert exit_code == 1
    assert_one_line_error(err)
    assert name in err
    assert TOKEN not in err


def test_remote_bad_params_exits_2(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.results["push"] = cli.RemoteError("InvalidParams", "timeout", -32602, None)
    code, _, err = run(["push", "alice@example.com"], capsys)
    assert code == 2
    assert_one_line_error(err)


def test_status_text_and_json(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    status = {"uptime_s": 12.5, "devices": 3, "waiting": 0,
              "datagrams": {"received": 10}, "registrations": 4,
              "pushes": {"delivered": 2}}  # fmt: skip
    daemon.results["status"] = status
    code, out, _ = run(["status", "--table"], capsys)
    assert code == 0
    assert "devices:        3" in out.splitlines()
    assert ["received", "10"] in [line.split() for line in out.splitlines()]
    code, out, _ = run(["status", "-v", "--table"], capsys)
    assert "  received: 10" in out
    code, out, _ = run(["status", "--json"], capsys)
    assert code == 0
    assert json.loads(out) == status


def test_apps_list_shows_no_secrets(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.results["apps.list"] = {
        "apps": [{"app_id": "org.x", "type": "apple", "host": "api.push.apple.com",
                  "push_type": "voip", "auth": "certificate"}]
    }  # fmt: skip
    code, out, _ = run(["apps", "list"], capsys)
    assert code == 0
    assert "org.x" in out and "certificate" in out and "voip" in out


def test_config_get_prints_strings_raw_and_json_otherwise(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.results["config.get"] = {"value": "^MyApp"}
    code, out, _ = run(["config", "get", "User-Agents.MyApp.regex"], capsys)
    assert (code, out) == (0, "^MyApp\n")
    daemon.results["config.get"] = {"value": {"regex": "^MyApp"}}
    code, out, _ = run(["config", "get", "User-Agents.MyApp"], capsys)
    assert code == 0
    assert json.loads(out) == {"regex": "^MyApp"}


def test_config_set_json_sends_parsed_json(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.results["config.set_json"] = {}
    value = {"regex": "^MyApp", "properties": {"Token-App": "app-id"}}
    code, _, _ = run(["config", "set-json", "User-Agents.MyApp", json.dumps(value)], capsys)
    assert code == 0
    assert daemon.calls == [("config.set_json", {"key": "User-Agents.MyApp", "value": value})]


def test_socket_host_port_means_tcp() -> None:
    # the CLI hands --socket to control/client.py, which reads host:port as TCP
    target = cli.control_target("127.0.0.1:5290")
    assert parse_target(target) == ("127.0.0.1", 5290)
    target = cli.control_target("/run/pusher-trio/control.sock")
    assert parse_target(target) == "/run/pusher-trio/control.sock"
    assert parse_target(cli.control_target("tcp:[::1]:5290")) == ("::1", 5290)
    with pytest.raises(cli.UsageError):
        cli.control_target("tcp:nonsense")


def test_device_id_that_is_a_token_is_masked() -> None:
    shown = cli._mask_device({"device_id": TOKEN, "token": TOKEN})
    assert TOKEN not in json.dumps(shown, ensure_ascii=False)
    urn = '"<urn:uuid:00000000-0000-0000-0000-000000000001>"'
    assert cli._mask_device({"device_id": urn})["device_id"] == urn


def test_config_get_of_a_missing_key_exits_1(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    # what the service answers (-32602 naming the key) is "the operation failed" for the CLI
    missing = InvalidParams("no config key User-Agents.X", data={"key": "User-Agents.X"})
    daemon.results["config.get"] = cli.RemoteError.from_control(missing)
    code, out, err = run(["config", "get", "User-Agents.X"], capsys)
    assert (code, out) == (1, "")
    assert_one_line_error(err)
    assert "no config key User-Agents.X" in err


def test_config_get_of_a_bad_key_exits_2(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.results["config.get"] = cli.RemoteError.from_control(InvalidParams("empty key part"))
    code, _, err = run(["config", "get", "User-Agents..x"], capsys)
    assert code == 2
    assert_one_line_error(err)


def test_remote_error_names_come_from_the_protocol() -> None:
    error = cli.RemoteError.from_control(ControlError("odd", code=-32099))
    assert (str(error), error.code) == ("error -32099: odd", 1)
    error = cli.RemoteError.from_control(InvalidParams("timeout"))
    assert (str(error), error.code) == ("InvalidParams: timeout", 2)


class Terminal(io.StringIO):
    """stdout as a terminal (what `isatty()` says decides table or JSON)."""

    def isatty(self) -> bool:
        return True


STATUS = {
    "uptime_s": 12.5, "devices": 3, "waiting": 1, "registrations": 4,
    "waiters": {"peak": 7, "max_waiting": 10000},
    "pushes_by_provider": {"apple": {"delivered": 20, "token_invalid": 1},
                           "firebase": {"delivered": 5, "retry_later": 2}},
    "requests": {"registered": 24, "Timeout": 2},
    "latency_ms": {"push_out": {"count": 26, "mean": 0.4, "p50": 0.3, "p99": 1.2, "max": 2.0}},
    "datagrams": {"received": 60, "registers": 30, "responses": 30, "dropped_malformed": 0},
    "providers": {"connections": 2},
    "hep": {"capture": "homer:9060", "sent": 99, "dropped": 0, "errors": 1},
}  # fmt: skip


def test_status_on_a_terminal_is_tables_and_piped_is_json(daemon: FakeDaemon) -> None:
    daemon.results["status"] = STATUS
    terminal = Terminal()
    assert cli.main(["status"], out=terminal) == 0
    lines = [line.split() for line in terminal.getvalue().splitlines()]
    assert ["waiting", "calls:", "1", "(peak", "7,", "max", "10000)"] in lines
    assert [
        "PUSHES",
        "DELIVERED",
        "TOKEN_INVALID",
        "RETRY_LATER",
        "AUTH_FAILED",
        "REJECTED",
    ] in lines
    assert ["apple", "20", "1", "0", "0", "0"] in lines
    assert ["firebase", "5", "0", "2", "0", "0"] in lines
    assert ["Timeout", "2"] in lines
    assert ["push_out", "26", "0.4", "0.3", "1.2", "2"] in lines
    assert ["dropped_malformed", "0"] in lines
    assert [
        "homer:",
        "homer:9060:",
        "99",
        "events",
        "sent,",
        "0",
        "dropped,",
        "1",
        "errors",
    ] in lines
    forced = Terminal()
    assert cli.main(["status", "--json"], out=forced) == 0
    assert json.loads(forced.getvalue()) == STATUS
    piped = io.StringIO()
    assert cli.main(["status"], out=piped) == 0
    assert json.loads(piped.getvalue()) == STATUS


def test_devices_list_on_a_terminal_is_a_table_and_piped_is_json(daemon: FakeDaemon) -> None:
    daemon.results["devices.list"] = {
        "devices": [{"aor": "alice@example.com", "device_id": "urn:x", "type": "apple",
                     "app": "org.x", "token": TOKEN, "state": "invalid", "reason": "Unregistered",
                     "last_registered": 0, "user_agent": "MyApp"}]
    }  # fmt: skip
    terminal = Terminal()
    assert cli.main(["devices", "list"], out=terminal) == 0
    header, row = terminal.getvalue().splitlines()
    assert header.split() == [
        "AOR",
        "TYPE",
        "APP",
        "TOKEN",
        "STATE",
        "LAST_REGISTERED",
        "USER_AGENT",
    ]
    assert row.split() == ["alice@example.com", "apple", "org.x", "a1b2c3…8f90", "invalid",
                           "(Unregistered)", "-", "MyApp"]  # fmt: skip
    piped = io.StringIO()
    assert cli.main(["devices", "list"], out=piped) == 0
    assert json.loads(piped.getvalue())["devices"][0]["token"] == "a1b2c3…8f90"


def test_json_and_table_cannot_both_be_asked(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["status", "--json", "--table"], capsys)
    assert code == 2
    assert_one_line_error(err)
