"""Static configuration (DESIGN §4): defaults, every key, errors that name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pusher_trio.config import (
    Config,
    ConfigError,
    default_config,
    default_state_dir,
    load_config,
    load_proxy,
    parse_config,
    parse_host_port,
    parse_udp_listen,
)

ENV = {"XDG_DATA_HOME": "/data", "HOME": "/home/op"}

FULL = """
[control]
unix_socket = "/run/pusher-trio/control.sock"
unix_mode   = "0600"
tcp         = "127.0.0.1:5291"

[sniffer]
listen     = ["udp:127.0.0.1:9060", "udp:[::1]:9061", "10.0.0.1:9062"]
allow_from = ["127.0.0.0/8", "::1/128", "10.0.0.7"]
hep_auth_key = "s3cret"
require_2xx  = false

[store]
path = "/var/lib/pusher-trio/pusher.db"

[push]
wait_timeout = 15
max_wait     = 45.5
max_waiting  = 500
ca_file      = "ca.pem"

[metrics]
listen = "127.0.0.1:9091"

[log]
level  = "debug"
format = "json"
"""


def test_defaults_are_the_design_values_with_paths_in_the_data_folder() -> None:
    config = default_config(ENV)
    assert config.control.unix_socket == "/data/pusher-trio/control.sock"
    assert config.control.mode == 0o660
    assert config.control.tcp_address == ("127.0.0.1", 5290)
    assert config.sniffer.listen_addresses == [("127.0.0.1", 9060)]
    assert config.sniffer.allow_from == ["127.0.0.0/8", "::1/128"]
    assert config.sniffer.hep_auth_key == ""
    assert config.sniffer.require_2xx is True
    assert config.store.path == "/data/pusher-trio/pusher.db"
    assert (config.push.wait_timeout, config.push.max_wait) == (20.0, 60.0)
    assert config.push.max_waiting == 10000
    assert config.push.ca_file == ""
    assert config.push.idle_timeout == 600.0
    assert config.metrics.address is None
    assert (config.log.level, config.log.format) == ("info", "text")
    assert config.source is None


def test_state_dir_falls_back_to_home_local_share() -> None:
    assert default_state_dir({"HOME": "/home/op"}) == Path("/home/op/.local/share/pusher-trio")
    # XDG says a relative XDG_DATA_HOME is invalid and must be ignored
    assert default_state_dir({"HOME": "/h", "XDG_DATA_HOME": "rel"}) == Path(
        "/h/.local/share/pusher-trio"
    )


def test_load_none_gives_defaults() -> None:
    assert load_config(None, env=ENV) == default_config(ENV)


def test_every_key_is_read(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    file = tmp_path / "pusher.toml"
    file.write_text(FULL)
    config = load_config(file, env=ENV)
    assert config.control.unix_socket == "/run/pusher-trio/control.sock"
    assert config.control.mode == 0o600
    assert config.control.tcp_address == ("127.0.0.1", 5291)
    assert config.sniffer.listen_addresses == [
        ("127.0.0.1", 9060),
        ("::1", 9061),
        ("10.0.0.1", 9062),
    ]
    assert config.sniffer.allow_from == ["127.0.0.0/8", "::1/128", "10.0.0.7"]
    assert config.sniffer.hep_auth_key == "s3cret"
    assert config.sniffer.require_2xx is False
    assert config.store.path == "/var/lib/pusher-trio/pusher.db"
    assert config.push.wait_timeout == 15.0
    assert config.push.max_wait == 45.5
    assert config.push.max_waiting == 500
    assert config.push.ca_file == str(tmp_path / "ca.pem")  # relative to the file
    assert config.metrics.address == ("127.0.0.1", 9091)
    assert (config.log.level, config.log.format) == ("debug", "json")
    assert config.source == str(file)


def test_secret_is_not_in_repr() -> None:
    config = parse_config('[sniffer]\nhep_auth_key = "s3cret"\n', "f.toml", env=ENV)
    assert "s3cret" not in repr(config)


def test_empty_file_and_missing_sections_take_defaults() -> None:
    config = parse_config("", "f.toml", env=ENV)
    assert isinstance(config, Config)
    assert config.push == default_config(ENV).push
    assert config.store.path == "/data/pusher-trio/pusher.db"


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    file = tmp_path / "etc" / "pusher.toml"
    file.parent.mkdir()
    file.write_text('[store]\npath = "state/p.db"\n[control]\nunix_socket = "c.sock"\n')
    config = load_config(file, env=ENV)
    assert config.store.path == str(tmp_path / "etc" / "state" / "p.db")
    assert config.control.unix_socket == str(tmp_path / "etc" / "c.sock")


def test_tcp_can_be_disabled_and_unix_mode_octal_forms() -> None:
    config = parse_config('[control]\ntcp = ""\nunix_mode = "0o640"\n', "f.toml", env=ENV)
    assert config.control.tcp_address is None
    assert config.control.mode == 0o640


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[push]\nwait_timeout = 'soon'\n", "push.wait_timeout", "expected a number"),
        ("[push]\nwait_timeout = true\n", "push.wait_timeout", "expected a number"),
        ("[push]\nwait_timeout = -1\n", "push.wait_timeout", "greater than 0"),
        ("[push]\nmax_wait = 0\n", "push.max_wait", "greater than 0"),
        ("[push]\nmax_wait = 5\n", "push.max_wait", "at least push.wait_timeout"),
        ("[push]\nmax_waiting = 1.5\n", "push.max_waiting", "expected an integer"),
        ("[push]\nca_file = 'nope.pem'\n", "push.ca_file", "no such file"),
        ("[push]\nretries = 3\n", "push.retries", "unknown key"),
        ("[push]\nidle_timeout = -1\n", "push.idle_timeout", "0 or more"),
        ("[push]\nidle_timeout = '10m'\n", "push.idle_timeout", "expected a number"),
        ("[push]\nproxy = 'https://p:3128'\n", "push.proxy", "expected http://host:port"),
        ("[push]\nproxy = 'http://p'\n", "push.proxy", "no port"),
        ("[push]\nproxy = 'http://u:pw@p:1'\n", "push.proxy", "push.proxy_password_file"),
        ("[push]\nproxy = 'http://u@p:1'\n", "push.proxy", "set push.proxy_password_file"),
        ("[push]\nproxy_password_file = 'nope'\n", "push.proxy_password_file", "cannot read"),
        ("[pushes]\nmax_wait = 3\n", "pushes", "unknown section"),
        ("push = 3\n", "push", "expected a table"),
        ("[control]\nunix_mode = '999'\n", "control.unix_mode", "octal"),
        ("[control]\nunix_mode = 432\n", "control.unix_mode", "expected a string"),
        ("[control]\ntcp = 'localhost'\n", "control.tcp", "host:port"),
        ("[control]\ntcp = '127.0.0.1:70000'\n", "control.tcp", "port out of range"),
        ("[control]\ntcp = '::1:5290'\n", "control.tcp", "[addr]:port"),
        ("[control]\nunix_socket = '-'\ntcp = ''\n", "control.unix_socket", "no control"),
        ("[sniffer]\nlisten = 'udp:127.0.0.1:9060'\n", "sniffer.listen", "list of strings"),
        ("[sniffer]\nlisten = [9060]\n", "sniffer.listen", "list of strings"),
        ("[sniffer]\nlisten = ['tcp:127.0.0.1:9060']\n", "sniffer.listen", "only UDP"),
        ("[sniffer]\nlisten = ['udp:127.0.0.1:x']\n", "sniffer.listen", "not a number"),
        ("[sniffer]\nlisten = ['localhost:9060']\n", "sniffer.listen", "IP address"),
        ("[sniffer]\nallow_from = ['10.0.0.0/33']\n", "sniffer.allow_from", "not an IP network"),
        ("[sniffer]\nrequire_2xx = 'yes'\n", "sniffer.require_2xx", "true or false"),
        ("[sniffer]\nhep_auth_key = 1\n", "sniffer.hep_auth_key", "expected a string"),
        ("[store]\npath = 1\n", "store.path", "expected a string"),
        ("[store]\nfile = 'x'\n", "store.file", "unknown key"),
        ("[metrics]\nlisten = '9091'\n", "metrics.listen", "host:port"),
        ("[log]\nlevel = 'loud'\n", "log.level", "expected one of"),
        ("[log]\nformat = 'xml'\n", "log.format", "expected one of"),
    ],
)
def test_bad_values_name_key_and_file(text: str, key: str, words: str, tmp_path: Path) -> None:
    file = tmp_path / "pusher.toml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(file, env=ENV)
    message = str(info.value)
    assert message.startswith(f"{file}: {key}: "), message
    assert words in message
    assert "\n" not in message
    assert info.value.key == key
    assert info.value.file == str(file)


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    file = tmp_path / "broken.toml"
    file.write_text("[push\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_config(file, env=ENV)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.toml: cannot read"):
        load_config(tmp_path / "absent.toml", env=ENV)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:5290", ("::1", 5290)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


def test_parse_udp_listen_accepts_bare_and_prefixed() -> None:
    assert parse_udp_listen("udp:127.0.0.1:9060") == ("127.0.0.1", 9060)
    assert parse_udp_listen("UDP:[::1]:9060") == ("::1", 9060)
    assert parse_udp_listen("127.0.0.1:0") == ("127.0.0.1", 0)


def test_example_file_has_every_key_with_the_default_values() -> None:
    example = Path(__file__).resolve().parents[2] / "conf" / "pusher.toml"
    config = load_config(example, env=ENV)
    defaults = default_config(ENV)
    # every section and key of §4 is written out ...
    import tomllib

    raw = tomllib.loads(example.read_text())
    import attrs

    for section in ("control", "sniffer", "store", "push", "metrics", "hep", "log"):
        names = {f.name for f in attrs.fields(type(getattr(defaults, section)))}
        assert set(raw[section]) == names, section
    # ... and the values are the defaults, paths excepted (DESIGN §4)
    assert config.sniffer == defaults.sniffer
    assert config.push == defaults.push
    assert config.metrics == defaults.metrics
    assert config.hep == defaults.hep
    assert config.log == defaults.log
    assert (config.control.unix_mode, config.control.tcp) == ("0660", "127.0.0.1:5290")
    assert config.control.unix_socket == "/run/pusher-trio/control.sock"
    assert config.store.path == "/var/lib/pusher-trio/pusher.db"


PROXY_SECRET = "pr0xy-pw"


def _proxy_config(tmp_path: Path, mode: int, content: str = PROXY_SECRET + "\n") -> Path:
    secret = tmp_path / "proxy.pw"
    secret.write_text(content)
    secret.chmod(mode)
    file = tmp_path / "pusher.toml"
    file.write_text(
        '[push]\nproxy = "http://pusher@proxy.dc1:3128"\nproxy_password_file = "proxy.pw"\n'
    )
    return file


def test_proxy_password_comes_from_its_file(tmp_path: Path) -> None:
    config = load_config(_proxy_config(tmp_path, 0o600), env=ENV)
    assert config.push.proxy_password_file == str(tmp_path / "proxy.pw")  # relative to the file
    proxy = load_proxy(config.push)
    assert proxy is not None
    assert (proxy.host, proxy.port, proxy.username) == ("proxy.dc1", 3128, "pusher")
    assert proxy.password == PROXY_SECRET
    assert PROXY_SECRET not in repr(config) + repr(proxy)


def test_no_proxy_by_default() -> None:
    assert load_proxy(default_config(ENV).push) is None


@pytest.mark.parametrize(
    ("mode", "content", "words"),
    [(0o604, PROXY_SECRET, "readable by anyone"), (0o600, "\n", "is empty")],
)
def test_bad_proxy_password_file_is_refused(
    tmp_path: Path, mode: int, content: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_proxy_config(tmp_path, mode, content), env=ENV)
    assert info.value.key == "push.proxy_password_file"
    assert words in str(info.value) and PROXY_SECRET not in str(info.value)
