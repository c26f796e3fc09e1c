"""A strict local APNs: HTTP/2 + TLS, Apple's checks and Apple's answers.

    server = FakeApns(topics={"com.example.app"})
    server.add_signing_key(key_id, team_id, public_pem)      # token auth (.p8)
    client_pem = server.client_pem("com.example.app")       # certificate auth
    port = await nursery.start(server.serve)                # 127.0.0.1, port 0
    # App(host=f"127.0.0.1:{port}") and Providers(ca_file=server.ca_file)

Checks, as Apple documents them ("Sending notification requests to APNs",
"Establishing a token-based connection", "Handling notification responses"):
method and path, hex device token, duplicate headers, apns-topic present and fitting
apns-push-type (voip -> `<bundle>.voip`), apns-priority, apns-expiration,
apns-collapse-id (≤ 64 bytes), apns-id (UUID), payload present and ≤ 4096 bytes (5120
for voip). Authentication: a client certificate from our CA whose subject names the
topic's bundle id, or a bearer JWT: ES256, `kid` of a registered key, signature, `iss` =
its team, `iat` not in the future and not older than an hour (`ExpiredProviderToken`),
and a connection's token not changed within 20 minutes (`TooManyProviderTokenUpdates`).
Errors are Apple's status with `{"reason": ...}` (410 adds `timestamp`); 200 echoes
`apns-id`. Faults are scripted with `pusher_trio.standins.common` (`script`, `goaway_after`).

Runnable alone: `python -m pusher_trio.standins.fake_apns --port 0 --topic com.example.app` writes a CA,
a client certificate and a .p8 key to a folder and prints one JSON line with the port
and the paths.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import h2.settings
import jwt
import trio
from cryptography.hazmat.primitives import serialization

from pusher_trio.standins.certs import make_p8, random_id
from pusher_trio.standins.common import (
    Action,
    Answer,
    ConnectionInfo,
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
    "FakeApns",
    "Freeze",
    "Garble",
    "GoAway",
    "Received",
    "Reset",
    "Stall",
]

MAX_PAYLOAD = 4096
MAX_VOIP_PAYLOAD = 5120
TOKEN_MAX_AGE = 3600  # Apple: "APNs rejects any token older than one hour"
TOKEN_MIN_INTERVAL = 20 * 60  # Apple: tokens updated more often answer 429
OPEN_STREAM_LIMIT = 1000  # the stream limit once a token-auth connection is trusted
PUSH_TYPES = {
    "alert",
    "background",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "location",
    "liveactivity",
    "pushtotalk",
    "widgets",
    "controls",
}
_HEX = re.compile(r"[0-9a-fA-F]{64,200}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_STATUS_OF = {
    "BadCertificate": 403,
    "BadCertificateEnvironment": 403,
    "ExpiredProviderToken": 403,
    "Forbidden": 403,
    "InvalidProviderToken": 403,
    "MissingProviderToken": 403,
    "UnrelatedKeyIdInToken": 403,
    "BadPath": 404,
    "MethodNotAllowed": 405,
    "Unregistered": 410,
    "ExpiredToken": 410,
    "PayloadTooLarge": 413,
    "TooManyProviderTokenUpdates": 429,
    "TooManyRequests": 429,
    "InternalServerError": 500,
    "ServiceUnavailable": 503,
    "Shutdown": 503,
}


class _Refused(Exception):
    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status or _STATUS_OF.get(reason, 400)


class FakeApns(StandIn):
    """Strict APNs stand-in. `topics`: the bundle ids the stand-in accepts (None: any)."""

    name = "fake-apns"

    def __init__(
        self,
        *,
        topics: set[str] | None = None,
        require_auth: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("client_auth", True)
        super().__init__(**kwargs)
        self.topics = topics
        self.require_auth = require_auth
        self._keys: dict[str, tuple[str, Any]] = {}  # kid -> (team id, public key)
        self.unregistered: dict[str, int] = {}  # token -> ms timestamp: answers 410

    # --- credentials --------------------------------------------------------------------

    def add_signing_key(self, key_id: str, team_id: str, public_pem: str) -> None:
        """Accept provider tokens signed by this key (`pusher_trio.standins.certs.make_p8()[1]`)."""
        self._keys[key_id] = (team_id, serialization.load_pem_public_key(public_pem.encode()))

    def new_signing_key(self, team_id: str | None = None) -> tuple[str, str, str]:
        """Make and register a key: returns (p8 PEM, key id, team id)."""
        p8, public = make_p8()
        key_id, team = random_id(), team_id or random_id()
        self.add_signing_key(key_id, team, public)
        return p8, key_id, team

    def client_pem(self, bundle_id: str) -> str:
        """A certificate + key for certificate auth of `bundle_id` (issued by our CA)."""
        return self.authority.apns_client_pem(bundle_id)

    def unregister(self, token: str, timestamp_ms: int | None = None) -> None:
        """From now on `token` answers 410 Unregistered (the app was removed)."""
        self.unregistered[token] = timestamp_ms or int(self.clock() * 1000)

    # --- StandIn ------------------------------------------------------------------------

    def initial_max_streams(self, connection: ConnectionInfo) -> int | None:
        # Apple: without a provider certificate "only one stream is allowed on the
        # connection until you send a push notification request with a valid
        # authentication token".
        if self.max_concurrent_streams is not None:
            return self.max_concurrent_streams
        return None if connection.peer_cert else 1

    def settings_after(self, request: Request, reply: Reply) -> dict[int, int] | None:
        state = request.connection.state
        if reply.status == 200 and not request.connection.peer_cert and not state.get("opened"):
            state["opened"] = True
            return {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: OPEN_STREAM_LIMIT}
        return None

    def kind_of(self, request: Request) -> str:
        """apns-push-type as sent (Apple's default when absent is "alert")."""
        return (request.header("apns-push-type") or "alert") if self.is_push(request) else ""

    def token_of(self, request: Request) -> str:
        return request.path.removeprefix("/3/device/")

    def scripted_answer(self, request: Request, answer: Answer) -> Reply:
        reason = answer.reason or ("" if answer.status == 200 else "InternalServerError")
        if answer.status == 200:
            return self._ok(request)
        headers: list[tuple[str, str]] = [
            ("apns-id", request.header("apns-id") or str(uuid.uuid4()))
        ]
        if answer.retry_after is not None:
            headers.append(("retry-after", str(int(answer.retry_after))))
        body: dict[str, Any] = {"reason": reason}
        if answer.status == 410:
            body["timestamp"] = int(self.clock() * 1000)
        return Reply(answer.status, tuple(headers), json.dumps(body).encode(), reason=reason)

    def answer(self, request: Request) -> Reply:
        try:
            self._check(request)
        except _Refused as refused:
            return self.scripted_answer(request, Answer(refused.status, refused.reason))
        token = self.token_of(request)
        if token in self.unregistered:
            headers = (("apns-id", request.header("apns-id") or str(uuid.uuid4())),)
            body = {"reason": "Unregistered", "timestamp": self.unregistered[token]}
            return Reply(410, headers, json.dumps(body).encode(), reason="Unregistered")
        return self._ok(request)

    def _ok(self, request: Request) -> Reply:
        apns_id = request.header("apns-id") or str(uuid.uuid4())
        try:
            payload = json.loads(request.body)
        except ValueError:
            payload = None
        return Reply(200, (("apns-id", apns_id),), b"", delivered=(self.token_of(request), payload))

    # --- Apple's checks ------------------------------------------------------------------

    def _check(self, request: Request) -> None:
        if request.method != "POST":
            raise _Refused("MethodNotAllowed")
        if not request.path.startswith("/3/device/"):
            raise _Refused("BadPath")
        token = self.token_of(request)
        if not token:
            raise _Refused("MissingDeviceToken")
        if not _HEX.fullmatch(token):
            raise _Refused("BadDeviceToken")
        names = [name for name, _ in request.headers]
        if len(names) != len(set(names)):
            raise _Refused("DuplicateHeaders")
        topic = request.header("apns-topic")
        if not topic:
            raise _Refused("MissingTopic")
        push_type = request.header("apns-push-type") or "alert"
        if push_type not in PUSH_TYPES:
            raise _Refused("InvalidPushType")
        bundle = topic.removesuffix(".voip")
        if (push_type == "voip") != topic.endswith(".voip"):
            raise _Refused("InvalidPushType" if push_type == "voip" else "BadTopic")
        if self.topics is not None and bundle not in self.topics:
            raise _Refused("TopicDisallowed")
        priority = request.header("apns-priority")
        if priority is not None and priority not in ("1", "5", "10"):
            raise _Refused("BadPriority")
        expiration = request.header("apns-expiration")
        if expiration is not None and not expiration.isdigit():
            raise _Refused("BadExpirationDate")
        collapse = request.header("apns-collapse-id")
        if collapse is not None and len(collapse.encode()) > 64:
            raise _Refused("BadCollapseId")
        apns_id = request.header("apns-id")
        if apns_id is not None and not _UUID.fullmatch(apns_id):
            raise _Refused("BadMessageId")
        if not request.body:
            raise _Refused("PayloadEmpty")
        limit = MAX_VOIP_PAYLOAD if push_type == "voip" else MAX_PAYLOAD
        if len(request.body) > limit:
            raise _Refused("PayloadTooLarge")
        self._check_auth(request, bundle)

    def _check_auth(self, request: Request, bundle: str) -> None:
        authorization = request.header("authorization")
        if authorization is not None:
            self._check_token(request, authorization)
            return
        cert = request.connection.peer_cert
        if cert:
            subject = dict(item for rdn in cert.get("subject", ()) for item in rdn)
            name = str(subject.get("commonName", ""))
            if name.partition(": ")[2] != bundle:
                raise _Refused("TopicDisallowed")
            return
        if self.require_auth:
            raise _Refused("MissingProviderToken")

    def _check_token(self, request: Request, authorization: str) -> None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _Refused("MissingProviderToken")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _Refused("InvalidProviderToken") from None
        if header.get("alg") != "ES256" or header.get("kid") not in self._keys:
            raise _Refused("InvalidProviderToken")
        team_id, public = self._keys[header["kid"]]
        try:
            claims = jwt.decode(
                token,
                public,
                algorithms=["ES256"],
                options={"verify_iat": False, "verify_exp": False, "verify_nbf": False},
            )
        except jwt.InvalidTokenError:
            raise _Refused("InvalidProviderToken") from None
        if claims.get("iss") != team_id:
            raise _Refused("InvalidProviderToken")
        iat = claims.get("iat")
        if not isinstance(iat, int):
            raise _Refused("InvalidProviderToken")
        now = self.clock()
        if iat > now + 60:
            raise _Refused("InvalidProviderToken")
        if now - iat > TOKEN_MAX_AGE:
            raise _Refused("ExpiredProviderToken")
        state = request.connection.state
        previous = state.get("jwt")
        if previous is not None and previous != token:
            if (
                now - state["jwt_since"] < TOKEN_MIN_INTERVAL
                and iat - state["jwt_iat"] < TOKEN_MIN_INTERVAL
            ):
                raise _Refused("TooManyProviderTokenUpdates")
        if previous != token:
            state["jwt"] = token
            state["jwt_since"] = now
            state["jwt_iat"] = iat


# --- running alone ------------------------------------------------------------------------


def _write_credentials(server: FakeApns, folder: Path, topic: str) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    ca_file = server.authority.write_ca(folder / "ca.pem")
    client = folder / "client.pem"
    client.write_text(server.client_pem(topic))
    client.chmod(0o600)
    p8, key_id, team_id = server.new_signing_key()
    key_file = folder / f"AuthKey_{key_id}.p8"
    key_file.write_text(p8)
    key_file.chmod(0o600)
    return {
        "ca_file": ca_file,
        "client_pem": str(client),
        "p8": str(key_file),
        "key_id": key_id,
        "team_id": team_id,
    }


async def _main(args: argparse.Namespace) -> None:
    def delivered(token: str, headers: dict[str, str], payload: Any) -> None:
        print(
            json.dumps(
                {"delivered": token[:6] + "…" + token[-4:], "topic": headers.get("apns-topic")}
            ),
            flush=True,
        )

    server = FakeApns(
        topics={args.topic} if args.topic else None, port=args.port, on_delivered=delivered
    )
    folder = Path(args.out or tempfile.mkdtemp(prefix="fake-apns-"))
    files = _write_credentials(server, folder, args.topic or "com.example.app")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        print(json.dumps({"port": port, "host": f"127.0.0.1:{port}", **files}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A strict local APNs stand-in (HTTP/2 + TLS).")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--topic", default="com.example.app", help="the bundle id accepted ('' = any)"
    )
    parser.add_argument("--out", help="folder for ca.pem, client.pem and the .p8 key")
    args = parser.parse_args(argv)
    try:
        trio.run(_main, args)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
