"""A strict local FCM HTTP v1 with its own OAuth2 token endpoint (HTTP/2 + TLS).

    server = FakeFcm()
    account = server.new_service_account("my-project")     # token_uri points here
    port = await nursery.start(server.serve)
    auth = FirebaseAuth(server.service_account(account), base_url=server.base_url)
    # Providers(ca_file=server.ca_file)

(`service_account()` returns the account with `token_uri` set to the bound port: call it
after `serve` started, or give `port=` up front.)

Token endpoint `POST /token`: form `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`
and an RS256 `assertion` signed by a registered service account: `iss` = client_email,
`aud` = this token URI, `scope` with firebase.messaging, `iat` ≤ now < `exp` ≤ iat+3600.
Answers `{"access_token", "expires_in", "token_type": "Bearer"}` or Google's
`{"error": "invalid_grant", "error_description": ...}`.

Send endpoint `POST /v1/projects/{project}/messages:send`: a bearer issued here, not
expired or revoked, for that project (else 401 UNAUTHENTICATED / 403 PERMISSION_DENIED);
a JSON `message` with a `token`, `data` of string values only, `android.priority`
HIGH/NORMAL, `android.ttl` like "30s", ≤ 4096 bytes of data (else 400 INVALID_ARGUMENT
with a BadRequest fieldViolation). 200 answers `{"name": "projects/p/messages/0:N"}`.
Errors use Google's JSON with an FcmError `errorCode`. Faults are scripted with
`pusher_trio.standins.common` (`script(Answer(404, "UNREGISTERED"), token=...)`, ...).

Runnable alone: `python -m pusher_trio.standins.fake_fcm --port 0` writes a CA and a service account to
a folder and prints one JSON line with the port, base URL and the paths.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import jwt
import trio
from cryptography.hazmat.primitives import serialization

from pusher_trio.standins.certs import make_service_account
from pusher_trio.standins.common import (
    Action,
    Answer,
    Delay,
    Drop,
    Freeze,
    Garble,
    GoAway,
    Received,
    Reply,
    Request,
    Reset,
    Stall,
    StandIn,
)

__all__ = [
    "Action",
    "Answer",
    "Delay",
    "Drop",
    "FakeFcm",
    "Freeze",
    "Garble",
    "GoAway",
    "Received",
    "Reset",
    "Stall",
]

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
MAX_DATA = 4096
_SEND_PATH = re.compile(r"/v1/projects/([^/]+)/messages:send")
_TTL = re.compile(r"\d+(\.\d{1,9})?s")
# errorCode -> (HTTP status, google.rpc status)
_CODES = {
    "UNREGISTERED": (404, "NOT_FOUND"),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT"),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED"),
    "UNAVAILABLE": (503, "UNAVAILABLE"),
    "INTERNAL": (500, "INTERNAL"),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED"),
}
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def google_error(
    status: int,
    code: str | None,
    message: str,
    field: str | None = None,
) -> bytes:
    details: list[dict[str, Any]] = []
    if code and code in _CODES:
        details.append({"@type": FCM_ERROR, "errorCode": code})
    if field:
        details.append(
            {"@type": BAD_REQUEST, "fieldViolations": [{"field": field, "description": message}]}
        )
    google_status = _CODES[code][1] if code in _CODES else _STATUS_NAMES.get(status, "UNKNOWN")
    error = {"code": status, "message": message, "status": google_status}
    if details:
        error["details"] = details
    return json.dumps({"error": error}).encode()


class _Refused(Exception):
    def __init__(
        self, status: int, code: str | None, message: str, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


class FakeFcm(StandIn):
    name = "fake-fcm"

    def __init__(self, *, access_token_lifetime: int = 3599, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.access_token_lifetime = access_token_lifetime
        self._accounts: dict[str, tuple[str, Any]] = {}  # client_email -> (project id, public key)
        self._access: dict[str, tuple[str, float]] = {}  # access token -> (client_email, expiry)
        self.unregistered: set[str] = set()
        self.token_requests = 0
        self.tokens_issued = 0

    # --- credentials --------------------------------------------------------------------

    @property
    def token_uri(self) -> str:
        return f"https://{self.host}:{self.port}/token"

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def add_service_account(self, client_email: str, project_id: str, public_pem: str) -> None:
        self._accounts[client_email] = (
            project_id,
            serialization.load_pem_public_key(public_pem.encode()),
        )

    def new_service_account(self, project_id: str = "pusher-trio-test") -> dict[str, str]:
        """Make and register a service account (its token_uri is fixed by `service_account`)."""
        account, public = make_service_account(project_id, self.token_uri)
        self.add_service_account(account["client_email"], project_id, public)
        return account

    def service_account(self, account: dict[str, str]) -> dict[str, str]:
        """`account` with token_uri pointing at this server's bound port."""
        return {**account, "token_uri": self.token_uri}

    def revoke_access_tokens(self) -> None:
        """Every access token issued so far answers 401 from now on."""
        self._access.clear()

    def unregister(self, token: str) -> None:
        """From now on `token` answers 404 UNREGISTERED."""
        self.unregistered.add(token)

    # --- StandIn ------------------------------------------------------------------------

    def token_of(self, request: Request) -> str:
        if request.path == "/token":
            return ""
        try:
            token = json.loads(request.body)["message"]["token"]
        except (ValueError, KeyError, TypeError):
            return ""
        return token if isinstance(token, str) else ""

    def is_push(self, request: Request) -> bool:
        return request.path != "/token"

    def kind_of(self, request: Request) -> str:
        """FCM has no push type: a message with a notification (top-level or Android's)
        is an "alert" the phone shows by itself; data-only is "data" (a wake-up)."""
        if request.path == "/token":
            return ""
        try:
            message = json.loads(request.body)["message"]
        except (ValueError, KeyError, TypeError):
            return ""
        if not isinstance(message, dict):
            return ""
        android = message.get("android")
        if message.get("notification") or (
            isinstance(android, dict) and android.get("notification")
        ):
            return "alert"
        return "data"

    def scripted_answer(self, request: Request, answer: Answer) -> Reply:
        if answer.status == 200:
            return self.answer(request)
        code = answer.reason or None
        status = answer.status
        message = {
            "UNREGISTERED": "Requested entity was not found.",
            "QUOTA_EXCEEDED": "Quota exceeded for quota metric 'Messages'.",
            "UNAVAILABLE": "The service is currently unavailable.",
            "INTERNAL": "Internal error encountered.",
            "SENDER_ID_MISMATCH": "SenderId mismatch",
            "THIRD_PARTY_AUTH_ERROR": "Auth error from APNS or Web Push Service",
            "INVALID_ARGUMENT": "The registration token is not a valid FCM registration token",
        }.get(code or "", "Request failed")
        headers: list[tuple[str, str]] = [("content-type", "application/json; charset=UTF-8")]
        if answer.retry_after is not None:
            headers.append(("retry-after", str(int(answer.retry_after))))
        return Reply(status, tuple(headers), google_error(status, code, message), reason=code or "")

    def answer(self, request: Request) -> Reply:
        if request.path == "/token":
            return self._token_endpoint(request)
        try:
            token, payload = self._check_send(request)
        except _Refused as refused:
            body = google_error(refused.status, refused.code, refused.message, refused.field)
            headers = (("content-type", "application/json; charset=UTF-8"),)
            return Reply(refused.status, headers, body, reason=refused.code or str(refused.status))
        name = f"projects/{_SEND_PATH.fullmatch(request.path).group(1)}/messages/0:{secrets.randbelow(10**16)}"  # type: ignore[union-attr]
        body = json.dumps({"name": name}).encode()
        return Reply(
            200,
            (("content-type", "application/json; charset=UTF-8"),),
            body,
            delivered=(token, payload),
        )

    # --- OAuth2 -------------------------------------------------------------------------

    def _token_endpoint(self, request: Request) -> Reply:
        self.token_requests += 1
        headers = (("content-type", "application/json; charset=utf-8"),)

        def refuse(error: str, description: str) -> Reply:
            body = json.dumps({"error": error, "error_description": description}).encode()
            return Reply(400, headers, body, reason=error)

        if request.method != "POST":
            return refuse("invalid_request", "POST expected")
        form = urllib.parse.parse_qs(request.body.decode(errors="replace"))
        if form.get("grant_type") != [GRANT_TYPE]:
            return refuse("unsupported_grant_type", "Invalid grant_type")
        assertion = (form.get("assertion") or [""])[0]
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return refuse("invalid_grant", "Invalid JWT.")
        account = self._accounts.get(str(unverified.get("iss")))
        if account is None:
            return refuse("invalid_grant", "Invalid JWT Signature.")
        try:
            claims = jwt.decode(
                assertion,
                account[1],
                algorithms=["RS256"],
                audience=self.token_uri,
                options={"verify_iat": False, "verify_exp": False},
            )
        except jwt.InvalidAudienceError:
            return refuse("invalid_grant", "Invalid JWT: audience does not match the token URI.")
        except jwt.InvalidTokenError:
            return refuse("invalid_grant", "Invalid JWT Signature.")
        now = self.clock()
        iat, exp = claims.get("iat"), claims.get("exp")
        if (
            not isinstance(iat, int)
            or not isinstance(exp, int)
            or exp - iat > 3600
            or iat > now + 60
        ):
            return refuse(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
            )
        if exp <= now:
            return refuse("invalid_grant", "Invalid JWT: Token has expired.")
        if SCOPE not in str(claims.get("scope", "")).split():
            return refuse("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        token = "ya29.fake-" + secrets.token_urlsafe(32)
        self._access[token] = (str(claims["iss"]), now + self.access_token_lifetime)
        self.tokens_issued += 1
        body = {
            "access_token": token,
            "expires_in": self.access_token_lifetime,
            "token_type": "Bearer",
        }
        return Reply(200, headers, json.dumps(body).encode())

    # --- messages:send ---------------------------------------------------------------------

    def _check_send(self, request: Request) -> tuple[str, Any]:
        match = _SEND_PATH.fullmatch(request.path)
        if request.method != "POST" or match is None:
            raise _Refused(404, None, "Not found")
        authorization = request.header("authorization") or ""
        scheme, _, bearer = authorization.partition(" ")
        grant = self._access.get(bearer) if scheme.lower() == "bearer" else None
        if grant is None or grant[1] <= self.clock():
            raise _Refused(
                401,
                None,
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            )
        project = self._accounts[grant[0]][0]
        if project != match.group(1):
            raise _Refused(
                403,
                None,
                f"Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/{match.group(1)}'",
            )
        try:
            body = json.loads(request.body)
            message = body["message"]
        except (ValueError, KeyError, TypeError):
            raise _Refused(
                400, "INVALID_ARGUMENT", "Invalid JSON payload received.", "message"
            ) from None
        if not isinstance(message, dict):
            raise _Refused(400, "INVALID_ARGUMENT", "message must be an object", "message")
        token = message.get("token")
        if not isinstance(token, str) or not token:
            raise _Refused(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                "message.token",
            )
        data = message.get("data", {})
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise _Refused(
                400,
                "INVALID_ARGUMENT",
                "Invalid value at 'message.data': values must be strings",
                "message.data",
            )
        if len(json.dumps(data, separators=(",", ":")).encode()) > MAX_DATA:
            raise _Refused(400, "INVALID_ARGUMENT", "Message is too big", "message.data")
        android = message.get("android", {})
        if not isinstance(android, dict):
            raise _Refused(
                400, "INVALID_ARGUMENT", "Invalid value at 'message.android'", "message.android"
            )
        if android.get("priority", "NORMAL") not in ("HIGH", "NORMAL"):
            raise _Refused(
                400,
                "INVALID_ARGUMENT",
                "Invalid value at 'message.android.priority'",
                "message.android.priority",
            )
        notification = android.get("notification", {})
        if not isinstance(notification, dict) or not all(
            isinstance(v, str) or (isinstance(v, list) and all(isinstance(a, str) for a in v))
            for v in notification.values()
        ):
            raise _Refused(
                400,
                "INVALID_ARGUMENT",
                "Invalid value at 'message.android.notification'",
                "message.android.notification",
            )
        collapse_key = android.get("collapse_key")
        if collapse_key is not None and not isinstance(collapse_key, str):
            raise _Refused(
                400,
                "INVALID_ARGUMENT",
                "Invalid value at 'message.android.collapse_key'",
                "message.android.collapse_key",
            )
        ttl = android.get("ttl")
        if ttl is not None and (not isinstance(ttl, str) or not _TTL.fullmatch(ttl)):
            raise _Refused(
                400,
                "INVALID_ARGUMENT",
                "Invalid value at 'message.android.ttl'",
                "message.android.ttl",
            )
        if token in self.unregistered:
            raise _Refused(404, "UNREGISTERED", "Requested entity was not found.")
        return token, data


# --- running alone ------------------------------------------------------------------------


def _write_files(server: FakeFcm, folder: Path, account: dict[str, str]) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    ca_file = server.authority.write_ca(folder / "ca.pem")
    path = folder / "service-account.json"
    path.write_text(json.dumps(server.service_account(account), indent=2))
    path.chmod(0o600)
    return {"ca_file": ca_file, "service_account": str(path)}


async def _main(args: argparse.Namespace) -> None:
    def delivered(token: str, headers: dict[str, str], payload: Any) -> None:
        print(json.dumps({"delivered": token[:6] + "…" + token[-4:]}), flush=True)

    server = FakeFcm(port=args.port, on_delivered=delivered)
    folder = Path(args.out or tempfile.mkdtemp(prefix="fake-fcm-"))
    account = server.new_service_account(args.project)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        files = _write_files(server, folder, account)
        line = {"port": port, "base_url": server.base_url, "project_id": args.project, **files}
        print(json.dumps(line), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A strict local FCM HTTP v1 stand-in.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--project", default="pusher-trio-test")
    parser.add_argument("--out", help="folder for ca.pem and service-account.json")
    args = parser.parse_args(argv)
    try:
        trio.run(_main, args)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
