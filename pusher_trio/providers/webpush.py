"""Web Push (RFC 8030) for browser and WebRTC SIP clients: pure request building and answers.

RFC 8599 registers `webpush` as a PNS: the device's push subscription is its push
resource URL (the token here) plus the browser's `p256dh` public key and `auth`
secret (`Device.extra`). A push is a POST of the payload encrypted for that browser
(RFC 8291, `Content-Encoding: aes128gcm`, RFC 8188) and signed by the application
server's VAPID key (RFC 8292: ES256 JWT with `aud` = the push service's origin, `exp`
at most 24 h ahead, `sub` a contact URI).

Pure: keys, time and the per-message ephemeral key come in as arguments; the trio
shell (`Providers`) sends the request over the same HTTP/2 transport as APNs/FCM.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Sequence

import attrs
import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..model import (
    App,
    AuthFailed,
    Delivered,
    Device,
    PushMessage,
    Rejected,
    RetryLater,
    TokenInvalid,
    WebPushAuth,
)
from .http import HttpRequest, header, parse_retry_after
from .payload import TemplateError, build_payload

# RFC 8030 §7.2: a push service MUST support 4096 octets of payload (after encryption);
# aes128gcm adds a 86-octet header (salt, rs, idlen, 65-octet key id), a padding
# delimiter and a 16-octet tag to one record.
MAX_ENCRYPTED = 4096
ENCRYPTION_OVERHEAD = 86 + 1 + 16
MAX_PLAINTEXT = MAX_ENCRYPTED - ENCRYPTION_OVERHEAD
# RFC 8292 §2: exp no more than 24 hours from the request. 12 h leaves room for a
# push service whose clock is ahead; a token is reused until 1 h before it expires.
VAPID_LIFETIME = 12 * 3600
VAPID_RENEW_BEFORE = 3600
MAX_TTL = 2419200  # 28 days, what the largest push services keep a message at most


class SubscriptionError(ValueError):
    """The device's subscription cannot be pushed to (bad URL or keys)."""


def b64url_decode(text: str) -> bytes:
    """Base64url with or without padding (browsers send it unpadded, RFC 8291 §3.2)."""
    text = text.strip()
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@attrs.frozen
class Subscription:
    endpoint: str
    scheme: str
    host: str
    port: int
    path: str
    # The browser's keys (RFC 8291 §3.2); None: the client gave none, the push carries
    # no payload (RFC 8030 §5: "a push message without a payload").
    p256dh: bytes | None = attrs.field(repr=False)
    auth: bytes | None = attrs.field(repr=False)

    @property
    def origin(self) -> str:
        """RFC 8292 §2: the `aud` claim is the origin of the push resource."""
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + ("" if self.port == default else f":{self.port}")


def parse_subscription(device: Device) -> Subscription:
    """The push resource (token) and the browser's keys (extra `p256dh`, `auth`)."""
    try:
        parts = urllib.parse.urlsplit(device.token)
        port = parts.port
    except ValueError as error:
        raise SubscriptionError(f"push resource is not a URL: {error}") from None
    if parts.scheme != "https" or not parts.hostname:
        # RFC 8030 §8: push services are reached over TLS only.
        raise SubscriptionError("push resource must be an https:// URL")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host, port = parts.hostname, port or 443
    if "p256dh" not in device.extra and "auth" not in device.extra:
        return Subscription(device.token, parts.scheme, host, port, path, None, None)
    try:
        p256dh = b64url_decode(device.extra.get("p256dh", ""))
        auth = b64url_decode(device.extra.get("auth", ""))
    except ValueError:
        raise SubscriptionError("p256dh/auth are not base64url") from None
    if len(p256dh) != 65 or p256dh[0] != 4:
        # RFC 8291 §3.2: an uncompressed P-256 point.
        raise SubscriptionError("p256dh must be an uncompressed P-256 point (65 octets)")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    except ValueError:
        raise SubscriptionError("p256dh is not a point on P-256") from None
    if len(auth) != 16:
        raise SubscriptionError("auth must be 16 octets (RFC 8291 §3.2)")
    return Subscription(device.token, parts.scheme, host, port, path, p256dh, auth)


# --- VAPID (RFC 8292) ---------------------------------------------------------------


def load_vapid_key(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("a VAPID key must be an EC P-256 private key")
    return key


def vapid_public_key(pem: str) -> str:
    """The application server key as browsers want it (`applicationServerKey`,
    Feature-Caps `+sip.vapid`): base64url of the uncompressed P-256 point."""
    public = load_vapid_key(pem).public_key()
    return b64url(
        public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )


def app_vapid_public_key(app: App) -> str | None:
    """The public VAPID key of a Web Push app (what `+sip.vapid` in Feature-Caps and the
    browser's `applicationServerKey` carry), None for other apps or an unusable key."""
    if not isinstance(app.auth, WebPushAuth):
        return None
    try:
        return vapid_public_key(app.auth.vapid_key_pem)
    except (ValueError, TypeError):
        return None


def generate_vapid_key() -> str:
    """A new P-256 private key, PKCS#8 PEM (the caller stores it with mode 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def make_vapid_token(
    key: ec.EllipticCurvePrivateKey, audience: str, subject: str, now: float
) -> str:
    claims = {"aud": audience, "exp": int(now) + VAPID_LIFETIME, "sub": subject}
    return jwt.encode(claims, key, algorithm="ES256", headers={"typ": "JWT"})


@attrs.define
class _Vapid:
    token: str
    expires: float


class VapidTokenCache:
    """One JWT per (VAPID key, push service origin), reused until an hour before it
    expires: signing per push would cost an ECDSA signature each (and APNs-style
    providers rate-limit token churn)."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[ec.EllipticCurvePrivateKey, str]] = {}
        self._tokens: dict[tuple[str, str, str], _Vapid] = {}
        self.generated = 0

    def header(self, auth: WebPushAuth, audience: str, now: float) -> str:
        """`Authorization: vapid t=<JWT>, k=<public key>` (RFC 8292 §3)."""
        loaded = self._keys.get(auth.vapid_key_pem)
        if loaded is None:
            loaded = (load_vapid_key(auth.vapid_key_pem), vapid_public_key(auth.vapid_key_pem))
            self._keys[auth.vapid_key_pem] = loaded
        key, public = loaded
        slot = (public, audience, auth.subject)
        entry = self._tokens.get(slot)
        if entry is None or now >= entry.expires - VAPID_RENEW_BEFORE:
            token = make_vapid_token(key, audience, auth.subject, now)
            entry = self._tokens[slot] = _Vapid(token, int(now) + VAPID_LIFETIME)
            self.generated += 1
        return f"vapid t={entry.token}, k={public}"


# --- the request and the answer -----------------------------------------------------------


def encrypt(
    plaintext: bytes, subscription: Subscription, ephemeral: ec.EllipticCurvePrivateKey, salt: bytes
) -> bytes:
    """RFC 8291 §3.4: aes128gcm to the browser's p256dh with its auth secret, one record."""
    assert subscription.p256dh is not None and subscription.auth is not None
    body: bytes = http_ece.encrypt(
        plaintext,
        salt=salt,
        private_key=ephemeral,
        dh=subscription.p256dh,
        auth_secret=subscription.auth,
        version="aes128gcm",
    )
    return body


def build_request(
    app: App,
    device: Device,
    message: PushMessage,
    vapid_header: str,
    now: float,
    expires_at: float,
    ephemeral: ec.EllipticCurvePrivateKey,
    salt: bytes,
) -> HttpRequest | Rejected:
    """POST to the push resource: encrypted payload, `TTL` = time left to wait,
    `Urgency: high` (RFC 8030 §5.3: a call must wake the device now)."""
    if not isinstance(app.auth, WebPushAuth):
        return Rejected(f"app {app.app_id} has no VAPID key")
    try:
        subscription = parse_subscription(device)
    except SubscriptionError as error:
        return Rejected(f"web push subscription: {error}")
    try:
        payload = build_payload(message, "voip", app.payload_template, now)
        plaintext = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    except TemplateError as error:
        return Rejected(f"payload template: {error}")
    except (TypeError, ValueError) as error:
        return Rejected(f"payload is not JSON: {error}")
    if len(plaintext) > MAX_PLAINTEXT:
        return Rejected(f"payload too large: {len(plaintext)} bytes > {MAX_PLAINTEXT}")
    ttl = min(max(int(expires_at - now), 0), MAX_TTL)
    headers = (("authorization", vapid_header), ("ttl", str(ttl)), ("urgency", "high"))
    if subscription.p256dh is None:
        # No keys, no payload: the service worker is woken and registers (RFC 8030 §5).
        return HttpRequest(method="POST", path=subscription.path, headers=headers)
    body = encrypt(plaintext, subscription, ephemeral, salt)
    encoding = (("content-encoding", "aes128gcm"), ("content-type", "application/octet-stream"))
    return HttpRequest("POST", subscription.path, headers + encoding, body)


WebPushAnswer = Delivered | TokenInvalid | RetryLater | AuthFailed | Rejected


def interpret_response(
    status: int, headers: Sequence[tuple[str, str]], body: bytes
) -> WebPushAnswer:
    """RFC 8030 §5: 201 Created (Location: the push message) is delivered; the rest per
    DESIGN §9 and RFC 8030 §7.3 (404/410: the subscription is gone)."""
    text = body[:200].decode(errors="replace").strip()
    detail = f"{status} {text}".strip()
    if status in (200, 201, 202):  # 201 is the RFC's; some services answer 200/202
        return Delivered(header(headers, "location") or "")
    if status in (404, 410):
        return TokenInvalid(f"subscription gone: {detail}")
    if status in (401, 403):
        return AuthFailed(f"VAPID refused: {detail}")
    if status == 413:
        return Rejected(f"payload too large for the push service: {detail}")
    if status == 429 or status >= 500:
        return RetryLater(detail, parse_retry_after(header(headers, "retry-after")))
    return Rejected(detail)
