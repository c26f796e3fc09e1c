"""The push service: the JSON-RPC methods of DESIGN §7/§11 over the store, the providers and the waiters.

`Service.call(method, params)` is what the control server dispatches to; it
returns a JSON-ready result or raises a `ControlError` (the server turns it
into the error reply). `Service.on_registered(event)` is the hook the
sniffer calls for every successful registration (the sniffer writes the
store; the service only wakes the waiting pushes).

Shared pushes run in the service's own nursery: `await nursery.start(service.run)`
before serving `push` with `wait` (the default). A push belongs to the
`WaitGroup` of its AOR, not to the request that started it, so the request
that pushed may be cancelled while the others keep waiting on the same push;
when the last wait of the group ends, the push is cancelled.

A `push` with `wait: false` to one device on an open provider connection takes
`start_push` instead (the control server tries it first): no task, the deadline
kept by one sweeper task (`_expire_inline`), the answer built by the same code.

Latency figures for the load tests (`statistics()["latency_ms"]`, also in
`status`): `push_out` is control request decoded -> first provider request
handed to the pusher; `wake` is REGISTER copy handed to `on_registered` ->
`push` result returned to the server (which writes it at once); `register_to_reply`
is the same but from the moment the sniffer received the datagram (the
event's `at`, UNIX time; only counted when plausible, 0-60 s).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote, unquote

import attrs
import cattrs
import trio

import sip

from .control.jsonrpc import (
    ControlError,
    InternalError,
    InvalidParams,
    MethodNotFound,
    NoPushTarget,
    Overloaded,
    PushRejected,
    ShuttingDown,
    Timeout,
)
from .events import PushObserver, notify
from .logs import info_line
from .missed import (
    ALERT_LIFETIME,
    ANSWERED_REASONS,
    UNANSWERED_REASONS,
    Alert,
    MissedCalls,
    alert_for,
)
from .model import (
    App,
    AppleCertAuth,
    AppleTokenAuth,
    AuthFailed,
    Delivered,
    Device,
    FirebaseAuth,
    Outcome,
    Pusher,
    PushMessage,
    Rejected,
    RetryLater,
    TokenInvalid,
    TokenType,
    WebPushAuth,
    mask_token,
)
from .pns import check_contacts, vapid_public_keys
from .refresh import DEFAULT_LEAD as DEFAULT_REFRESH_LEAD
from .refresh import RefreshSchedule, refresh_target
from .store import Store, structure_app
from .waiters import Registration, Waiters, WaitGroup

log = logging.getLogger("pusher_trio.service")

JSON = Any
Params = dict[str, JSON] | list[JSON] | None

DEFAULT_WAIT_TIMEOUT = 20.0
DEFAULT_MAX_WAIT = 60.0
DEFAULT_MAX_WAITING = 10_000
LATENCY_SAMPLES = 4096  # recent samples kept per figure for the percentiles

OUTCOME_NAMES: dict[type[Any], str] = {
    Delivered: "delivered",
    TokenInvalid: "token_invalid",
    RetryLater: "retry_later",
    AuthFailed: "auth_failed",
    Rejected: "rejected",
}

# RFC 8599 §4.1: pn-prid is the token; Linphone/Kazoo legacy: pn-tok.
TOKEN_PARAMS = ("pn-prid", "pn-tok")
_URI_PARAM = re.compile(r";([^;=?>\s,]+)=([^;?>&\s,]*)")

_TOKEN_TYPES: dict[str, TokenType] = {
    "apple": "apple",
    "apns": "apple",
    "ios": "apple",
    "firebase": "firebase",
    "fcm": "firebase",
    "google": "firebase",
    "android": "firebase",
}


StatsSource = Callable[[], Mapping[str, JSON]]
# One callable whose result is merged into `status`, or name -> callable (shown under name).
StatsSources = StatsSource | Mapping[str, StatsSource]


class RegisteredEvent(Protocol):
    """What the sniffer hands to `on_registered` (registrations.Registered)."""

    @property
    def aor(self) -> str: ...
    @property
    def contact(self) -> str: ...
    @property
    def devices(self) -> Sequence[Device]: ...
    @property
    def at(self) -> float: ...


@runtime_checkable
class ForgetsApps(Protocol):
    """What a `model.Pusher` may also do: drop what it holds for an app that is gone
    (`providers.Providers` closes the app's HTTP/2 pool unless another app shares it)."""

    def forget_app(self, app_id: str) -> None: ...


# --- pure helpers ----------------------------------------------------------------------


def mask_contact(contact: str, tokens: Iterable[str] = (), param_names: Iterable[str] = ()) -> str:
    """DESIGN §11: the token inside a contact URI is masked too (pn-prid, pn-tok, mapped)."""
    names = {n.lower() for n in (*TOKEN_PARAMS, *param_names)}

    def replace(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        if name.lower() in names and value:
            return f";{name}={mask_token(value)}"
        return match.group(0)

    text = _URI_PARAM.sub(replace, contact)
    for token in tokens:
        if len(token) > 4:
            for form in {token, quote(token, safe="")}:
                text = text.replace(form, mask_token(token))
    return text


def device_tokens(device: Device) -> list[str]:
    """Every token a device record holds (the push token, and Linphone's alert token)."""
    alert = device.extra.get("alert_token")
    return [device.token, alert] if alert else [device.token]


def secret_values(device: Device) -> list[str]:
    """What a contact of this device must not show: its tokens, and a Web Push
    subscription's keys (pn-param `<p256dh>.<auth>`, the auth secret is one, RFC 8291
    §3.2): masked as one value, only the last 4 characters of the secret remain."""
    keys = f"{device.extra.get('p256dh', '')}.{device.extra.get('auth', '')}"
    tokens = device_tokens(device)
    return [*tokens, keys] if keys != "." else tokens


def normalize_aor(text: str) -> str:
    """'sip:Alice@Example.COM:5060;transport=tcp' -> 'Alice@example.com', as registrations key it.

    Kamailio may pass `$tu` or `$ru` as they are; device records use To-URI user@host
    (host lowercased, user percent-decoded, no port or params).
    """
    aor = text.strip().strip("<>")
    if aor[:5].lower() == "sips:":
        aor = aor[5:]
    elif aor[:4].lower() == "sip:":
        aor = aor[4:]
    aor = aor.split(";", 1)[0].split("?", 1)[0]
    user, at, host = aor.rpartition("@")
    if not host.startswith("[") and host.count(":") == 1:
        host = host.split(":", 1)[0]  # a port (IPv6 hosts are bracketed)
    if "%" in user:
        user = unquote(user)
    return f"{user}{at}{host.lower()}"


def fresh_binding(event: RegisteredEvent) -> dict[str, JSON]:
    """What Kamailio needs to relay to the binding that just registered, and only to it
    (DESIGN §12): usrloc keeps the Call-ID and CSeq of the REGISTER that last wrote each
    binding (`$ulc(p=>callid)`, `$ulc(p=>cseq)`), and its `+sip.instance`; `address` is the
    Contact's host:port, the last resort. No token in any of them.

    Events from elsewhere (another node, older code) may lack the first three: left empty.
    """
    try:
        uri = sip.parse_uri(event.contact)
        host = uri.host
        address = f"{host}:{uri.port or 5060}" if host else ""
    except sip.SipParseError:
        address = ""
    return {
        "call_id": str(getattr(event, "call_id", "") or ""),
        "cseq": int(getattr(event, "cseq", 0) or 0),
        "instance": str(getattr(event, "instance", "") or ""),
        "address": address,
    }


def shown_device_id(device: Device) -> str:
    """A device without +sip.instance is identified by its token (DESIGN §8): mask it."""
    if device.device_id == device.token or (device.token and device.token in device.device_id):
        return mask_token(device.device_id)
    return device.device_id


def outcome_name(outcome: Outcome) -> str:
    return OUTCOME_NAMES.get(type(outcome), "rejected")


def outcome_reason(outcome: Outcome) -> str | None:
    return None if isinstance(outcome, Delivered) else outcome.reason


def auth_kind(app: App) -> str:
    if isinstance(app.auth, AppleCertAuth):
        return "certificate"
    if isinstance(app.auth, AppleTokenAuth):
        return "token"
    if isinstance(app.auth, WebPushAuth):
        return "vapid"
    return "service-account"


def app_view(app: App) -> dict[str, JSON]:
    """What may be shown of an app: never its key, certificate or service account."""
    view: dict[str, JSON] = {
        "app_id": app.app_id,
        "type": app.type,
        "host": app.host if app.type == "apple" else None,
        "push_type": app.push_type,
        "auth": auth_kind(app),
        "payload_template": app.payload_template is not None,
        "missed_call": app.missed_call,
        "missed_call_template": app.missed_call_template is not None,
    }
    if isinstance(app.auth, AppleTokenAuth):
        view.update(key_id=app.auth.key_id, team_id=app.auth.team_id)
    if isinstance(app.auth, FirebaseAuth):
        view.update(
            project_id=app.auth.service_account.get("project_id"),
            project_number=app.auth.project_number,
            base_url=app.auth.base_url,
        )
    if isinstance(app.auth, WebPushAuth):
        from .providers.webpush import app_vapid_public_key

        view.update(subject=app.auth.subject, vapid_public_key=app_vapid_public_key(app))
    return view


def _same_connection(old: App, new: App) -> bool:
    """Whether a replaced app reaches its provider the same way (host and credentials):
    then its open connections still serve it."""
    return (old.type, old.host, old.auth) == (new.type, new.host, new.auth)


def _setting(source: Any, name: str, default: float) -> float:
    if source is None:
        return default
    if isinstance(source, Mapping):
        value = source.get(name, default)
    else:
        value = getattr(source, name, default)
    return float(value)


class _Latency:
    """count / mean / max and percentiles over recent samples, in milliseconds."""

    __slots__ = ("count", "max", "samples", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.samples: deque[float] = deque(maxlen=LATENCY_SAMPLES)

    def add(self, ms: float) -> None:
        self.count += 1
        self.total += ms
        self.max = max(self.max, ms)
        self.samples.append(ms)

    def summary(self) -> dict[str, float]:
        if not self.count:
            return {"count": 0}
        ordered = sorted(self.samples)

        def pct(p: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3)

        return {
            "count": self.count,
            "mean": round(self.total / self.count, 3),
            "p50": pct(0.50),
            "p99": pct(0.99),
            "max": round(self.max, 3),
        }


# --- one push to the devices of an AOR ------------------------------------------------------


class SharedPush:
    """The pushes sent for one AOR (or one Kazoo token) and what came back, device by device."""

    __slots__ = (
        "abandoned",
        "aor",
        "call_id",
        "devices",
        "done",
        "expires_at",
        "message",
        "received",
        "results",
        "sent",
        "sharers",
    )

    def __init__(
        self,
        aor: str,
        devices: Sequence[Device],
        message: PushMessage,
        expires_at: float,
        received: float,
    ) -> None:
        self.aor = aor
        self.call_id = message.call_id
        self.devices = list(devices)
        self.message = message
        self.expires_at = expires_at
        self.received = received  # perf_counter() when the request that pushed was decoded
        self.sent = 0.0  # perf_counter() when the first device's push went to the provider
        self.results: list[dict[str, JSON] | None] = [None] * len(self.devices)
        self.done = trio.Event()
        self.abandoned = False  # given up unfinished (deadline or nobody left waiting)
        self.sharers = 1

    def report(self) -> list[dict[str, JSON]]:
        out: list[dict[str, JSON]] = []
        for device, result in zip(self.devices, self.results, strict=True):
            if result is not None:
                out.append(result)
            else:
                out.append({**_device_report(device), "outcome": "pending", "reason": None})
        return out

    @property
    def delivered(self) -> bool:
        return any(
            r is not None and r["outcome"] in ("delivered", "pushed_by_peer") for r in self.results
        )


def _unfinished(shared: SharedPush) -> Timeout:
    """The answer to a push request whose provider push had not ended by its deadline."""
    return Timeout(
        f"the push to {shared.aor or 'the token'} did not complete before the deadline",
        data={"reason": "the push did not complete", "pushes": shared.report()},
    )


def _device_report(device: Device) -> dict[str, JSON]:
    return {
        "device_id": shown_device_id(device),
        "type": device.type,
        "app": device.app,
        "token": mask_token(device.token),
    }


@attrs.frozen
class PushRequest:
    aor: str
    call_id: str
    message: PushMessage
    timeout: float
    wait: bool
    direct: Device | None  # Kazoo push_req: push to this token, not to the AOR's records


class _InlinePush:
    """A `push` with wait:false that went out without a task (`Service.start_push`)."""

    __slots__ = (
        "app",
        "cancel",
        "cell",
        "deadline",
        "params",
        "reply",
        "service",
        "shared",
        "started",
        "task",
    )

    def __init__(
        self,
        service: Service,
        params: dict[str, JSON],
        shared: SharedPush,
        app: App,
        reply: Callable[[JSON | ControlError], None],
        started: float,
    ) -> None:
        self.service = service
        self.params = params
        self.shared = shared
        self.app = app
        self.reply = reply
        self.started = started
        self.cancel: Callable[[], None] = _nothing
        self.deadline = math.inf  # trio time
        # what the deadline heap holds; emptied when answered
        self.cell: list[_InlinePush | None] = [self]
        self.task = False  # a retry task finishes it

    @property
    def pending(self) -> bool:
        """Not answered yet."""
        return self.cell[0] is not None

    def answered(self, outcome: Outcome | None) -> None:
        self.service._inline_answered(self, outcome)


def _nothing() -> None:
    return None


# --- the service --------------------------------------------------------------------------------


class Service:
    """The JSON-RPC methods; `call()` dispatches, `on_registered()` wakes, `run()` hosts pushes."""

    def __init__(
        self,
        store: Store,
        pusher: Pusher,
        waiters: Waiters | None = None,
        config_push: Mapping[str, float] | Any = None,
        stats_sources: StatsSources | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.pusher = pusher
        self.wait_timeout = _setting(config_push, "wait_timeout", DEFAULT_WAIT_TIMEOUT)
        self.max_wait = _setting(config_push, "max_wait", DEFAULT_MAX_WAIT)
        if waiters is None:
            max_waiting = int(_setting(config_push, "max_waiting", DEFAULT_MAX_WAITING))
            waiters = Waiters(max_waiting, clock=clock)
        self.waiters = waiters
        self._clock = clock
        self._stats_sources: list[StatsSource] = []
        self._named_sources: dict[str, StatsSource] = {}
        if isinstance(stats_sources, Mapping):
            self._named_sources.update(stats_sources)
        elif stats_sources is not None:
            self._stats_sources.append(stats_sources)
        self._nursery: trio.Nursery | None = None
        self.observers: list[PushObserver] = []  # metrics, Homer (events.PushObserver)
        self._started = time.monotonic()
        self._registrations = 0
        self._no_wait_in_flight = 0  # wait=false pushes being sent (counted against max_waiting)
        self._no_wait_scopes: set[trio.CancelScope] = set()  # shutdown() cancels them
        self._overloaded_no_wait = 0
        # wait=false pushes sent without a task (`start_push`): their deadlines, soonest first
        # (an answered push empties its cell: its objects are freed at once, in a warm cache)
        self._inline: list[tuple[float, int, list[_InlinePush | None]]] = []
        self._inline_live = 0
        self._inline_count = itertools.count()
        self._inline_sweeper: trio.CancelScope | None = None
        self._pushed_inline = 0
        self._pushes: dict[str, int] = dict.fromkeys(OUTCOME_NAMES.values(), 0)
        self._pushes_by_provider: dict[str, dict[str, int]] = {}
        self._requests: dict[str, int] = {}
        self._checks: dict[str, int] = {}
        self._missed = MissedCalls()
        self._missed_calls: dict[str, int] = {}
        lead = _setting(config_push, "binding_refresh_lead", DEFAULT_REFRESH_LEAD)
        self._refresh = RefreshSchedule(lead)
        # RFC 8599 +sip.pnsreg: seconds before expiry of the refresh push; None: off
        self.pnsreg: int | None = round(lead) if lead > 0 else None
        self._latency = {
            "push_out": _Latency(),
            "wake": _Latency(),
            "register_to_reply": _Latency(),
        }
        self._methods: dict[str, Callable[[dict[str, JSON], float], Awaitable[JSON]]] = {
            "push": self.rpc_push,
            "cancel": self.rpc_cancel,
            "check": self.rpc_check,
            "call_ended": self.rpc_call_ended,
            "status": self.rpc_status,
            "devices.list": self.rpc_devices_list,
            "devices.remove": self.rpc_devices_remove,
            "apps.add": self.rpc_apps_add,
            "apps.list": self.rpc_apps_list,
            "apps.remove": self.rpc_apps_remove,
            "config.get": self.rpc_config_get,
            "config.set": self.rpc_config_set,
            "config.set_json": self.rpc_config_set_json,
            "config.delete": self.rpc_config_delete,
        }

    # --- lifecycle ---------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the shared pushes until cancelled; then answer every waiting push ShuttingDown."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._expire_inline)
                if self.pnsreg is not None:
                    nursery.start_soon(self._refresh_loop)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self.shutdown()

    def shutdown(self) -> int:
        """Answer every open push ShuttingDown and refuse new ones (idempotent).

        Parked waits end through the waiters; pushes that do not wait (wait=false, Kazoo
        push_req) are cancelled where they stand at the provider and answer the same.
        """
        for scope in self._no_wait_scopes:
            scope.cancel()
        inline = [p for _, _, (p,) in self._inline if p is not None and not p.task]
        self._inline.clear()
        for push in inline:
            self._inline_failed(push, ShuttingDown("the sidecar is stopping"))
        return self.waiters.shutdown() + len(self._no_wait_scopes) + len(inline)

    @property
    def running(self) -> bool:
        """True while `run` hosts the shared pushes (the control server starts it if not)."""
        return self._nursery is not None

    def add_stats_source(self, name: str, source: StatsSource) -> None:
        """`status` shows `source()` under `name` (the control server, the providers...)."""
        self._named_sources[name] = source

    # --- dispatch ----------------------------------------------------------------------
    @property
    def methods(self) -> frozenset[str]:
        return frozenset(self._methods)

    async def call(
        self, method: str, params: Params = None, *, received: float | None = None
    ) -> JSON:
        """Run one method; `received` is the perf_counter() when the request was decoded."""
        handler = self._methods.get(method)
        if handler is None:
            raise MethodNotFound(f"unknown method {method!r}")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise InvalidParams("params must be an object")
        return await handler(params, received if received is not None else time.perf_counter())

    # --- the sniffer's hook ------------------------------------------------------------------
    def on_registered(self, event: RegisteredEvent) -> None:
        """A registration succeeded (its 2xx was seen): wake the pushes waiting for that AOR."""
        self._registrations += 1
        if self.pnsreg is not None:
            self._arm_refresh(event)
        if self.waiters.group(event.aor) is None:
            return  # the common case at thousands of REGISTERs per second: nothing to mask
        contact = mask_contact(
            event.contact,
            [value for d in event.devices for value in secret_values(d)],
            self._token_param_names(),
        )
        self.waiters.notify_registered(event.aor, contact, event.at, fresh_binding(event))

    def _token_param_names(self) -> list[str]:
        """The URI params the Kazoo User-Agents mapping names as Token-ID."""
        try:
            mapping = self.store.get_config("User-Agents")
        except (KeyError, ValueError):
            return []
        names: list[str] = []
        if isinstance(mapping, dict):
            for entry in mapping.values():
                props = entry.get("properties") if isinstance(entry, dict) else None
                if isinstance(props, dict) and isinstance(props.get("Token-ID"), str):
                    names.append(props["Token-ID"])
        return names

    # --- push ---------------------------------------------------------------------------------
    def _count_request(self, status: str) -> None:
        self._requests[status] = self._requests.get(status, 0) + 1

    async def rpc_push(self, params: dict[str, JSON], received: float) -> JSON:
        try:
            result = await self._push(params, received)
        except ControlError as exc:
            self._count_request(type(exc).__name__)
            self._ended(params, type(exc).__name__, received)
            raise
        self._count_request(str(result["status"]))
        self._ended(params, str(result["status"]), received)
        return result

    def _ended(self, params: dict[str, JSON], result: str, received: float) -> None:
        if self.observers:
            call_id = params.get("call_id") or params.get("Call-ID") or ""
            aor = params.get("aor") or ""
            notify(
                self.observers,
                "request_ended",
                call_id if isinstance(call_id, str) else str(call_id),
                normalize_aor(aor) if isinstance(aor, str) else "",
                result,
                time.perf_counter() - received,
            )

    def _parse_push(self, params: dict[str, JSON]) -> PushRequest:
        def text(name: str, default: str = "") -> str:
            value = params.get(name, default)
            if value is None:
                return default
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise InvalidParams(f"{name} must be a string")
            return str(value)

        if not isinstance(params.get("aor", ""), str):
            raise InvalidParams("aor must be a string (user@domain)")
        aor = normalize_aor(text("aor"))
        timeout = params.get("timeout")
        if timeout is None:
            seconds = self.wait_timeout
        elif isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise InvalidParams("timeout must be a number of seconds")
        elif math.isnan(timeout) or timeout <= 0:
            # NaN compares false with everything: refuse it here, or it becomes trio's deadline.
            # Infinity is only "more than max_wait" and is clamped below, like any large value.
            raise InvalidParams("timeout must be a number of seconds greater than 0")
        else:
            seconds = float(timeout)
        seconds = min(seconds, self.max_wait)
        wait = params.get("wait", True)
        if not isinstance(wait, bool):
            raise InvalidParams("wait must be true or false")

        call_id = text("call_id") or text("Call-ID")
        alert_params = params.get("Alert-Params")
        if alert_params is not None:
            if not isinstance(alert_params, list) or not all(
                isinstance(p, str | int | float) for p in alert_params
            ):
                raise InvalidParams("Alert-Params must be a list of strings")
            alert_params = tuple(str(p) for p in alert_params)
        payload = params.get("Payload")
        if payload is not None and not isinstance(payload, dict):
            raise InvalidParams("Payload must be an object")
        message = PushMessage(
            call_id=call_id,
            caller_number=text("caller_number"),
            caller_name=text("caller_name"),
            alert_key=text("Alert-Key") or None,
            alert_params=alert_params,
            sound=text("Sound") or None,
            payload=payload,
        )

        direct = None
        if params.get("Token-ID") is not None:
            direct = self._kazoo_device(
                aor, text("Token-ID"), text("Token-Type"), text("Token-App")
            )
            if not aor:
                wait = False  # DESIGN §11: push_req without aor answers "pushed"
        elif not aor:
            raise InvalidParams("aor (user@domain) is required")
        return PushRequest(aor, call_id, message, seconds, wait, direct)

    def _kazoo_device(self, aor: str, token: str, token_type: str, token_app: str) -> Device:
        if not token:
            raise InvalidParams("Token-ID is empty")
        kind = _TOKEN_TYPES.get(token_type.lower())
        if kind is None:
            raise InvalidParams(f"Token-Type must be apple or firebase, got {token_type!r}")
        if not token_app:
            raise InvalidParams("Token-App is required with Token-ID")
        sandbox = token_app.endswith(".dev")
        if token_app.endswith((".dev", ".prod")):
            token_app = token_app.rsplit(".", 1)[0]
        for known in self.store.devices(aor) if aor else ():
            if known.token == token:
                return attrs.evolve(known, app=token_app, type=kind, sandbox=sandbox)
        return Device(
            aor=aor,
            device_id=token,
            type=kind,
            app=token_app,
            token=token,
            sandbox=sandbox,
            extra={"source": "push_req"},
        )

    async def _read_through(self, aor: str) -> None:
        """A store that caches (Redis, DESIGN §10) reads the AOR's records in first."""
        fetch = getattr(self.store, "fetch_devices", None)
        if fetch is not None:
            await fetch(aor)

    def _targets(self, aor: str) -> list[Device]:
        return [d for d in self.store.devices(aor) if d.state == "valid"]

    def _no_target(self, aor: str) -> NoPushTarget:
        known = self.store.devices(aor)
        return NoPushTarget(
            f"no usable device record for {aor}",
            data={
                "aor": aor,
                "devices": len(known),
                "invalid": len(known) - len(self._targets(aor)),
            },
        )

    async def _push(self, params: dict[str, JSON], received: float) -> dict[str, JSON]:
        request = self._parse_push(params)
        deadline = trio.current_time() + request.timeout
        expires_at = self._clock() + request.timeout
        if not request.wait:
            return await self._push_without_waiting(request, deadline, expires_at, received)

        # Overloaded / ShuttingDown here: nothing was sent.
        w = self.waiters.enter(request.aor, request.call_id)
        accepted = trio.current_time()
        try:
            group = w.group
            shared: SharedPush | None = group.shared
            if shared is None or shared.abandoned:
                # No push for this AOR yet, or the last one was given up unfinished
                # at its deadline while later requests kept waiting: push (again).
                if not request.direct:
                    await self._read_through(request.aor)
                devices = [request.direct] if request.direct else self._targets(request.aor)
                if not devices:
                    raise self._no_target(request.aor)
                if self._nursery is None:
                    raise ShuttingDown("the push service is not running")
                shared = SharedPush(request.aor, devices, request.message, expires_at, received)
                group.shared = shared
                group.scope = trio.CancelScope(deadline=deadline)
                self._nursery.start_soon(self._push_for_group, group, shared)
            else:
                shared.sharers += 1
                if group.scope is not None and not shared.done.is_set():
                    # The push in flight keeps trying for the longest-waiting request.
                    group.scope.deadline = max(group.scope.deadline, deadline)
            # this call pushed: if it ends unanswered, its devices get a missed-call alert
            self._missed.remember(
                request.call_id, request.aor, request.message, shared.devices, self._clock()
            )
            with trio.move_on_at(deadline):
                registration = await self.waiters.wait(w)
                return self._registered(request, registration, shared, accepted)
            # Kamailio answers the caller 480: the call ended unanswered (DESIGN §12). A
            # wake-up that never reached the phone gets no alert piled onto the same provider.
            if shared.done.is_set() and shared.delivered:
                self._call_ended(request.call_id, "timeout")
            else:
                self._missed.pop(request.call_id, self._clock())
            if shared.done.is_set():
                raise Timeout(
                    f"no registration of {request.aor} before the deadline",
                    data={
                        "reason": "no registration before the deadline",
                        "pushes": shared.report(),
                    },
                )
            raise _unfinished(shared)
        finally:
            self.waiters.leave(w)

    def _registered(
        self, request: PushRequest, registration: Registration, shared: SharedPush, accepted: float
    ) -> dict[str, JSON]:
        now = time.perf_counter()
        if registration.seen:
            self._latency["wake"].add((now - registration.seen) * 1000)
        if self.observers:
            woke = registration.seen - shared.sent if registration.seen and shared.sent else None
            notify(
                self.observers,
                "registered",
                request.call_id,
                request.aor,
                registration.contact,
                woke,
            )
        since_datagram = self._clock() - registration.at
        if 0 <= since_datagram < 60:
            self._latency["register_to_reply"].add(since_datagram * 1000)
        return {
            "status": "registered",
            "aor": request.aor,
            "contact": registration.contact,
            "waited_ms": round((trio.current_time() - accepted) * 1000),
            "pushes": shared.report(),
            "binding": dict(registration.binding) if registration.binding else None,
        }

    async def _push_without_waiting(
        self, request: PushRequest, deadline: float, expires_at: float, received: float
    ) -> dict[str, JSON]:
        if self.waiters.closed:
            raise ShuttingDown("the sidecar is stopping")
        # A push that does not wait still holds provider streams until it completes: it
        # counts against the same cap as the waiting ones, so no request kind is unbounded.
        if self.waiters.waiting + self._no_wait_in_flight >= self.waiters.max_waiting:
            self._overloaded_no_wait += 1
            raise Overloaded(
                f"{self.waiters.waiting + self._no_wait_in_flight} push requests in progress"
                f" (max_waiting {self.waiters.max_waiting})"
            )
        group = self.waiters.group(request.aor) if request.aor else None
        shared: SharedPush | None = group.shared if group is not None else None
        joined = shared is not None
        if shared is not None:
            shared.sharers += 1  # a push is in flight for this AOR: report it, send nothing
        else:
            if not request.direct:
                await self._read_through(request.aor)
            devices = [request.direct] if request.direct else self._targets(request.aor)
            if not devices:
                raise self._no_target(request.aor)
            shared = SharedPush(request.aor, devices, request.message, expires_at, received)
        # One scope ends it at its deadline or at shutdown() (the most common request
        # pays for one cancel scope, not two).
        scope = trio.CancelScope(deadline=deadline)
        self._no_wait_in_flight += 1
        self._no_wait_scopes.add(scope)
        try:
            with scope:
                if joined:
                    await shared.done.wait()
                else:
                    await self._send_all(shared)
        finally:
            self._no_wait_scopes.discard(scope)
            self._no_wait_in_flight -= 1
        if not shared.done.is_set():
            if self.waiters.closed:  # shutdown() cancelled it where it stood
                raise ShuttingDown("the sidecar is stopping")
            raise _unfinished(shared)
        if not shared.delivered:
            raise self._rejected(shared)
        return {"status": "pushed", "pushes": shared.report()}

    def _rejected(self, shared: SharedPush) -> PushRejected:
        pushes = shared.report()
        reasons = [str(p["reason"]) for p in pushes if p.get("reason")]
        return PushRejected(
            "every provider refused the push: " + "; ".join(dict.fromkeys(reasons)),
            data={"aor": shared.aor, "reasons": reasons, "pushes": pushes},
        )

    async def _push_for_group(self, group: WaitGroup, shared: SharedPush) -> None:
        assert group.scope is not None
        with group.scope:
            if await self._claimed_elsewhere(shared, group.scope.deadline):
                return
            await self._send_all(shared)
        if not shared.done.is_set():
            shared.abandoned = True
        elif not shared.delivered:
            error = self._rejected(shared)
            self.waiters.fail(group.aor, error)
            rejected = getattr(self.store, "push_rejected", None)  # DESIGN §10: tell the
            if rejected is not None:  # calls on other nodes that share this push
                rejected(group.aor, error.data)

    async def _claimed_elsewhere(self, shared: SharedPush, deadline: float) -> bool:
        """DESIGN §10, one push per sleeping AOR across the cluster: when another node
        already pushes to this AOR, report that and only wait for the registration."""
        claim = getattr(self.store, "claim_push", None)
        if claim is None or not shared.aor:
            return False
        if await claim(shared.aor, deadline - trio.current_time()):
            return False
        shared.results = [
            {**_device_report(d), "outcome": "pushed_by_peer", "reason": None}
            for d in shared.devices
        ]
        shared.done.set()
        return True

    async def _send_all(self, shared: SharedPush) -> None:
        if self.observers:
            notify(self.observers, "push_started", shared.call_id, shared.aor, shared.devices)
        if len(shared.devices) == 1:
            await self._send_one(shared, 0)
        else:
            async with trio.open_nursery() as nursery:
                for index in range(len(shared.devices)):
                    nursery.start_soon(self._send_one, shared, index)
        shared.done.set()

    def app_for(self, device: Device) -> App | None:
        """DESIGN §11: the app whose id is the device's app; for FCM also by project id/number."""
        apps = self.store.apps()
        app = apps.get(device.app)
        if app is not None or device.type not in ("firebase", "webpush"):
            return app
        if device.type == "webpush":
            # A REGISTER does not name the VAPID key its subscription was made with: the
            # one webpush app serves it (several would be ambiguous: none is picked).
            web = [a for a in apps.values() if a.type == "webpush"]
            return web[0] if len(web) == 1 else None
        wanted = {device.app, device.extra.get("project", "")} - {""}
        for candidate in apps.values():
            auth = candidate.auth
            if isinstance(auth, FirebaseAuth) and (
                auth.service_account.get("project_id") in wanted or auth.project_number in wanted
            ):
                return candidate
        return None

    async def _send_one(self, shared: SharedPush, index: int) -> None:
        device = shared.devices[index]
        started = time.perf_counter()
        app = self.app_for(device)
        outcome: Outcome
        if app is None:
            outcome = Rejected(f"no app configured for {device.app or device.type}")
        elif app.type != device.type:
            outcome = Rejected(f"app {app.app_id} is a {app.type} app, the device is {device.type}")
        else:
            if index == 0:
                shared.sent = started
                self._latency["push_out"].add((started - shared.received) * 1000)
            outcome = await self._pusher_send(app, device, shared)
        self._answered(shared, index, outcome, started)

    async def _pusher_send(
        self, app: App, device: Device, shared: SharedPush, first: RetryLater | None = None
    ) -> Outcome:
        try:
            if first is None:
                return await self.pusher.send(
                    app, device, shared.message, expires_at=shared.expires_at
                )
            return await self.pusher.send(  # type: ignore[call-arg]
                app, device, shared.message, expires_at=shared.expires_at, first=first
            )
        except Exception as exc:  # a provider bug fails this push, not the service
            log.error(
                "push failed with %s",
                type(exc).__name__,
                extra={"fields": {"aor": device.aor, "token": mask_token(device.token)}},
            )
            return Rejected(f"internal error: {type(exc).__name__}")

    def _answered(self, shared: SharedPush, index: int, outcome: Outcome, started: float) -> None:
        """Account for, report and log one device's push outcome."""
        device = shared.devices[index]
        answered = time.perf_counter()
        latency_ms = (answered - started) * 1000
        name = outcome_name(outcome)
        self._pushes[name] = self._pushes.get(name, 0) + 1
        by_provider = self._pushes_by_provider.setdefault(device.type, {})
        by_provider[name] = by_provider.get(name, 0) + 1
        shared.results[index] = {
            **_device_report(device),
            "outcome": name,
            "reason": outcome_reason(outcome),
            "latency_ms": round(latency_ms, 3),
        }
        if isinstance(outcome, TokenInvalid) and device.aor:
            self._invalidate(device, outcome.reason)
        if self.observers:
            notify(
                self.observers,
                "push_answered",
                shared.call_id,
                device,
                name,
                outcome_reason(outcome),
                answered - shared.received,
            )
        token = mask_token(device.token)
        info_line(  # DESIGN §13: one line per push outcome
            log,
            "push call_id=%s aor=%s token=%s outcome=%s latency_ms=%.1f",
            (shared.call_id, device.aor, token, name, latency_ms),
            {
                "call_id": shared.call_id,
                "aor": device.aor,
                "token": token,
                "app": device.app,
                "outcome": name,
                "reason": outcome_reason(outcome),
                "latency_ms": round(latency_ms, 1),
            },
        )

    # --- push with wait:false, without a task -------------------------------------------------
    def start_push(
        self,
        params: dict[str, JSON],
        received: float,
        reply: Callable[[JSON | ControlError], None],
    ) -> bool:
        """`push` for the common `wait: false` request to one device, without a task.

        True: the push went out on an open provider connection and `reply(result or
        ControlError)` will be called once, from whichever task finishes it (the
        provider connection's reader, the deadline sweeper, shutdown, or a retry task).
        False: nothing happened; run `call("push", params)` as usual. Only what is
        answered exactly as `call` would answer it takes this path: explicitly
        `wait: false`, valid params, one usable device, no push in flight for the AOR,
        a store without read-through, a provider connection with a free stream.
        Retries, replays and token refreshes go on in a task (`send(first=...)`).
        """
        start_send = getattr(self.pusher, "start_send", None)
        if (
            start_send is None
            or params.get("wait") is not False
            or self._nursery is None
            or self.waiters.closed
            or self.waiters.waiting + self._no_wait_in_flight >= self.waiters.max_waiting
        ):
            return False
        try:
            request = self._parse_push(params)
        except ControlError:
            return False
        if request.aor and self.waiters.group(request.aor) is not None:
            return False
        if request.direct is not None:
            device = request.direct
        else:
            if getattr(self.store, "fetch_devices", None) is not None:
                return False
            devices = self._targets(request.aor)
            if len(devices) != 1:
                return False
            device = devices[0]
        app = self.app_for(device)
        if app is None or app.type != device.type:
            return False
        started = time.perf_counter()
        expires_at = self._clock() + request.timeout
        shared = SharedPush(request.aor, [device], request.message, expires_at, received)
        push = _InlinePush(self, params, shared, app, reply, started)
        cancel = start_send(
            app, device, request.message, expires_at=expires_at, answered=push.answered
        )
        if cancel is None:
            return False
        push.cancel = cancel
        self._pushed_inline += 1
        self._no_wait_in_flight += 1
        if self.observers:
            notify(self.observers, "push_started", shared.call_id, shared.aor, shared.devices)
        shared.sent = started
        self._latency["push_out"].add((started - received) * 1000)
        deadline = trio.current_time() + request.timeout
        heap = self._inline
        if len(heap) > 1024 and len(heap) > 4 * self._inline_live:
            # Answered pushes leave their entries until their deadline: drop them now
            # and then (amortised: at most one rebuild per 3/4 of the entries added).
            heap[:] = [entry for entry in heap if entry[2][0] is not None]
            heapq.heapify(heap)
        push.deadline = deadline
        heapq.heappush(heap, (deadline, next(self._inline_count), push.cell))
        self._inline_live += 1
        sweeper = self._inline_sweeper
        if sweeper is not None and deadline < sweeper.deadline:
            sweeper.deadline = deadline
        return True

    async def _expire_inline(self) -> None:
        """Answer Timeout for the task-less pushes whose deadline passed (reset their stream)."""
        heap = self._inline
        while True:
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as sweeper:
                self._inline_sweeper = sweeper
                await trio.sleep_forever()
            self._inline_sweeper = None
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                push = heapq.heappop(heap)[2][0]
                if push is None:
                    continue
                self._inline_failed(push, _unfinished(push.shared))

    def _inline_failed(self, push: _InlinePush, error: ControlError) -> None:
        if push.task:
            return  # its task answers (shutdown() cancels it)
        push.cancel()
        self._inline_ended(push, type(error).__name__, error)

    def _inline_ended(self, push: _InlinePush, status: str, answer: JSON | ControlError) -> None:
        push.cell[0] = None
        self._no_wait_in_flight -= 1
        self._inline_live -= 1
        self._count_request(status)
        self._ended(push.params, status, push.shared.received)
        push.reply(answer)

    def _inline_answered(self, push: _InlinePush, outcome: Outcome | None) -> None:
        """The provider answered a task-less push (from the connection's reader task)."""
        if not push.pending:
            return
        if outcome is None or isinstance(outcome, RetryLater):
            if self._nursery is None:
                self._inline_failed(push, ShuttingDown("the sidecar is stopping"))
                return
            push.task = True
            self._nursery.start_soon(self._finish_inline, push, outcome)
            return
        self._inline_outcome(push, outcome)

    def _inline_outcome(self, push: _InlinePush, outcome: Outcome) -> None:
        shared = push.shared
        try:
            self._answered(shared, 0, outcome, push.started)
        except Exception:  # e.g. the store refused the invalidation: answer all the same
            log.exception("push: accounting for the answer failed")
        shared.done.set()
        if shared.delivered:
            self._inline_ended(push, "pushed", {"status": "pushed", "pushes": shared.report()})
        else:
            self._inline_ended(push, "PushRejected", self._rejected(shared))

    async def _finish_inline(self, push: _InlinePush, first: RetryLater | None) -> None:
        """A retry, replay or token refresh: the push goes on as `send` does, in this task."""
        shared = push.shared
        scope = trio.CancelScope(deadline=push.deadline)
        self._no_wait_scopes.add(scope)
        outcome: Outcome | None = None
        try:
            with scope:
                outcome = await self._pusher_send(push.app, shared.devices[0], shared, first)
        except BaseException:  # the service itself is cancelled: still answer
            self._inline_ended(push, "ShuttingDown", ShuttingDown("the sidecar is stopping"))
            raise
        finally:
            self._no_wait_scopes.discard(scope)
        if outcome is not None:
            self._inline_outcome(push, outcome)
            return
        if self.waiters.closed:
            self._inline_ended(push, "ShuttingDown", ShuttingDown("the sidecar is stopping"))
        else:
            self._inline_ended(push, "Timeout", _unfinished(shared))

    def _invalidate(self, device: Device, reason: str) -> None:
        now = self._clock()
        for known in self.store.devices(device.aor):
            if known.token == device.token:
                self.store.invalidate(device.aor, known.device_id, reason, now)

    # --- check (RFC 8599 at REGISTER time, DESIGN §12) ----------------------------------------
    async def rpc_check(self, params: dict[str, JSON], received: float) -> JSON:
        """May this REGISTER's push params be served (else 555), and its Feature-Caps."""
        contact = params.get("contact")
        if not isinstance(contact, str) or not contact:
            raise InvalidParams("contact (the REGISTER's Contact header value) is required")
        expires = params.get("expires")
        if expires in ("", None):
            expires = None
        elif isinstance(expires, str) and expires.strip().isdigit():
            expires = int(expires)
        elif isinstance(expires, bool) or not isinstance(expires, int):
            raise InvalidParams("expires must be a number of seconds")
        apps = self.store.apps()
        result = check_contacts(
            contact,
            apps=apps,
            app_for=self.app_for,
            expires=expires,
            vapid_keys=vapid_public_keys(apps.values()),
            pnsreg=self.pnsreg,
            now=self._clock(),
        )
        self._checks[result.status] = self._checks.get(result.status, 0) + 1
        return result.to_json()

    # --- binding-refresh pushes (RFC 8599 sip.pnsreg, DESIGN §12) ------------------------------
    def _arm_refresh(self, event: RegisteredEvent) -> None:
        expires = int(getattr(event, "expires", 0) or 0)
        asked = bool(getattr(event, "pnsreg", False)) and expires > 0
        for device in event.devices:
            self._refresh.registered((event.aor, device.device_id), event.at, expires, asked)

    async def _refresh_loop(self) -> None:
        """Send the refresh pushes as they fall due (checked every second at most)."""
        assert self._nursery is not None
        while True:
            now = self._clock()
            for aor, device_id in list(self._refresh.due(now)):
                self._nursery.start_soon(self._send_refresh, aor, device_id)
            next_due = self._refresh.next_due
            delay = 1.0 if next_due is None else min(max(next_due - now, 0.05), 1.0)
            await trio.sleep(delay)

    async def _send_refresh(self, aor: str, device_id: str) -> None:
        device = next((d for d in self.store.devices(aor) if d.device_id == device_id), None)
        if device is None or not device.bound or device.state != "valid":
            self._refresh.counters["skipped_gone"] = (
                self._refresh.counters.get("skipped_gone", 0) + 1
            )
            return
        target = refresh_target(self.app_for(device), device)
        if isinstance(target, str):
            name = f"skipped_{target}"
            self._refresh.counters[name] = self._refresh.counters.get(name, 0) + 1
            return
        app, device = target
        with trio.move_on_after(self.max_wait):
            try:
                outcome: Outcome = await self.pusher.send(
                    app,
                    device,
                    PushMessage(kind="refresh"),
                    expires_at=self._clock() + self._refresh.lead,
                )
            except Exception as exc:  # a provider bug fails this push, not the service
                outcome = Rejected(f"internal error: {type(exc).__name__}")
            name = f"sent_{outcome_name(outcome)}"
            self._refresh.counters[name] = self._refresh.counters.get(name, 0) + 1
            log.info(
                "binding-refresh push aor=%s token=%s outcome=%s",
                aor,
                mask_token(device.token),
                outcome_name(outcome),
                extra={"fields": {"aor": aor, "token": mask_token(device.token)}},
            )

    # --- missed calls (DESIGN §12) ---------------------------------------------------------------
    def _count_missed(self, what: str, n: int = 1) -> None:
        self._missed_calls[what] = self._missed_calls.get(what, 0) + n

    async def rpc_call_ended(self, params: dict[str, JSON], received: float) -> JSON:
        """A call ended before it was answered here (Kamailio's notification): end its wait,
        and unless it was answered elsewhere, send its pushed devices a missed-call alert."""
        call_id = params.get("call_id")
        reason = params.get("reason", "")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidParams("call_id is required")
        if not isinstance(reason, str) or reason not in ANSWERED_REASONS | UNANSWERED_REASONS:
            known = ", ".join(sorted(ANSWERED_REASONS | UNANSWERED_REASONS))
            raise InvalidParams(f"reason must be one of {known}")
        cancelled = self.waiters.cancel(call_id)
        return {"cancelled": cancelled, "alerts": self._call_ended(call_id, reason)}

    def _call_ended(self, call_id: str, reason: str) -> int:
        """Send the missed-call alerts of a call that pushed (in the background); how many."""
        if not call_id:
            return 0
        call = self._missed.pop(call_id, self._clock())
        if call is None:
            self._count_missed("unknown_call")
            return 0
        if reason in ANSWERED_REASONS:
            self._count_missed("answered_elsewhere")
            return 0
        alerts: list[Alert] = []
        for device in call.devices:
            alert = alert_for(self.app_for(device), device, call)
            if isinstance(alert, Alert):
                alerts.append(alert)
            else:
                self._count_missed(f"skipped_{alert}")
        if alerts and self._nursery is not None:
            self._nursery.start_soon(self._send_alerts, alerts, reason)
        return len(alerts)

    async def _send_alerts(self, alerts: Sequence[Alert], reason: str) -> None:
        expires_at = self._clock() + ALERT_LIFETIME
        with trio.move_on_after(self.max_wait):
            for alert in alerts:
                try:
                    outcome = await self.pusher.send(
                        alert.app, alert.device, alert.message, expires_at=expires_at
                    )
                except Exception as exc:  # a provider bug fails this alert, not the service
                    outcome = Rejected(f"internal error: {type(exc).__name__}")
                name = outcome_name(outcome)
                self._count_missed(f"alert_{name}")
                if isinstance(outcome, TokenInvalid) and alert.device.aor:
                    self._invalidate(alert.device, outcome.reason)
                log.info(
                    "missed-call alert call_id=%s aor=%s reason=%s outcome=%s",
                    alert.message.call_id,
                    alert.device.aor,
                    reason,
                    name,
                    extra={
                        "fields": {
                            "call_id": alert.message.call_id,
                            "aor": alert.device.aor,
                            "token": mask_token(alert.device.token),
                            "reason": reason,
                            "outcome": name,
                        }
                    },
                )

    # --- cancel, status --------------------------------------------------------------------
    async def rpc_cancel(self, params: dict[str, JSON], received: float) -> JSON:
        call_id = params.get("call_id", params.get("Call-ID"))
        if not isinstance(call_id, str) or not call_id:
            raise InvalidParams("call_id is required")
        return {"cancelled": self.waiters.cancel(call_id)}

    def statistics(self) -> dict[str, JSON]:
        return {
            "uptime_s": round(time.monotonic() - self._started, 3),
            "devices": self.store.device_count(),
            "waiting": self.waiters.waiting,
            "pushing_without_wait": self._no_wait_in_flight,
            "overloaded_without_wait": self._overloaded_no_wait,
            "pushed_without_task": self._pushed_inline,
            "registrations": self._registrations,
            "pushes": dict(self._pushes),
            "pushes_by_provider": {k: dict(v) for k, v in self._pushes_by_provider.items()},
            "requests": dict(self._requests),
            "checks": dict(self._checks),
            "missed_calls": dict(self._missed_calls),
            "binding_refresh": self._refresh.statistics(),
            "waiters": self.waiters.statistics(),
            "latency_ms": {name: lat.summary() for name, lat in self._latency.items()},
        }

    async def rpc_status(self, params: dict[str, JSON], received: float) -> JSON:
        return self.status()

    def status(self) -> dict[str, JSON]:
        """The `status` result (DESIGN §11): own counters plus every statistics source."""
        result: dict[str, JSON] = {}
        for source in self._stats_sources:
            try:
                result.update(source())
            except Exception as exc:
                result.setdefault("errors", []).append(f"statistics failed: {type(exc).__name__}")
        for name, named in self._named_sources.items():
            try:
                result[name] = dict(named())
            except Exception as exc:
                result.setdefault("errors", []).append(f"{name}: {type(exc).__name__}")
        if "datagrams" not in result:
            sniffer = result.get("sniffer")
            result["datagrams"] = dict(sniffer) if isinstance(sniffer, Mapping) else {}
        result.update(self.statistics())
        return result

    # --- devices ------------------------------------------------------------------------------
    def device_view(self, device: Device, param_names: Sequence[str] = ()) -> dict[str, JSON]:
        return {
            "aor": device.aor,
            "device_id": shown_device_id(device),
            "type": device.type,
            "app": device.app,
            "token": mask_token(device.token),
            "sandbox": device.sandbox,
            "push_type": device.push_type,
            "state": device.state,
            "reason": device.reason,
            "user_agent": device.user_agent,
            "contact": mask_contact(device.contact, secret_values(device), param_names),
            "last_registered": device.last_registered,
        }

    async def rpc_devices_list(self, params: dict[str, JSON], received: float) -> JSON:
        aor = params.get("aor")
        if aor is not None and not isinstance(aor, str):
            raise InvalidParams("aor must be a string")
        names = self._token_param_names()
        wanted = normalize_aor(aor) if aor else None
        fetch = getattr(self.store, "fetch_devices", None)  # Redis: the cluster's records
        found = await fetch(wanted) if fetch is not None else self.store.devices(wanted)
        devices = sorted(found, key=lambda d: (d.aor, d.device_id))
        return {"devices": [self.device_view(d, names) for d in devices]}

    async def rpc_devices_remove(self, params: dict[str, JSON], received: float) -> JSON:
        aor = params.get("aor")
        token = params.get("token")
        if not isinstance(aor, str) or not aor:
            raise InvalidParams("aor is required")
        if token is not None and not isinstance(token, str):
            raise InvalidParams("token must be a string")
        fetch = getattr(self.store, "fetch_devices", None)  # Redis: count the cluster's records
        if fetch is not None:
            await fetch(normalize_aor(aor))
        return {"removed": self.store.remove_devices(normalize_aor(aor), token or None)}

    # --- apps -------------------------------------------------------------------------------------
    async def rpc_apps_add(self, params: dict[str, JSON], received: float) -> JSON:
        data = params.get("app")
        if not isinstance(data, dict):
            raise InvalidParams("app must be an object (an unstructured App)")
        try:
            app = structure_app(data)
        except Exception as exc:
            detail = (
                "; ".join(cattrs.transform_error(exc))
                if isinstance(exc, cattrs.BaseValidationError)
                else type(exc).__name__
            )
            raise InvalidParams(f"bad app: {detail}") from None
        if not app.app_id:
            raise InvalidParams("app_id is empty")
        replaced = self.store.apps().get(app.app_id)
        self.store.put_app(app)
        if replaced is not None and not _same_connection(replaced, app):
            self._forget_app(app.app_id)
        return {"app_id": app.app_id, "app": app_view(app)}

    async def rpc_apps_list(self, params: dict[str, JSON], received: float) -> JSON:
        apps = sorted(self.store.apps().values(), key=lambda a: a.app_id)
        return {"apps": [app_view(a) for a in apps]}

    async def rpc_apps_remove(self, params: dict[str, JSON], received: float) -> JSON:
        app_id = params.get("app_id")
        if not isinstance(app_id, str) or not app_id:
            raise InvalidParams("app_id is required")
        removed = self.store.remove_app(app_id)
        self._forget_app(app_id)
        return {"removed": removed}

    def _forget_app(self, app_id: str) -> None:
        """Let the pusher close what it holds for the app (when it can: an optional protocol)."""
        if isinstance(self.pusher, ForgetsApps):
            self.pusher.forget_app(app_id)

    # --- dynamic configuration ---------------------------------------------------------------------
    def _key(self, params: dict[str, JSON], required: bool = True) -> str | None:
        key = params.get("key")
        if key is None and not required:
            return None
        if not isinstance(key, str) or not key:
            raise InvalidParams("key is required")
        return key

    async def rpc_config_get(self, params: dict[str, JSON], received: float) -> JSON:
        key = self._key(params, required=False)
        try:
            return {"key": key, "value": self.store.get_config(key)}
        except KeyError:
            raise InvalidParams(f"no config key {key}", data={"key": key}) from None
        except ValueError as exc:
            raise InvalidParams(str(exc)) from None

    def _set(self, key: str, value: JSON) -> JSON:
        try:
            self.store.set_config(key, value)
        except (TypeError, ValueError) as exc:
            raise InvalidParams(str(exc)) from None
        return {"key": key}

    async def rpc_config_set(self, params: dict[str, JSON], received: float) -> JSON:
        key = self._key(params)
        assert key is not None
        value = params.get("value")
        if not isinstance(value, str):
            raise InvalidParams("value must be a string (use config.set_json for JSON)")
        return self._set(key, value)

    async def rpc_config_set_json(self, params: dict[str, JSON], received: float) -> JSON:
        key = self._key(params)
        assert key is not None
        if "value" not in params:
            raise InvalidParams("value is required")
        return self._set(key, params["value"])

    async def rpc_config_delete(self, params: dict[str, JSON], received: float) -> JSON:
        key = self._key(params)
        assert key is not None
        try:
            return {"deleted": self.store.delete_config(key)}
        except ValueError as exc:
            raise InvalidParams(str(exc)) from None


__all__ = [
    "ForgetsApps",
    "InternalError",
    "PushRequest",
    "RegisteredEvent",
    "Service",
    "SharedPush",
    "app_view",
    "mask_contact",
]
