"""FCM HTTP v1 requests and answers, and the OAuth2 service-account grant (pure).

Google's "Migrate from legacy FCM APIs to HTTP v1" and "Using OAuth 2.0 for
Server to Server Applications": the service account signs an RS256 JWT
assertion, the token endpoint exchanges it for an access token (valid one hour),
and `POST /v1/projects/{project_id}/messages:send` carries it as a bearer.
The HTTP exchange with the token endpoint lives in `oauth.py`; here are only
the values.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import jwt

from ..model import (
    App,
    AuthFailed,
    Delivered,
    Device,
    FirebaseAuth,
    Outcome,
    PushMessage,
    Rejected,
    RetryLater,
    TokenInvalid,
)
from .http import HttpRequest, header, parse_retry_after
from .payload import TemplateError, build_payload

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
ASSERTION_LIFETIME = 3600  # Google: exp at most one hour after iat
REFRESH_MARGIN = 5 * 60.0  # DESIGN §9: cached until 5 minutes before it expires
MAX_PAYLOAD = 4096  # FCM: "the maximum payload for data messages is 4096 bytes"
MAX_TTL = 2419200  # FCM: ttl 0..4 weeks
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"

REQUIRED_FIELDS = ("project_id", "client_email", "private_key", "token_uri")
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # reused: cheaper than dumps


@attrs.frozen
class RefreshAccessToken:
    """401 without an FCM error code: the access token was refused; get a new one once."""

    reason: str


FcmAnswer = Outcome | RefreshAccessToken


# --- OAuth2 JWT bearer grant ---------------------------------------------------------


def make_assertion(service_account: Mapping[str, str], now: float) -> str:
    """RFC 7523 JWT bearer assertion signed with the service account's RSA key."""
    iat = int(now)
    claims = {
        "iss": service_account["client_email"],
        "scope": SCOPE,
        "aud": service_account.get("token_uri") or DEFAULT_TOKEN_URI,
        "iat": iat,
        "exp": iat + ASSERTION_LIFETIME,
    }
    extra = (
        {"kid": service_account["private_key_id"]}
        if service_account.get("private_key_id")
        else None
    )
    return jwt.encode(claims, service_account["private_key"], algorithm="RS256", headers=extra)


def token_request(service_account: Mapping[str, str], now: float) -> tuple[str, bytes]:
    """(token URL, form body) for the access-token exchange."""
    body = urllib.parse.urlencode(
        {"grant_type": GRANT_TYPE, "assertion": make_assertion(service_account, now)}
    ).encode()
    return service_account.get("token_uri") or DEFAULT_TOKEN_URI, body


def parse_token_response(status: int, body: bytes) -> tuple[str, float] | AuthFailed:
    """(access token, lifetime in seconds) or why the grant failed."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if status != 200 or not isinstance(data, dict) or not data.get("access_token"):
        detail = ""
        if isinstance(data, dict):
            detail = str(data.get("error_description") or data.get("error") or "")
        return AuthFailed(f"OAuth token exchange answered {status} {detail}".rstrip())
    try:
        lifetime = float(data.get("expires_in", ASSERTION_LIFETIME))
    except (TypeError, ValueError):
        lifetime = float(ASSERTION_LIFETIME)
    return str(data["access_token"]), lifetime


@attrs.define
class AccessTokenCache:
    """One access token per service account, reused until 5 minutes before it expires."""

    token: str | None = None
    expires_at: float = 0.0
    fetched: int = 0

    def get(self, now: float) -> str | None:
        """The cached token, or None when a new one must be fetched."""
        if self.token is not None and now < self.expires_at - REFRESH_MARGIN:
            return self.token
        return None

    def store(self, token: str, lifetime: float, now: float) -> None:
        self.token = token
        self.expires_at = now + lifetime
        self.fetched += 1

    def invalidate(self, token: str) -> None:
        """FCM refused `token` (401): forget it unless it was already replaced."""
        if self.token == token:
            self.token = None


# --- sending -----------------------------------------------------------------------------


def _flatten(payload: Mapping[str, Any]) -> dict[str, str]:
    """FCM data messages carry string values only; objects and numbers become JSON text."""
    return {
        key: value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        for key, value in payload.items()
    }


def send_path(project_id: str) -> str:
    return f"/v1/projects/{urllib.parse.quote(project_id, safe='')}/messages:send"


def build_request(
    app: App,
    device: Device,
    message: PushMessage,
    access_token: str,
    now: float,
    expires_at: float,
) -> HttpRequest | Rejected:
    """A data-only, high-priority message whose ttl is the time left to wait."""
    if not isinstance(app.auth, FirebaseAuth):
        return Rejected(f"app {app.app_id} has no service account")
    missed = message.kind == "missed_call"
    refresh = message.kind == "refresh"
    try:
        if refresh:
            # RFC 8599 binding refresh: data only, normal priority (nothing to show)
            payload: dict[str, Any] = {
                "pn-refresh": "binding",
                "utc_unix_timestamp_ms": int(now * 1000),
            }
        else:
            payload = build_payload(
                message, "alert" if missed else "voip", app.payload_template, now
            )
        data = _flatten(payload)
    except TemplateError as error:
        return Rejected(f"payload template: {error}")
    except (TypeError, ValueError) as error:
        return Rejected(f"payload is not JSON: {error}")
    ttl = min(max(int(expires_at - now), 0), MAX_TTL)
    android: dict[str, Any] = {"priority": "NORMAL" if refresh else "HIGH", "ttl": f"{ttl}s"}
    if missed:
        # A missed call is shown by Android itself (the app may be asleep): a notification
        # with Kazoo-style localization (FCM v1 AndroidNotification body_loc_key/args),
        # tagged and collapsed by call id so a repeat replaces it.
        alert = payload.get("aps", {}).get("alert", {}) if isinstance(payload, dict) else {}
        notification: dict[str, Any] = {"tag": message.call_id}
        if isinstance(alert, dict) and alert.get("loc-key"):
            notification["body_loc_key"] = str(alert["loc-key"])
            notification["body_loc_args"] = [str(a) for a in alert.get("loc-args", [])]
        else:
            notification["body"] = message.caller_name or message.caller_number
        android.update(collapse_key=message.call_id, notification=notification)
        if not message.call_id:
            del android["collapse_key"], notification["tag"]
    body_obj = {"message": {"token": device.token, "data": data, "android": android}}
    try:
        data_size = len(_JSON.encode(data).encode())
    except (TypeError, ValueError) as error:
        return Rejected(f"payload is not JSON: {error}")
    if data_size > MAX_PAYLOAD:
        return Rejected(f"payload too large: {data_size} bytes > {MAX_PAYLOAD}")
    body = _JSON.encode(body_obj).encode()
    return HttpRequest(
        method="POST",
        path=send_path(app.auth.project_id),
        headers=(
            ("authorization", f"Bearer {access_token}"),
            ("content-type", "application/json; charset=UTF-8"),
        ),
        body=body,
    )


def _error(body: bytes) -> tuple[str, str, list[str], str]:
    """(status, message, errorCodes, fields in violation) of Google's error JSON."""
    try:
        data = json.loads(body)
    except ValueError:
        return "", body[:200].decode(errors="replace"), [], ""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return "", "", [], ""
    codes: list[str] = []
    fields: list[str] = []
    details = error.get("details")
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, dict):
            continue
        if detail.get("errorCode"):
            codes.append(str(detail["errorCode"]))
        violations = detail.get("fieldViolations")
        for violation in violations if isinstance(violations, list) else []:
            if isinstance(violation, dict):
                fields.append(str(violation.get("field", "")))
    return str(error.get("status", "")), str(error.get("message", "")), codes, " ".join(fields)


def interpret_response(status: int, headers: Sequence[tuple[str, str]], body: bytes) -> FcmAnswer:
    """Google's answer as a value (never an exception for a documented answer)."""
    if status == 200:
        try:
            name = json.loads(body).get("name", "")
        except (ValueError, AttributeError):
            name = ""
        return Delivered(id=str(name))
    error_status, text, codes, fields = _error(body)
    code = codes[0] if codes else error_status
    label = f"{status} {code}: {text}".rstrip(": ")
    if "UNREGISTERED" in codes or status == 404:
        return TokenInvalid(label)
    if "INVALID_ARGUMENT" in codes or error_status == "INVALID_ARGUMENT":
        about_token = "token" in fields or "registration token" in text.lower()
        return TokenInvalid(label) if about_token else Rejected(label)
    if "SENDER_ID_MISMATCH" in codes or "THIRD_PARTY_AUTH_ERROR" in codes:
        return Rejected(label)
    if status == 401:
        return RefreshAccessToken(label)
    if status == 403:
        return AuthFailed(label)
    retry_codes = {"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"}
    if retry_codes.intersection(codes) or status in (429, 500, 503) or status >= 500:
        return RetryLater(label, parse_retry_after(header(headers, "retry-after")))
    return Rejected(label)
