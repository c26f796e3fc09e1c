"""APNs requests and answers (pure): Apple's "Sending notification requests to APNs" and
"Handling notification responses from APNs".

`build_request` turns (app, device, message) into an `HttpRequest`, `interpret_response`
turns Apple's answer into an `Outcome` (or `RefreshProviderToken`, the one answer that
asks the caller to make a new JWT and try once more). `ProviderTokenCache` keeps one
ES256 provider token per (team id, key id) and decides when a new one may be made.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import uuid
from collections.abc import Sequence
from typing import Any

import attrs
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .. import _json
from ..model import (
    App,
    AppleTokenAuth,
    AuthFailed,
    Delivered,
    Device,
    Outcome,
    PushMessage,
    PushType,
    Rejected,
    RetryLater,
    TokenInvalid,
)
from .http import HttpRequest, header, parse_retry_after
from .payload import TemplateError, build_payload

DEFAULT_PORT = 443
MAX_PAYLOAD = 4096  # Apple: "the maximum payload size is 4 KB (4096 bytes)"
MAX_VOIP_PAYLOAD = 5120  # Apple: "for VoIP notifications, the maximum size is 5 KB"
MAX_COLLAPSE_ID = 64  # Apple: apns-collapse-id "must not exceed 64 bytes"
PRIORITY_IMMEDIATE = "10"
PRIORITY_BACKGROUND = "5"  # Apple: background pushes must use 5

# Provider token lifetime (Apple: refused after one hour; refreshing more often than
# every 20 minutes answers 429 TooManyProviderTokenUpdates).
TOKEN_REUSE = 40 * 60.0
TOKEN_MIN_INTERVAL = 20 * 60.0

_HEX = re.compile(r"[0-9a-fA-F]+")
_NORMAL_TOKEN = re.compile(r"[0-9a-f]+")
# A field value we can send: no control characters (RFC 9110 §5.5), no blank at the ends.
_FIELD_VALUE = re.compile(r"[^\x00-\x20\x7f](?:[^\x00-\x08\x0a-\x1f\x7f]*[^\x00-\x20\x7f])?")
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # reused: cheaper than dumps

# apns-id: Apple wants a UUID in canonical lowercase form, echoed back in the answer; it
# identifies the request, nothing more. A random version-4 prefix per process and a
# counter in the last group make unique ids for a fraction of uuid4()'s cost.
_ID_PREFIX = str(uuid.uuid4())[:24]
_ID_COUNTER = itertools.count(int.from_bytes(os.urandom(5), "big"))


def new_apns_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFF:012x}"


@attrs.frozen
class RefreshProviderToken:
    """403 ExpiredProviderToken: make a new JWT (once) and send again."""

    reason: str


ApnsAnswer = Outcome | RefreshProviderToken


def split_host(host: str) -> tuple[str, int]:
    """Kazoo's `add_apple_app AppId CertFile Host`: "host" or "host:port" ("[v6]:port").

    Raises ValueError for a port that is not 1..65535.
    """
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
    else:
        name, sep, text = host.rpartition(":")
        if sep and text.isdigit() and ":" not in name:
            port = int(text)
        else:
            name, port = host, DEFAULT_PORT
    if not 0 < port < 65536 or not name:
        raise ValueError(f"bad APNs host {host!r}")
    return name, port


def push_type_for(app: App, device: Device) -> PushType:
    """DESIGN §11: an RFC 8599 device's pn-param service suffix wins over the app's type."""
    return device.push_type or app.push_type


def topic_for(app: App, push_type: PushType) -> str:
    """The bundle id (the app id); Apple: VoIP pushes use `<bundle id>.voip`."""
    base = app.app_id.removesuffix(".voip")
    return f"{base}.voip" if push_type == "voip" else base


def normalize_token(token: str) -> str:
    """Tokens are sent as lowercase hex; some apps report them with spaces or `<…>`."""
    if _NORMAL_TOKEN.fullmatch(token):  # what RFC 8599 phones send: nothing to clean
        return token
    cleaned = token.strip().strip("<>").replace(" ", "")
    return cleaned.lower() if _HEX.fullmatch(cleaned) else token


def build_request(
    app: App,
    device: Device,
    message: PushMessage,
    jwt_or_none: str | None,
    now: float,
    expires_at: float,
    *,
    apns_id: str | None = None,
) -> HttpRequest | Rejected:
    """The POST for one push, or `Rejected` when it must not be sent (payload too large)."""
    push_type = push_type_for(app, device)
    refresh = message.kind == "refresh"
    try:
        if refresh:
            # RFC 8599 binding refresh: a silent background push (Apple: apns-push-type
            # background, priority 5, aps.content-available 1, topic = bundle id). Never a
            # VoIP push: PushKit requires every VoIP push to report a call to CallKit.
            payload = {"aps": {"content-available": 1}, "pn-refresh": "binding"}
        else:
            payload = build_payload(message, push_type, app.payload_template, now)
    except TemplateError as error:
        return Rejected(f"payload template: {error}")
    try:
        # orjson when it writes what json would (pusher_trio._json); json otherwise.
        body = _json.dumps_compact(payload) or _JSON.encode(payload).encode()
    except (TypeError, ValueError) as error:
        return Rejected(f"payload is not JSON: {error}")
    limit = MAX_VOIP_PAYLOAD if push_type == "voip" else MAX_PAYLOAD
    if len(body) > limit:
        return Rejected(f"PayloadTooLarge: {len(body)} bytes > {limit} for a {push_type} push")
    headers: list[tuple[str, str]] = [
        ("apns-push-type", "background" if refresh else push_type),
        ("apns-topic", topic_for(app, "alert" if refresh else push_type)),
        ("apns-priority", PRIORITY_BACKGROUND if refresh else PRIORITY_IMMEDIATE),
        # DESIGN §11: the absolute UNIX time of the wait deadline; 0 would mean "try once".
        ("apns-expiration", str(max(int(expires_at), 1))),
        ("apns-id", apns_id or new_apns_id()),
    ]
    if push_type == "alert" and message.call_id:
        collapse = message.call_id.encode()
        # The call id comes from the request: one that is no valid field value (RFC 9113
        # §8.2.1: no NUL/CR/LF, no blank at either end) would make APNs end the whole
        # connection (PROTOCOL_ERROR), failing every push on it. Left out, as a long one.
        if len(collapse) <= MAX_COLLAPSE_ID and _FIELD_VALUE.fullmatch(message.call_id):
            headers.append(("apns-collapse-id", message.call_id))
    if jwt_or_none is not None:
        headers.append(("authorization", f"bearer {jwt_or_none}"))
    headers.append(("content-type", "application/json"))
    return HttpRequest(
        method="POST",
        path=f"/3/device/{normalize_token(device.token)}",
        headers=tuple(headers),
        body=body,
    )


# Apple's table of 400/403 reasons that mean the token itself is dead.
TOKEN_REASONS = frozenset(
    {"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered", "ExpiredToken"}
)


def _reason(body: bytes) -> tuple[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return "", None
    if not isinstance(data, dict):
        return "", None
    return str(data.get("reason", "")), data.get("timestamp")


def interpret_response(status: int, headers: Sequence[tuple[str, str]], body: bytes) -> ApnsAnswer:
    """Apple's answer as a value (never an exception for an answer Apple documents)."""
    if status == 200:
        return Delivered(id=header(headers, "apns-id") or "")
    reason, timestamp = _reason(body)
    label = f"{status} {reason}".rstrip()
    if status == 410:
        # Apple: "the device token is no longer active for the topic"; timestamp in ms.
        suffix = f" since {timestamp}" if timestamp is not None else ""
        return TokenInvalid(f"{reason or 'Unregistered'}{suffix}")
    if reason in TOKEN_REASONS:
        return TokenInvalid(reason)
    if status == 403:
        if reason == "ExpiredProviderToken":
            return RefreshProviderToken(reason)
        return AuthFailed(label)
    if status in (429, 500, 503) or status >= 500:
        return RetryLater(label, parse_retry_after(header(headers, "retry-after")))
    return Rejected(label)


# --- provider tokens (token auth) -------------------------------------------------


@attrs.define
class _Entry:
    key_pem: str
    key: ec.EllipticCurvePrivateKey
    token: str = ""
    issued_at: float = float("-inf")
    forced: bool = False  # made early because Apple refused the previous one


def load_signing_key(key_pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("an APNs signing key is an EC P-256 key (.p8)")
    return key


def make_provider_token(
    key: ec.EllipticCurvePrivateKey, key_id: str, team_id: str, now: float
) -> str:
    """Apple: header {alg: ES256, kid}, claims {iss: team id, iat: seconds}."""
    return jwt.encode(
        {"iss": team_id, "iat": int(now)}, key, algorithm="ES256", headers={"kid": key_id}
    )


class ProviderTokenCache:
    """One JWT per (team id, key id), reused for 40 minutes (pure: `now` is passed in).

    A token is never replaced sooner than 20 minutes after it was made, except once when
    Apple refused it (ExpiredProviderToken / InvalidProviderToken): a token made that way
    is not replaced early again until 20 minutes have passed.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}
        self.generated = 0

    def token(self, auth: AppleTokenAuth, now: float) -> str:
        entry = self._entry(auth)
        age = now - entry.issued_at
        if not entry.token or age >= TOKEN_REUSE or age < 0:
            self._issue(entry, auth, now, forced=False)
        return entry.token

    def refresh_after_rejection(self, auth: AppleTokenAuth, rejected: str, now: float) -> bool:
        """Apple refused `rejected`; True when a new token is now available to retry with."""
        entry = self._entry(auth)
        if entry.token != rejected:
            return True  # another push already replaced it
        if entry.forced and now - entry.issued_at < TOKEN_MIN_INTERVAL:
            return False
        self._issue(entry, auth, now, forced=True)
        return True

    def _entry(self, auth: AppleTokenAuth) -> _Entry:
        ident = (auth.team_id, auth.key_id)
        entry = self._entries.get(ident)
        if entry is None or entry.key_pem != auth.key_pem:
            entry = _Entry(key_pem=auth.key_pem, key=load_signing_key(auth.key_pem))
            self._entries[ident] = entry
        return entry

    def _issue(self, entry: _Entry, auth: AppleTokenAuth, now: float, *, forced: bool) -> None:
        entry.token = make_provider_token(entry.key, auth.key_id, auth.team_id, now)
        entry.issued_at = now
        entry.forced = forced
        self.generated += 1
