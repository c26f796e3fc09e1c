"""Command line (DESIGN §6): `pusher-trio COMMAND ...`, Kazoo's maintenance commands and more.

Exit codes: 0 done, 1 the operation failed (no registration in time, daemon
unreachable, nothing to remove), 2 bad usage or bad input (unreadable file,
invalid credentials, bad configuration). A failure prints exactly one line on
stderr. Tokens are shown masked and secrets are never printed.

Commands talk to the running daemon over its control socket (JSON-RPC in
netstrings, §7) with the trio client of `control/client.py`, one `trio.run`
per request. The
commands that change apps or the dynamic configuration open the store
directly when no daemon answers, so an operator can prepare a node before the
first start.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TextIO

from .config import Config, ConfigError, load_config, parse_host_port
from .control.jsonrpc import (
    ERRORS_BY_CODE,
    ControlError,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    ParseError,
)
from .model import (
    DEFAULT_APNS_HOST,
    App,
    Auth,
    Device,
    Outcome,
    PushMessage,
    Rejected,
    mask_token,
)
from .tables import status_text

PROG = "pusher-trio"
CONFIG_ENV = "PUSHER_TRIO_CONFIG"  # used when --config is not given
ADMIN_TIMEOUT = 10.0  # seconds for a control call that does not wait for a phone
PUSH_MARGIN = 5.0  # a push reply may come this long after its own deadline


# --- errors ------------------------------------------------------------------------------


class CliError(Exception):
    """A failure to report on one line, with the exit code to use."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 2)


class DaemonUnavailable(CliError):
    """Nothing listens on the control socket."""


class RemoteError(CliError):
    """The daemon answered a JSON-RPC error."""

    def __init__(self, name: str, message: str, rpc_code: int, data: Any) -> None:
        code = 2 if rpc_code in _BAD_REQUEST else 1
        super().__init__(f"{name}: {message}" if message and message != name else name, code)
        self.name = name
        self.rpc_code = rpc_code
        self.data = data

    @classmethod
    def from_control(cls, error: ControlError) -> RemoteError:
        known = ERRORS_BY_CODE.get(error.code)
        name = known.__name__ if known is not None else f"error {error.code}"
        return cls(name, error.message, error.code, error.data)


# JSON-RPC's own codes: the request was wrong, which is bad usage or input (exit 2).
_BAD_REQUEST = frozenset(
    cls.code for cls in (ParseError, InvalidRequest, MethodNotFound, InvalidParams)
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (DESIGN §6) instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


# --- the daemon -----------------------------------------------------------------------------


def control_target(text: str) -> str:
    """--socket: a UNIX socket path, or host:port / [v6]:port / tcp:host:port for TCP."""
    if text.startswith("tcp:"):
        try:
            parse_host_port(text[4:])
        except ValueError as exc:
            raise UsageError(f"--socket: {exc}") from None
    return text


def call(target: str, method: str, params: Mapping[str, Any], timeout: float) -> Any:
    """One JSON-RPC request over a fresh connection (control/client.py); the result or raises."""
    import trio

    from .control.client import ControlConnectionLost, open_control
    from .control.client import DaemonUnavailable as NoListener

    async def one_call() -> Any:
        async with open_control(target, connect_timeout=min(timeout, ADMIN_TIMEOUT)) as control:
            with trio.fail_after(timeout):
                return await control.call(method, dict(params))

    try:
        return trio.run(one_call)
    except NoListener as exc:
        raise DaemonUnavailable(f"{exc} (is `pusher-trio serve` running?)") from None
    except ControlError as exc:
        raise RemoteError.from_control(exc) from None
    except trio.TooSlowError:
        raise CliError(f"no answer from the daemon at {target} within {timeout:g} s") from None
    except ControlConnectionLost as exc:
        raise CliError(f"the daemon at {target} closed the connection: {exc}") from None
    except OSError as exc:
        raise CliError(f"cannot connect to {target}: {exc.strerror or exc}") from None


# --- output helpers ---------------------------------------------------------------------


def _masked(value: object) -> str:
    text = "" if value is None else str(value)
    return text if "…" in text else mask_token(text)


def _device_id_shown(device_id: str) -> str:
    # A device without +sip.instance is identified by its token (DESIGN §8): mask it.
    if device_id.startswith(("<urn:", "urn:", '"<urn:')) or "…" in device_id:
        return device_id
    return mask_token(device_id) if len(device_id) > 16 else device_id


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    if not rows:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() + "\n")


def _wants_json(session: Session) -> bool:
    """`--json`, or stdout is not a terminal (a pipe, a file) unless `--table` asks for text:
    scripts that pipe `status`/`devices list` get JSON, people at a terminal a table."""
    if getattr(session.args, "json", False):
        return True
    if getattr(session.args, "table", False):
        return False
    isatty = getattr(session.out, "isatty", None)
    return not (isatty is not None and isatty())


def _print_json(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def _when(ts: object) -> str:
    if not isinstance(ts, int | float) or ts <= 0:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _warn(message: str) -> None:
    sys.stderr.write(f"{PROG}: warning: {message}\n")


# --- the session: config, target, store fallback ------------------------------------------


class Session:
    """What every command needs: the configuration, the control target, the store."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        config_path = getattr(args, "config", None) or os.environ.get(CONFIG_ENV) or None
        try:
            self.config: Config = load_config(config_path)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        socket_arg = getattr(args, "socket", None)
        if socket_arg:
            self.target = control_target(socket_arg)
        elif self.config.control.unix_socket != "-":
            self.target = self.config.control.unix_socket
        elif self.config.control.tcp:
            self.target = self.config.control.tcp
        else:
            raise UsageError("the configuration names no control socket (unix_socket or tcp)")

    def call(self, method: str, params: Mapping[str, Any], timeout: float = ADMIN_TIMEOUT) -> Any:
        return call(self.target, method, params, timeout)

    @contextmanager
    def open_store(self) -> Iterator[Any]:
        """The store file itself, for when no daemon runs (apps and config commands)."""
        from .store import SqliteStore

        try:
            store = SqliteStore(self.config.store.path)
        except Exception as exc:  # sqlite3.Error and permission errors alike
            raise CliError(f"cannot open the store {self.config.store.path}: {exc}") from None
        try:
            yield store
            store.flush()
        finally:
            store.close()

    def call_or_store(self, method: str, params: Mapping[str, Any]) -> tuple[Any, bool]:
        """Ask the daemon; when none answers, run the same method of the service on the
        store file (same checks, same results, same errors). (result, offline?)"""
        try:
            return self.call(method, params), False
        except DaemonUnavailable:
            pass
        import trio

        from .service import Service

        if self.config.store.backend == "redis":  # DESIGN §10: the cluster's Redis itself
            from .redis import RedisError
            from .redis.cluster import call_offline

            try:
                result = trio.run(
                    call_offline, self.config.store, method, dict(params), _OfflinePusher()
                )
            except ControlError as exc:
                raise RemoteError.from_control(exc) from None
            except (RedisError, ValueError) as exc:
                raise CliError(f"no daemon answers and Redis cannot be used: {exc}") from None
            return result, True
        with self.open_store() as store:
            service = Service(store, _OfflinePusher())
            try:
                return trio.run(service.call, method, dict(params)), True
            except ControlError as exc:
                raise RemoteError.from_control(exc) from None


class _OfflinePusher:
    """The `model.Pusher` of the service the CLI runs on the store file: never pushes
    (only the apps.* and config.* methods run there)."""

    async def send(
        self, app: App, device: Device, message: PushMessage, *, expires_at: float
    ) -> Outcome:
        return Rejected("the daemon is not running")


# --- apps ----------------------------------------------------------------------------------


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path} is not UTF-8 text") from None


def _payload_template(path: str | None) -> str | None:
    if path is None:
        return None
    text = _read_text(path, "payload template")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"payload template {path} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"payload template {path} must be a JSON object")
    return text


def _credential_error(exc: Exception, path: str) -> UsageError:
    return UsageError(f"{path}: {exc}")


def _build_apple_app(args: argparse.Namespace) -> tuple[App, list[str]]:
    from . import providers

    warnings: list[str] = []
    template = _payload_template(args.payload_template)
    if args.key_file is not None:
        if args.cert_file is not None:
            raise UsageError("give either CERT_FILE or --key-file, not both")
        if not args.key_id or not args.team_id:
            raise UsageError("token auth needs --key-id and --team-id with --key-file")
        text = _read_text(args.key_file, "key file")
        try:
            auth: Auth = providers.load_apple_token_key(text, args.key_id, args.team_id)
        except providers.CredentialError as exc:
            raise _credential_error(exc, args.key_file) from None
        host = args.host or DEFAULT_APNS_HOST
    else:
        if args.cert_file is None:
            raise UsageError("add-apple-app needs CERT_FILE or --key-file")
        if args.key_id or args.team_id:
            raise UsageError("--key-id and --team-id go with --key-file")
        if args.host_positional and args.host:
            raise UsageError("give HOST or --host, not both")
        text = _read_text(args.cert_file, "certificate file")
        try:
            auth, warnings = providers.load_apple_cert(text, time.time())
        except providers.CredentialError as exc:
            raise _credential_error(exc, args.cert_file) from None
        host = args.host_positional or args.host or DEFAULT_APNS_HOST
    _check_host(host)
    app = App(
        app_id=args.app_id,
        type="apple",
        auth=auth,
        host=host,
        push_type=args.push_type,
        payload_template=template,
        **_missed_call(args),
    )
    return app, list(warnings)


def _missed_call(args: argparse.Namespace) -> dict[str, Any]:
    """--missed-call-template F / --no-missed-call (DESIGN §12)."""
    template = _payload_template(args.missed_call_template)
    if template is not None and args.no_missed_call:
        raise UsageError("give --missed-call-template or --no-missed-call, not both")
    return {"missed_call": not args.no_missed_call, "missed_call_template": template}


def _check_host(host: str) -> None:
    name, sep, port = host.rpartition(":")
    if not host or "/" in host or " " in host or (sep and not (name and port.isdigit())):
        raise UsageError(f"HOST must be host or host:port, got {host!r}")


def _build_firebase_app(args: argparse.Namespace) -> App:
    from . import providers

    text = _read_text(args.service_account, "service account file")
    try:
        auth = providers.load_service_account(
            text, project_number=args.project_number, base_url=args.base_url
        )
    except providers.CredentialError as exc:
        raise _credential_error(exc, args.service_account) from None
    return App(
        app_id=args.app_id,
        type="firebase",
        auth=auth,
        push_type=args.push_type,
        payload_template=_payload_template(args.payload_template),
        **_missed_call(args),
    )


def _build_webpush_app(args: argparse.Namespace) -> tuple[App, str | None]:
    """The app and, with --generate-vapid-key, the new key's public half to print."""
    from .model import WebPushAuth
    from .providers import webpush

    subject = args.subject.strip()
    # RFC 8292 §2.1: the push service contacts the operator through a mailto: or https: URI.
    if not subject.startswith(("mailto:", "https:")) or subject in ("mailto:", "https:"):
        raise UsageError(f"--subject must be a mailto: or https: URI, got {subject!r}")
    if args.generate_vapid_key:
        pem = webpush.generate_vapid_key()
        try:
            fd = os.open(args.vapid_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise UsageError(f"{args.vapid_key} exists: not overwriting a key") from None
        except OSError as exc:
            raise UsageError(f"cannot write {args.vapid_key}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(pem)
        generated = True
    else:
        pem = _read_text(args.vapid_key, "VAPID key file")
        generated = False
    try:
        public = webpush.vapid_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{args.vapid_key}: not a P-256 private key (PEM): {exc}") from None
    app = App(
        app_id=args.app_id,
        type="webpush",
        auth=WebPushAuth(pem, subject),
        push_type="voip",
        payload_template=_payload_template(args.payload_template),
    )
    return app, public if generated else None


def cmd_add_webpush_app(session: Session) -> int:
    app, public = _build_webpush_app(session.args)
    code = _add_app(session, app)
    if public is not None:
        # Browsers subscribe with it (applicationServerKey); not a secret.
        session.out.write(f"VAPID public key: {public}\n")
    return code


def _add_app(session: Session, app: App) -> int:
    from .store import unstructure_app

    _, offline = session.call_or_store("apps.add", {"app": unstructure_app(app)})
    where = "in the store (daemon not running)" if offline else "to the daemon"
    session.out.write(f"added {app.type} app {app.app_id} {where}\n")
    return 0


def cmd_add_apple_app(session: Session) -> int:
    app, warnings = _build_apple_app(session.args)
    for warning in warnings:
        _warn(warning)
    return _add_app(session, app)


def cmd_add_firebase_app(session: Session) -> int:
    return _add_app(session, _build_firebase_app(session.args))


def cmd_apps_list(session: Session) -> int:
    result, _ = session.call_or_store("apps.list", {})
    apps = result.get("apps", []) if isinstance(result, dict) else []
    if session.args.json:
        _print_json({"apps": apps}, session.out)
        return 0
    if not apps:
        session.out.write("no apps\n")
        return 0
    rows = [["APP_ID", "TYPE", "AUTH", "PUSH_TYPE", "HOST"]]
    for app in sorted(apps, key=lambda a: str(a.get("app_id"))):
        rows.append(
            [
                str(app.get("app_id", "")),
                str(app.get("type", "")),
                str(app.get("auth", "")),
                str(app.get("push_type", "")),
                str(app.get("host") or app.get("base_url") or ""),
            ]
        )
    _table(rows, session.out)
    return 0


def cmd_apps_remove(session: Session) -> int:
    app_id = session.args.app_id
    _remove(session, "apps.remove", {"app_id": app_id}, "removed", f"no app {app_id}")
    session.out.write(f"removed app {app_id}\n")
    return 0


def _remove(
    session: Session, method: str, params: Mapping[str, Any], field: str, missing: str
) -> None:
    """apps.remove / config.delete, daemon or store file: nothing removed is a failure."""
    result, _ = session.call_or_store(method, params)
    done = result.get(field, True) if isinstance(result, dict) else bool(result)
    if not done:
        raise CliError(missing)


# --- dynamic configuration ------------------------------------------------------------------


def _show_value(value: Any, out: TextIO) -> None:
    if isinstance(value, str):
        out.write(value + "\n")
    else:
        _print_json(value, out)


def cmd_config_get(session: Session) -> int:
    key = session.args.key
    params = {"key": key} if key else {}
    try:
        result, _ = session.call_or_store("config.get", params)
    except RemoteError as exc:
        # The service answers a missing key with InvalidParams whose data names the key; for
        # the CLI that is "the operation failed" (exit 1, DESIGN §6), not bad usage (exit 2).
        if key and exc.rpc_code == InvalidParams.code and _names_key(exc.data, key):
            raise CliError(f"no config key {key}") from None
        raise
    value = result.get("value") if isinstance(result, dict) and "value" in result else result
    _show_value(value, session.out)
    return 0


def _names_key(data: Any, key: str) -> bool:
    return isinstance(data, Mapping) and data.get("key") == key


def _config_set(session: Session, method: str, value: Any) -> int:
    key = session.args.key
    session.call_or_store(method, {"key": key, "value": value})
    session.out.write(f"{key} = {json.dumps(value, ensure_ascii=False)}\n")
    return 0


def cmd_config_set(session: Session) -> int:
    return _config_set(session, "config.set", session.args.value)


def cmd_config_set_json(session: Session) -> int:
    try:
        value = json.loads(session.args.value)
    except ValueError as exc:
        raise UsageError(f"VALUE is not JSON: {exc}") from None
    return _config_set(session, "config.set_json", value)


def cmd_config_delete(session: Session) -> int:
    key = session.args.key
    _remove(session, "config.delete", {"key": key}, "deleted", f"no config key {key}")
    session.out.write(f"deleted {key}\n")
    return 0


# --- devices, push, status ----------------------------------------------------------------


def _mask_device(device: Mapping[str, Any]) -> dict[str, Any]:
    shown = dict(device)
    if "token" in shown:
        shown["token"] = _masked(shown["token"])
    if "device_id" in shown:
        shown["device_id"] = _device_id_shown(str(shown["device_id"]))
    return shown


def cmd_devices_list(session: Session) -> int:
    aor = session.args.aor
    result = session.call("devices.list", {"aor": aor} if aor else {})
    devices = [_mask_device(d) for d in (result or {}).get("devices", [])]
    if _wants_json(session):
        _print_json({"devices": devices}, session.out)
        return 0
    if not devices:
        session.out.write(f"no devices{' for ' + aor if aor else ''}\n")
        return 0
    rows = [["AOR", "TYPE", "APP", "TOKEN", "STATE", "LAST_REGISTERED", "USER_AGENT"]]
    for d in devices:
        state = str(d.get("state", ""))
        if d.get("reason"):
            state += f" ({d['reason']})"
        rows.append(
            [
                str(d.get("aor", "")),
                str(d.get("type", "")) + (" sandbox" if d.get("sandbox") else ""),
                str(d.get("app", "")),
                str(d.get("token", "")),
                state,
                _when(d.get("last_registered")),
                str(d.get("user_agent") or ""),
            ]
        )
    _table(rows, session.out)
    return 0


def cmd_devices_remove(session: Session) -> int:
    params: dict[str, Any] = {"aor": session.args.aor}
    if session.args.token:
        params["token"] = session.args.token
    result = session.call("devices.remove", params)
    removed = result.get("removed", 0) if isinstance(result, dict) else int(result or 0)
    if not removed:
        raise CliError(f"no matching device for {session.args.aor}")
    session.out.write(f"removed {removed} device(s) of {session.args.aor}\n")
    return 0


def _push_summary(pushes: Any) -> str:
    if not isinstance(pushes, list) or not pushes:
        return ""
    parts = []
    for push in pushes:
        if isinstance(push, dict):
            token = push.get("token")
            label = push.get("outcome") or push.get("status") or push.get("result") or "?"
            parts.append(f"{_masked(token) if token else push.get('device_id', '?')}: {label}")
    return "; ".join(parts)


def cmd_push(session: Session) -> int:
    args = session.args
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout must be greater than 0")
    call_id = args.call_id or f"cli-{uuid.uuid4().hex[:12]}"
    params: dict[str, Any] = {"aor": args.aor, "call_id": call_id}
    if args.timeout is not None:
        params["timeout"] = args.timeout
    if args.caller_number:
        params["caller_number"] = args.caller_number
    if args.caller_name:
        params["caller_name"] = args.caller_name
    if args.no_wait:
        params["wait"] = False
    wait = args.timeout if args.timeout is not None else session.config.push.max_wait
    started = time.monotonic()
    try:
        result = session.call("push", params, timeout=wait + PUSH_MARGIN)
    except KeyboardInterrupt:
        try:
            session.call("cancel", {"call_id": call_id}, timeout=2.0)
        except CliError:
            pass
        raise CliError("interrupted: the wait was cancelled") from None
    except RemoteError as exc:
        detail = exc.data if exc.data is not None else None
        suffix = ""
        if isinstance(detail, dict):
            suffix = _push_summary(detail.get("pushes")) or str(detail.get("reason") or "")
        elif isinstance(detail, str):
            suffix = detail
        message = f"{args.aor}: {exc}" + (f" ({suffix})" if suffix else "")
        raise CliError(message.replace("\n", " "), exc.code) from None
    elapsed_ms = (time.monotonic() - started) * 1000
    if args.json:
        _print_json(result, session.out)
        return 0
    pushes = _push_summary(result.get("pushes") if isinstance(result, dict) else None)
    status = result.get("status") if isinstance(result, dict) else None
    if status == "registered":
        waited = result.get("waited_ms", round(elapsed_ms))
        session.out.write(
            f"registered {result.get('aor', args.aor)} after {waited} ms,"
            f" contact {result.get('contact', '?')}\n"
        )
    else:
        session.out.write(f"{status or 'done'} {args.aor}\n")
    if pushes:
        session.out.write(f"pushes: {pushes}\n")
    return 0


def _status_lines(value: Any, indent: int, out: TextIO) -> None:
    pad = "  " * indent
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, Mapping):
                if not item:
                    out.write(f"{pad}{key}: -\n")
                    continue
                out.write(f"{pad}{key}:\n")
                _status_lines(item, indent + 1, out)
            else:
                out.write(f"{pad}{key}: {_scalar(key, item)}\n")


def _scalar(key: object, value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, str) and "token" in str(key).lower():
        return _masked(value)
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def cmd_status(session: Session) -> int:
    result = session.call("status", {})
    if _wants_json(session):
        _print_json(result, session.out)
        return 0
    if isinstance(result, Mapping):
        session.out.write(status_text(result))
        if session.args.verbose:
            session.out.write("\n")
            _status_lines(result, 0, session.out)
    return 0


def cmd_serve(session: Session) -> int:
    import trio

    from .app import run
    from .logs import setup_logging

    config = session.config
    setup_logging(config.log.level, config.log.format)
    try:
        trio.run(lambda: run(config, manage_logging=True, freeze_gc=True))
    except ConfigError as exc:  # a start-up check that needed the file system
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        pass
    return 0


def cmd_demo(session: Session) -> int:
    from .demo import main as demo_main

    code: int = demo_main(
        fcm=not session.args.no_fcm, out=session.out, json_lines=session.args.json
    )
    return code


# --- the parser --------------------------------------------------------------------------------


def _common() -> _Parser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"static configuration (TOML); default ${CONFIG_ENV} or the embedded defaults",
    )
    common.add_argument(
        "--socket",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="control socket of the daemon: a UNIX socket path or host:port",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(
        prog=PROG,
        parents=[common],
        description="Push-notification sidecar for Kamailio: wakes sleeping mobile SIP apps.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[[Session], int], help: str, **kw: Any) -> _Parser:
        p: _Parser = sub.add_parser(name, parents=[common], help=help, description=help, **kw)
        p.set_defaults(func=func)
        return p

    add("serve", cmd_serve, "run the sidecar (sniffer, control socket, push providers)")

    p = add(
        "add-apple-app", cmd_add_apple_app, "add or replace an APNs app (certificate or token auth)"
    )
    p.add_argument("app_id", metavar="APP_ID", help="bundle id the devices report (Token-App)")
    p.add_argument(
        "cert_file", metavar="CERT_FILE", nargs="?", help="PEM: certificate + unencrypted key"
    )
    p.add_argument(
        "host_positional",
        metavar="HOST",
        nargs="?",
        help=f"APNs host[:port] (default {DEFAULT_APNS_HOST})",
    )
    p.add_argument("--host", help="APNs host[:port] (token form)")
    p.add_argument("--key-file", metavar="F.p8", help="token auth: the .p8 signing key")
    p.add_argument("--key-id", metavar="K", help="token auth: key id")
    p.add_argument("--team-id", metavar="T", help="token auth: team id")
    p.add_argument("--push-type", choices=("alert", "voip"), default="alert")
    p.add_argument("--payload-template", metavar="FILE", help="JSON payload template")
    p.add_argument(
        "--missed-call-template",
        metavar="FILE",
        help="JSON payload template of the missed-call alert push",
    )
    p.add_argument(
        "--no-missed-call",
        action="store_true",
        help="send no alert push when a call that pushed ends unanswered",
    )

    p = add("add-firebase-app", cmd_add_firebase_app, "add or replace an FCM (HTTP v1) app")
    p.add_argument("app_id", metavar="APP_ID")
    p.add_argument("service_account", metavar="SERVICE_ACCOUNT_JSON")
    p.add_argument("--project-number", metavar="N")
    p.add_argument("--base-url", metavar="URL", help="FCM endpoint (a local stand-in in tests)")
    p.add_argument("--push-type", choices=("alert", "voip"), default="alert")
    p.add_argument("--payload-template", metavar="FILE", help="JSON payload template")
    p.add_argument(
        "--missed-call-template",
        metavar="FILE",
        help="JSON payload template of the missed-call alert push",
    )
    p.add_argument(
        "--no-missed-call",
        action="store_true",
        help="send no alert push when a call that pushed ends unanswered",
    )

    p = add(
        "add-webpush-app",
        cmd_add_webpush_app,
        "add or replace a Web Push app (a VAPID key, RFC 8292) for browser SIP clients",
    )
    p.add_argument("app_id", metavar="APP_ID")
    p.add_argument("--vapid-key", metavar="F.pem", required=True, help="EC P-256 private key (PEM)")
    p.add_argument(
        "--generate-vapid-key",
        action="store_true",
        help="write a new key to --vapid-key (mode 0600) and print its public key",
    )
    p.add_argument(
        "--subject", required=True, metavar="URI", help="mailto: or https: contact (VAPID sub)"
    )
    p.add_argument("--payload-template", metavar="FILE", help="JSON payload template")

    apps = sub.add_parser("apps", parents=[common], help="list or remove apps")
    apps_sub = apps.add_subparsers(dest="apps_command", metavar="ACTION", required=True)
    p = apps_sub.add_parser("list", parents=[common], help="list apps (no secrets)")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=cmd_apps_list)
    p = apps_sub.add_parser("remove", parents=[common], help="remove an app")
    p.add_argument("app_id", metavar="APP_ID")
    p.set_defaults(func=cmd_apps_remove)

    cfg = sub.add_parser(
        "config", parents=[common], help="dynamic configuration (Kazoo's User-Agents ...)"
    )
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    p = cfg_sub.add_parser("get", parents=[common], help="show a value (everything without KEY)")
    p.add_argument("key", metavar="KEY", nargs="?")
    p.set_defaults(func=cmd_config_get)
    p = cfg_sub.add_parser("set", parents=[common], help="set a string value at a dotted key")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE")
    p.set_defaults(func=cmd_config_set)
    p = cfg_sub.add_parser("set-json", parents=[common], help="set a JSON value at a dotted key")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE")
    p.set_defaults(func=cmd_config_set_json)
    p = cfg_sub.add_parser("delete", parents=[common], help="delete a dotted key")
    p.add_argument("key", metavar="KEY")
    p.set_defaults(func=cmd_config_delete)

    dev = sub.add_parser("devices", parents=[common], help="list or remove device records")
    dev_sub = dev.add_subparsers(dest="devices_command", metavar="ACTION", required=True)
    p = dev_sub.add_parser("list", parents=[common], help="list devices (tokens masked)")
    p.add_argument("aor", metavar="AOR", nargs="?")
    _output_options(p)
    p.set_defaults(func=cmd_devices_list)
    p = dev_sub.add_parser(
        "remove", parents=[common], help="remove an AOR's devices (or one token)"
    )
    p.add_argument("aor", metavar="AOR")
    p.add_argument("token", metavar="TOKEN", nargs="?")
    p.set_defaults(func=cmd_devices_remove)

    p = add("push", cmd_push, "push to an AOR's devices and wait for the REGISTER")
    p.add_argument("aor", metavar="AOR", help="user@domain")
    p.add_argument("--timeout", type=_seconds, metavar="S")
    p.add_argument("--caller-number", metavar="N")
    p.add_argument("--caller-name", metavar="X")
    p.add_argument("--call-id", metavar="ID", help="default: a random one")
    p.add_argument("--no-wait", action="store_true", help="push and return at once")
    p.add_argument("--json", action="store_true", help="JSON output")

    p = add("status", cmd_status, "counters of the running daemon")
    _output_options(p)
    p.add_argument("-v", "--verbose", action="store_true", help="every counter")

    st = sub.add_parser("store", parents=[common], help="the store itself (DESIGN §10)")
    st_sub = st.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    p = st_sub.add_parser(
        "copy",
        parents=[common],
        help="copy devices, apps and config between backends (sqlite:PATH, redis://...)",
    )
    p.add_argument("--from", dest="source", required=True, metavar="FROM")
    p.add_argument("--to", dest="target", required=True, metavar="TO")
    p.set_defaults(func=cmd_store_copy)

    p = add("demo", cmd_demo, "the whole flow on this machine, nothing external")
    p.add_argument("--no-fcm", action="store_true", help="only the iOS (APNs) phone")
    p.add_argument("--json", action="store_true", help="the timeline as JSON lines")
    return parser


def _output_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--json",
        action="store_true",
        help="JSON output (the default when stdout is not a terminal)",
    )
    group.add_argument("--table", action="store_true", help="a table even when piped")


def cmd_store_copy(session: Session) -> int:
    """`store copy`: key prefix, password and secret key files come from [store]."""
    import trio

    from .redis.copy import CopyError, copy_store

    try:
        counts = trio.run(
            copy_store, session.args.source, session.args.target, session.config.store
        )
    except CopyError as exc:
        raise CliError(str(exc)) from None
    out = session.out
    out.write(
        f"copied {counts.devices} device records, {counts.apps} apps,"
        f" {counts.config_keys} config keys\n"
    )
    for line in counts.skipped[:20]:
        out.write(f"skipped {line}\n")
    if len(counts.skipped) > 20:
        out.write(f"skipped {len(counts.skipped) - 20} more\n")
    return 1 if counts.skipped else 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    stdout = out if out is not None else sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
        session = Session(args, stdout) if args.command != "demo" else _demo_session(args, stdout)
        code: int = args.func(session)
        return code
    except CliError as exc:
        _error(str(exc))
        return exc.code
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        _error("interrupted")
        return 1
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug: still one line, never a traceback with secrets in it
        _error(f"internal error: {type(exc).__name__}: {exc}")
        return 1


def _demo_session(args: argparse.Namespace, out: TextIO) -> Session:
    # The demo brings its own sidecar: it reads no configuration and needs no daemon.
    session = Session.__new__(Session)
    session.args = args
    session.out = out
    return session


def _error(message: str) -> None:
    line = " ".join(message.split())  # exactly one line, whatever the message held
    sys.stderr.write(f"{PROG}: error: {line}\n")
    sys.stderr.flush()
