"""A strict local Web Push service (RFC 8030) over HTTP/2 + TLS, standing in for a browser's.

    server = FakeWebPush()
    port = await nursery.start(server.serve)
    browser = server.subscribe(vapid_public_key)    # what PushManager.subscribe() returns
    device = Device(..., type="webpush", token=browser.endpoint,
                    extra={"p256dh": browser.p256dh, "auth": browser.auth})
    # Providers(ca_file=server.ca_file)

It plays both the push service and the browser: it keeps each subscription's private
key and auth secret, so every push is *decrypted* (RFC 8291, aes128gcm, with
`http_ece`) before it counts as delivered: a test that passes proves the browser would
read the message. Checked on every `POST /push/<id>`, in this order:

* the subscription exists (404) and is not expired (410, `unsubscribe()`);
* `Authorization: vapid t=<JWT>, k=<key>` (RFC 8292 §3; else 401): `k` an uncompressed
  P-256 point, the JWT ES256-signed by it, `aud` = this service's origin, `exp` in the
  future and at most 24 h ahead (§2), `sub` a `mailto:` or `https:` URI; a subscription
  made with an application server key only takes pushes signed by that key (403, §4);
* `TTL` present, a non-negative integer (RFC 8030 §5.2; else 400); `Urgency`, when
  present, one of very-low/low/normal/high (§5.3; else 400);
* `Content-Encoding: aes128gcm` (RFC 8291 §4; else 415), body ≤ 4096 octets (RFC 8030
  §7.2; else 413), and it decrypts with the subscription's keys to JSON (else 400);
  or no body and no Content-Encoding at all: a push without payload (RFC 8030 §5).

201 Created with `Location: /message/<n>` answers a delivered push. Faults are scripted
with `pusher_trio.standins.common` like the APNs/FCM stand-ins (`script(Answer(429,
retry_after=1))`, ...).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import ssl
from typing import Any

import attrs
import h11
import http_ece
import jwt
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pusher_trio.standins.common import Answer, ConnectionInfo, Reply, Request, StandIn

MAX_BODY = 4096  # RFC 8030 §7.2
MAX_VAPID_LIFETIME = 24 * 3600  # RFC 8292 §2
URGENCIES = ("very-low", "low", "normal", "high")
_PUSH_PATH = re.compile(r"/push/([A-Za-z0-9_-]+)")
_VAPID = re.compile(r"vapid\s+(.*)", re.IGNORECASE)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@attrs.frozen
class BrowserSubscription:
    """What a browser hands the SIP client: the endpoint and its public keys."""

    endpoint: str
    p256dh: str  # base64url, unpadded, as PushSubscription.toJSON() gives it
    auth: str


@attrs.define
class _Subscription:
    id: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    application_server_key: str | None
    gone: bool = False


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class FakeWebPush(StandIn):
    name = "fake-webpush"

    def __init__(self, *, http1: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # http1: a push service that offers only HTTP/1.1 (ALPN http/1.1, h11 keep-alive).
        self.http1 = http1
        if http1:
            self._context = self.authority.server_context(alpn=("http/1.1",))
        self.http1_requests = 0
        self._subscriptions: dict[str, _Subscription] = {}
        self._messages = itertools.count(1)
        self.urgencies: list[str | None] = []
        self.ttls: list[int] = []
        self.vapid_claims: list[dict[str, Any]] = []
        self.payloads: list[Any] = []  # decrypted with the subscriber's key, in order

    @property
    def origin(self) -> str:
        return f"https://{self.host}:{self.port}"

    def subscribe(self, application_server_key: str | None = None) -> BrowserSubscription:
        """A new subscription (a browser's PushManager.subscribe()); with a key, only
        pushes signed by it are accepted (RFC 8292 §4)."""
        ident = secrets.token_urlsafe(24)
        key = ec.generate_private_key(ec.SECP256R1())
        auth = secrets.token_bytes(16)
        self._subscriptions[ident] = _Subscription(ident, key, auth, application_server_key)
        public = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return BrowserSubscription(f"{self.origin}/push/{ident}", _b64url(public), _b64url(auth))

    def unsubscribe(self, endpoint: str) -> None:
        """From now on pushes to `endpoint` answer 410 Gone (RFC 8030 §7.3)."""
        self._subscriptions[endpoint.rsplit("/", 1)[-1]].gone = True

    # --- HTTP/1.1 mode ------------------------------------------------------------------

    async def _serve_connection(self, tcp: trio.SocketStream) -> None:
        if not self.http1:
            await super()._serve_connection(tcp)
            return
        stream = trio.SSLStream(tcp, self._context, server_side=True)
        try:
            with trio.fail_after(10):
                await stream.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError, OSError):
            await trio.aclose_forcefully(stream)
            return
        self.connections += 1
        self.open_connections += 1
        self._connections_changed.set()
        info = ConnectionInfo(self.connections, None)
        try:
            await self._serve_http1(stream, info)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            self.open_connections -= 1
            self._connections_changed.set()
            await trio.aclose_forcefully(stream)

    async def _serve_http1(
        self, stream: trio.SSLStream[trio.SocketStream], info: ConnectionInfo
    ) -> None:
        """One request at a time, keep-alive (RFC 9112 §9.3), as an HTTP/1.1 push service."""
        connection = h11.Connection(h11.SERVER)
        while True:
            head: h11.Request | None = None
            body = bytearray()
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    connection.receive_data(bytes(data))
                    continue
                if isinstance(event, h11.ConnectionClosed):
                    return
                if isinstance(event, h11.Request):
                    head = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            assert head is not None
            self.http1_requests += 1
            request = Request(
                head.method.decode(),
                head.target.decode(),
                [(k.decode().lower(), v.decode()) for k, v in head.headers],
                bytes(body),
                self.http1_requests,
                info,
            )
            token = self.token_of(request)
            action = self._take_rule(token)
            if self.latency:
                await trio.sleep(self.latency)
            if isinstance(action, Answer):
                reply = self.scripted_answer(request, action)
            else:
                reply = self.answer(request)
            outcome = f"{reply.status} {reply.reason}".strip()
            self._record(request, token, outcome, reply.delivered is not None)
            headers = [*reply.headers, ("content-length", str(len(reply.body)))]
            out = connection.send(h11.Response(status_code=reply.status, headers=headers))
            out = (out or b"") + (connection.send(h11.Data(data=reply.body)) or b"")
            out += connection.send(h11.EndOfMessage()) or b""
            await stream.send_all(out)
            if reply.delivered is not None and self.on_delivered is not None:
                assert self._nursery is not None
                self._nursery.start_soon(
                    self._notify, token, dict(request.headers), reply.delivered[1]
                )
            if connection.our_state is h11.MUST_CLOSE:
                return
            connection.start_next_cycle()

    # --- StandIn ------------------------------------------------------------------------

    def token_of(self, request: Request) -> str:
        return f"{self.origin}{request.path}"

    def scripted_answer(self, request: Request, answer: Answer) -> Reply:
        if answer.status == 201:
            return self.answer(request)
        headers: list[tuple[str, str]] = [("content-type", "text/plain")]
        if answer.retry_after is not None:
            headers.append(("retry-after", str(int(answer.retry_after))))
        reason = answer.reason or "scripted"
        return Reply(answer.status, tuple(headers), reason.encode(), reason=reason)

    def answer(self, request: Request) -> Reply:
        try:
            endpoint, payload = self._check(request)
        except _Refused as refused:
            body = refused.reason.encode()
            return Reply(
                refused.status, (("content-type", "text/plain"),), body, reason=refused.reason
            )
        location = f"/message/{next(self._messages)}"
        return Reply(201, (("location", location),), delivered=(endpoint, payload))

    # --- the checks ---------------------------------------------------------------------

    def _check(self, request: Request) -> tuple[str, Any]:
        match = _PUSH_PATH.fullmatch(request.path)
        if request.method != "POST" or match is None:
            raise _Refused(404, "no such push resource")
        subscription = self._subscriptions.get(match.group(1))
        if subscription is None:
            raise _Refused(404, "no such subscription")
        if subscription.gone:
            raise _Refused(410, "subscription expired")
        self._check_vapid(request, subscription)
        ttl = request.header("ttl")
        if ttl is None or not ttl.isdigit():
            raise _Refused(400, f"TTL must be a non-negative integer, got {ttl!r}")
        urgency = request.header("urgency")
        if urgency is not None and urgency not in URGENCIES:
            raise _Refused(400, f"bad Urgency {urgency!r}")
        if not request.body and request.header("content-encoding") is None:
            # RFC 8030 §5: a push message without a payload (the service worker wakes).
            self.payloads.append(None)
            self.ttls.append(int(ttl))
            self.urgencies.append(urgency)
            return f"{self.origin}{request.path}", None
        if request.header("content-encoding") != "aes128gcm":
            raise _Refused(415, "Content-Encoding must be aes128gcm")
        if len(request.body) > MAX_BODY:
            raise _Refused(413, f"payload of {len(request.body)} octets > {MAX_BODY}")
        try:
            plaintext = http_ece.decrypt(
                request.body,
                private_key=subscription.private_key,
                auth_secret=subscription.auth,
                version="aes128gcm",
            )
            payload = json.loads(plaintext)
        except Exception as error:  # http_ece raises its own ECEException, ValueError...
            raise _Refused(400, f"cannot decrypt for the subscriber: {error}") from None
        self.payloads.append(payload)
        self.ttls.append(int(ttl))
        self.urgencies.append(urgency)
        return f"{self.origin}{request.path}", payload

    def _check_vapid(self, request: Request, subscription: _Subscription) -> None:
        match = _VAPID.fullmatch((request.header("authorization") or "").strip())
        if match is None:
            raise _Refused(401, "Authorization: vapid t=..., k=... required")
        params: dict[str, str] = {}
        for part in match.group(1).split(","):
            name, _, value = part.strip().partition("=")
            params[name.strip().lower()] = value.strip()
        token, key = params.get("t", ""), params.get("k", "")
        try:
            point = _unb64url(key)
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        except ValueError:
            raise _Refused(401, "k is not a base64url P-256 point") from None
        if len(point) != 65:
            raise _Refused(401, "k must be the uncompressed point")
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                public,
                algorithms=["ES256"],
                audience=self.origin,
                options={"require": ["aud", "exp", "sub"]},
            )
        except jwt.InvalidTokenError as error:
            raise _Refused(401, f"VAPID JWT refused: {error}") from None
        if header.get("alg") != "ES256":
            raise _Refused(401, "VAPID JWT must be ES256")
        now = self.clock()
        if not isinstance(claims["exp"], int) or claims["exp"] > now + MAX_VAPID_LIFETIME:
            raise _Refused(401, "VAPID exp more than 24 hours ahead")
        subject = str(claims["sub"])
        if not subject.startswith(("mailto:", "https:")):
            raise _Refused(401, f"VAPID sub must be mailto: or https:, got {subject!r}")
        if (
            subscription.application_server_key is not None
            and key != subscription.application_server_key
        ):
            raise _Refused(403, "signed by another key than the subscription's")
        self.vapid_claims.append(claims)
