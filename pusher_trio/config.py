"""Static configuration (DESIGN §4): TOML read with tomllib, typed with attrs, checked with cattrs.

Every error is a `ConfigError` whose message names the file and the key
(`pusher.toml: push.wait_timeout: expected a number, got 'soon'`), because an
operator reading one line on stderr must know what to fix.

With no file, the defaults of §4 apply, except the paths: the store and the
UNIX socket go to a state folder under `$XDG_DATA_HOME/pusher-trio` (or
`~/.local/share/pusher-trio`), so `pusher-trio serve` runs for any user.
Relative paths in a file are taken relative to the file's folder.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import attrs
import cattrs

if TYPE_CHECKING:
    from .providers.proxy import Proxy
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationNote,
)

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
LOG_FORMATS: tuple[str, ...] = ("text", "json")
STORE_BACKENDS: tuple[str, ...] = ("sqlite", "redis")

SOCKET_NAME = "control.sock"
STORE_NAME = "pusher.db"


class ConfigError(Exception):
    """A configuration that cannot be used; `str()` is the one line to show."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        self.detail = message
        where = [part for part in (file, key) if part]
        super().__init__(": ".join([*where, message]))


class _BadValue(ValueError):
    """Raised by a field check; the loader adds the file and the section."""


# --- address and value checks (pure) ---------------------------------------------


def parse_host_port(text: str, *, allow_port_zero: bool = True) -> tuple[str, int]:
    """'127.0.0.1:5290' / '[::1]:5290' / 'localhost:5290' -> (host, port)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise _BadValue(f"expected [ipv6]:port, got {text!r}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _BadValue(f"not an IPv6 address in {text!r}") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise _BadValue(f"expected host:port, got {text!r}")
        if ":" in host:
            raise _BadValue(f"write IPv6 addresses as [addr]:port, got {text!r}")
    if not port_text.isdigit():
        raise _BadValue(f"port is not a number in {text!r}")
    port = int(port_text)
    if port > 65535 or (port == 0 and not allow_port_zero):
        raise _BadValue(f"port out of range in {text!r}")
    return host, port


def parse_udp_listen(text: str) -> tuple[str, int]:
    """Sniffer listen address: 'udp:host:port' (the 'udp:' prefix may be omitted)."""
    scheme, sep, rest = text.partition(":")
    if sep and scheme.lower() in ("tcp", "tls", "ws", "wss", "sctp"):
        raise _BadValue(f"only UDP listeners are supported, got {text!r}")
    if sep and scheme.lower() == "udp":
        text = rest
    host, port = parse_host_port(text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise _BadValue(f"listen on an IP address, not a name: {text!r}") from None
    return host, port


def parse_udp_target(text: str) -> tuple[str, int]:
    """HEP capture address (DESIGN §13): 'udp:host:port'; host may be a name ('udp:homer:9060')."""
    scheme, sep, rest = text.partition(":")
    if not sep or scheme.lower() != "udp":
        raise _BadValue(f"expected udp:host:port (HEP goes over UDP), got {text!r}")
    host, port = parse_host_port(rest, allow_port_zero=False)
    return host.strip("[]"), port


def _optional_udp_target(value: str) -> None:
    if value:
        parse_udp_target(value)


def _capture_id(value: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise _BadValue(f"must fit HEP's 32-bit capture id, got {value!r}")


def _check_network(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise _BadValue(f"not an IP network: {text!r}") from None


def _check_mode(text: str) -> int:
    digits = text[2:] if text.startswith("0o") else text
    if not digits or len(digits) > 4 or any(c not in "01234567" for c in digits):
        raise _BadValue(f'expected an octal file mode such as "0660", got {text!r}')
    mode = int(digits, 8)
    if mode > 0o777:
        raise _BadValue(f"file mode {text!r} has bits beyond 0777")
    return mode


# --- the sections ------------------------------------------------------------------


_Check = Callable[[Any], object]


def _field_check(check: _Check) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    """An attrs validator running `check(value)` that names the field when it fails."""

    def validator(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
        try:
            check(value)
        except _BadValue as exc:
            exc.field = attr.name  # type: ignore[attr-defined]
            raise

    return validator


def _optional_host_port(value: str) -> None:
    if value:
        parse_host_port(value)


def _each(check: _Check) -> _Check:
    def run(values: list[Any]) -> None:
        for value in values:
            check(value)

    return run


def _positive(value: float) -> None:
    if value <= 0:
        raise _BadValue(f"must be greater than 0, got {value!r}")


def _not_negative(value: float) -> None:
    if value < 0:
        raise _BadValue(f"must be 0 or more, got {value!r}")


def _check_proxy(value: str) -> None:
    if value:
        from .providers.proxy import ProxyUrlError, parse_proxy_url

        try:
            parse_proxy_url(value, "-" if "@" in value else "")
        except ProxyUrlError as exc:
            raise _BadValue(str(exc)) from None


def _one_of(choices: tuple[str, ...]) -> _Check:
    def check(value: str) -> None:
        if value not in choices:
            raise _BadValue(f"expected one of {', '.join(choices)}, got {value!r}")

    return check


@attrs.frozen
class ControlConfig:
    unix_socket: str = ""  # "" in a file: the state folder's control.sock
    unix_mode: str = attrs.field(default="0660", validator=_field_check(_check_mode))
    tcp: str = attrs.field(default="127.0.0.1:5290", validator=_field_check(_optional_host_port))

    @property
    def mode(self) -> int:
        return _check_mode(self.unix_mode)

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        return parse_host_port(self.tcp) if self.tcp else None


@attrs.frozen
class SnifferConfig:
    listen: list[str] = attrs.field(
        factory=lambda: ["udp:127.0.0.1:9060"], validator=_field_check(_each(parse_udp_listen))
    )
    allow_from: list[str] = attrs.field(
        factory=lambda: ["127.0.0.0/8", "::1/128"], validator=_field_check(_each(_check_network))
    )
    hep_auth_key: str = attrs.field(default="", repr=False)
    require_2xx: bool = True

    @property
    def listen_addresses(self) -> list[tuple[str, int]]:
        return [parse_udp_listen(item) for item in self.listen]


def _check_redis_url(text: str) -> None:
    from .redis.protocol import parse_redis_url

    try:
        parse_redis_url(text)
    except ValueError as exc:
        raise _BadValue(str(exc).removeprefix("bad redis_url: ")) from None


@attrs.frozen
class StoreConfig:
    path: str = ""  # "" in a file: the state folder's pusher.db
    # DESIGN §10: the cluster on Redis
    backend: str = attrs.field(default="sqlite", validator=_field_check(_one_of(STORE_BACKENDS)))
    redis_url: str = attrs.field(
        default="redis://127.0.0.1:6379/0", validator=_field_check(_check_redis_url)
    )
    redis_password_file: str = ""
    key_prefix: str = "pusher:"
    secret_key_file: str = ""


@attrs.frozen
class PushConfig:
    wait_timeout: float = attrs.field(default=20.0, validator=_field_check(_positive))
    max_wait: float = attrs.field(default=60.0, validator=_field_check(_positive))
    max_waiting: int = attrs.field(default=10000, validator=_field_check(_positive))
    ca_file: str = ""
    # DESIGN §9: provider connections unused this long close (GOAWAY); 0 keeps them.
    idle_timeout: float = attrs.field(default=600.0, validator=_field_check(_not_negative))
    # DESIGN §9: "http://[user@]host:port" tunnels every provider connection (CONNECT).
    proxy: str = attrs.field(default="", validator=_field_check(_check_proxy))
    proxy_password_file: str = ""
    # RFC 8599 sip.pnsreg: seconds before a binding expires that a device which asked gets
    # its refresh push; 0 turns binding-refresh pushes off (DESIGN §12)
    binding_refresh_lead: float = attrs.field(default=120.0, validator=_field_check(_not_negative))


@attrs.frozen
class MetricsConfig:
    listen: str = attrs.field(default="", validator=_field_check(_optional_host_port))

    @property
    def address(self) -> tuple[str, int] | None:
        return parse_host_port(self.listen) if self.listen else None


@attrs.frozen
class HepConfig:
    """[hep]: push events to Homer as HEPv3 log packets (DESIGN §13)."""

    capture: str = attrs.field(default="", validator=_field_check(_optional_udp_target))
    capture_id: int = attrs.field(default=2002, validator=_field_check(_capture_id))

    @property
    def address(self) -> tuple[str, int] | None:
        return parse_udp_target(self.capture) if self.capture else None


@attrs.frozen
class LogConfig:
    level: str = attrs.field(default="info", validator=_field_check(_one_of(LOG_LEVELS)))
    format: str = attrs.field(default="text", validator=_field_check(_one_of(LOG_FORMATS)))


@attrs.frozen
class Config:
    control: ControlConfig = attrs.field(factory=ControlConfig)
    sniffer: SnifferConfig = attrs.field(factory=SnifferConfig)
    store: StoreConfig = attrs.field(factory=StoreConfig)
    push: PushConfig = attrs.field(factory=PushConfig)
    metrics: MetricsConfig = attrs.field(factory=MetricsConfig)
    hep: HepConfig = attrs.field(factory=HepConfig)
    log: LogConfig = attrs.field(factory=LogConfig)
    source: str | None = None  # the file it came from; None: embedded defaults

    def push_settings(self) -> dict[str, float]:
        """The [push] values the push service needs, as a plain mapping."""
        return {
            "wait_timeout": self.push.wait_timeout,
            "max_wait": self.push.max_wait,
            "max_waiting": self.push.max_waiting,
            "binding_refresh_lead": self.push.binding_refresh_lead,
        }


_SECTIONS: dict[str, type[Any]] = {
    "control": ControlConfig,
    "sniffer": SnifferConfig,
    "store": StoreConfig,
    "push": PushConfig,
    "metrics": MetricsConfig,
    "hep": HepConfig,
    "log": LogConfig,
}


# --- strict structuring ----------------------------------------------------------------
# cattrs' default hooks convert (str(5) == "5", float(True) == 1.0); a config value of
# the wrong TOML type is an operator mistake we want to name, not to guess around.

_T = TypeVar("_T")


def _type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _strict_str(value: object, _t: object) -> str:
    if not isinstance(value, str):
        raise _BadValue(f"expected a string, got {_type_name(value)} ({value!r})")
    return value


def _strict_bool(value: object, _t: object) -> bool:
    if not isinstance(value, bool):
        raise _BadValue(f"expected true or false, got {_type_name(value)} ({value!r})")
    return value


def _strict_int(value: object, _t: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadValue(f"expected an integer, got {_type_name(value)} ({value!r})")
    return value


def _strict_float(value: object, _t: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadValue(f"expected a number, got {_type_name(value)} ({value!r})")
    return float(value)


def _strict_str_list(value: object, _t: object) -> list[str]:
    if not isinstance(value, list):
        raise _BadValue(f"expected a list of strings, got {_type_name(value)} ({value!r})")
    for item in value:
        if not isinstance(item, str):
            raise _BadValue(f"expected a list of strings, got {_type_name(item)} ({item!r})")
    return list(value)


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(bool, _strict_bool)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook_func(lambda t: t == list[str], _strict_str_list)
    return converter


_CONVERTER = _make_converter()


def _first_error(exc: BaseException, section: str) -> tuple[str, str]:
    """(dotted key, message) of the first leaf error in a cattrs exception group."""
    path = [section]
    while isinstance(exc, ClassValidationError):
        inner = exc.exceptions[0]
        if isinstance(inner, ForbiddenExtraKeysError):
            extra = sorted(inner.extra_fields)[0]
            return f"{'.'.join(path)}.{extra}", "unknown key"
        for note in getattr(inner, "__notes__", []):
            if isinstance(note, AttributeValidationNote):
                path.append(note.name)
            elif isinstance(note, IterableValidationNote):
                path.append(f"[{note.index}]")
        exc = inner
    field = getattr(exc, "field", None)  # set by _field_check when a validator failed
    if field and len(path) == 1:
        path.append(field)
    return ".".join(path), str(exc)


def _structure_section(name: str, raw: object, file: str) -> Any:
    cls = _SECTIONS[name]
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a table, got {_type_name(raw)}", file=file, key=name)
    try:
        return _CONVERTER.structure(raw, cls)
    except _BadValue as exc:  # raised by a validator while building the object
        key = _validator_key(exc, name)
        raise ConfigError(str(exc), file=file, key=key) from None
    except ClassValidationError as exc:
        key, message = _first_error(exc, name)
        raise ConfigError(message, file=file, key=key) from None


def _validator_key(exc: _BadValue, section: str) -> str:
    field = getattr(exc, "field", None)
    return f"{section}.{field}" if field else section


# --- defaults and loading -------------------------------------------------------------


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """$XDG_DATA_HOME/pusher-trio, else ~/.local/share/pusher-trio."""
    env = os.environ if env is None else env
    base = env.get("XDG_DATA_HOME") or ""
    if base and os.path.isabs(base):
        return Path(base) / "pusher-trio"
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".local" / "share" / "pusher-trio"


def _resolve_paths(config: Config, base: Path | None, env: Mapping[str, str] | None) -> Config:
    state = default_state_dir(env)

    def resolve(value: str, default_name: str) -> str:
        if not value:
            return str(state / default_name)
        path = Path(os.path.expanduser(value))
        if not path.is_absolute() and base is not None:
            path = base / path
        return str(path)

    control = config.control
    if control.unix_socket != "-":  # "-": no UNIX socket (TCP only)
        control = attrs.evolve(control, unix_socket=resolve(control.unix_socket, SOCKET_NAME))
    store = attrs.evolve(config.store, path=resolve(config.store.path, STORE_NAME))
    for key in ("redis_password_file", "secret_key_file"):
        if getattr(store, key):
            store = attrs.evolve(store, **{key: resolve(getattr(store, key), "")})
    push = config.push
    if push.ca_file:
        push = attrs.evolve(push, ca_file=resolve(push.ca_file, ""))
    if push.proxy_password_file:
        push = attrs.evolve(push, proxy_password_file=resolve(push.proxy_password_file, ""))
    return attrs.evolve(config, control=control, store=store, push=push)


def _cross_checks(config: Config, file: str) -> None:
    if config.push.max_wait < config.push.wait_timeout:
        raise ConfigError(
            f"must be at least push.wait_timeout ({config.push.wait_timeout:g}),"
            f" got {config.push.max_wait:g}",
            file=file,
            key="push.max_wait",
        )
    if config.control.unix_socket == "-" and not config.control.tcp:
        raise ConfigError(
            "no control endpoint: set control.unix_socket or control.tcp",
            file=file,
            key="control.unix_socket",
        )
    if config.push.ca_file and not os.path.isfile(config.push.ca_file):
        raise ConfigError(f"no such file: {config.push.ca_file}", file=file, key="push.ca_file")
    if config.push.proxy or config.push.proxy_password_file:
        load_proxy(config.push, file)


def load_proxy(push: PushConfig, file: str | None = None) -> Proxy | None:
    """The outbound proxy of `[push]`, or None.

    The password is read from `proxy_password_file` (first line, no trailing newline);
    a file anyone may read is refused, and no error repeats the password.
    """
    from .providers.proxy import ProxyUrlError, parse_proxy_url

    password = ""
    if push.proxy_password_file:
        key = "push.proxy_password_file"
        path = push.proxy_password_file
        try:
            mode = os.stat(path).st_mode
            with open(path, encoding="utf-8") as handle:
                password = handle.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"cannot read {path}: {reason}", file=file, key=key) from None
        if mode & 0o007:
            raise ConfigError(
                f"{path} is readable by anyone (mode {mode & 0o777:04o}): chmod 600 it",
                file=file,
                key=key,
            )
        if not password:
            raise ConfigError(f"{path} is empty", file=file, key=key)
    if not push.proxy:
        if password:
            raise ConfigError("set push.proxy too", file=file, key="push.proxy_password_file")
        return None
    try:
        return parse_proxy_url(push.proxy, password)
    except ProxyUrlError as exc:
        raise ConfigError(str(exc), file=file, key="push.proxy") from None


def default_config(env: Mapping[str, str] | None = None) -> Config:
    """The embedded defaults: §4's values, state and socket in the local data folder."""
    return _resolve_paths(Config(), None, env)


def parse_config(
    text: str, file: str = "<config>", *, env: Mapping[str, str] | None = None
) -> Config:
    """Build a Config from TOML text; `file` names the source in errors."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=file) from None
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in _SECTIONS:
            raise ConfigError("unknown section", file=file, key=name)
        sections[name] = _structure_section(name, value, file)
    base = Path(file).resolve().parent if file and not file.startswith("<") else None
    config = _resolve_paths(Config(**sections, source=file), base, env)
    _cross_checks(config, file)
    return config


def load_config(
    path: str | os.PathLike[str] | None, *, env: Mapping[str, str] | None = None
) -> Config:
    """Read the TOML file at `path`; None gives the embedded defaults."""
    if path is None:
        return default_config(env)
    file = os.fspath(path)
    try:
        with open(file, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=file) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", file=file) from None
    return parse_config(text, file, env=env)
