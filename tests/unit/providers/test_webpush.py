"""Web Push, pure side: subscriptions, VAPID, encryption, answers; and the stand-in's
strictness, checked on requests built here (no network: `FakeWebPush.answer`)."""

from __future__ import annotations

import json
import os

import attrs
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pusher_trio.model import (
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
from pusher_trio.providers import webpush
from pusher_trio.providers.http import HttpRequest
from pusher_trio.standins.common import ConnectionInfo, Request
from pusher_trio.standins.fake_webpush import BrowserSubscription, FakeWebPush

NOW = 1_800_000_000.0
SUBJECT = "mailto:ops@example.com"
KEY = webpush.generate_vapid_key()
APP = App("org.example.web", "webpush", WebPushAuth(KEY, SUBJECT))
MESSAGE = PushMessage(call_id="c-1", caller_number="200")


def make_server() -> FakeWebPush:
    server = FakeWebPush(port=8443, clock=lambda: NOW)
    return server


def device_for(browser: BrowserSubscription) -> Device:
    return Device(
        aor="a@example.com",
        device_id="b",
        type="webpush",
        app=APP.app_id,
        token=browser.endpoint,
        extra={"p256dh": browser.p256dh, "auth": browser.auth},
    )


def build(server: FakeWebPush, browser: BrowserSubscription, now: float = NOW) -> HttpRequest:
    cache = webpush.VapidTokenCache()
    vapid = cache.header(APP.auth, server.origin, now)  # type: ignore[arg-type]
    request = webpush.build_request(
        APP,
        device_for(browser),
        MESSAGE,
        vapid,
        now,
        now + 20,
        ec.generate_private_key(ec.SECP256R1()),
        os.urandom(16),
    )
    assert isinstance(request, HttpRequest)
    return request


def as_received(request: HttpRequest, **changes: object) -> Request:
    headers = dict(request.headers)
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = str(value)
    body = changes.get("body", request.body)
    headers.pop("body", None)
    return Request(
        "POST",
        request.path,
        list(headers.items()),
        body,
        1,
        ConnectionInfo(1, None),  # type: ignore[arg-type]
    )


def test_vapid_public_key_is_the_65_octet_point_base64url() -> None:
    public = webpush.vapid_public_key(KEY)
    assert "=" not in public
    raw = webpush.b64url_decode(public)
    assert len(raw) == 65 and raw[0] == 4


def test_request_headers_and_vapid_claims() -> None:
    server = make_server()
    browser = server.subscribe()
    request = build(server, browser)
    assert request.path.startswith("/push/")
    assert request.header("urgency") == "high"
    assert request.header("ttl") == "20"
    assert request.header("content-encoding") == "aes128gcm"
    scheme, _, params = request.header("authorization").partition(" ")  # type: ignore[union-attr]
    assert scheme == "vapid"
    fields = dict(p.strip().split("=", 1) for p in params.split(","))
    assert fields["k"] == webpush.vapid_public_key(KEY)
    claims = jwt.decode(fields["t"], options={"verify_signature": False})
    assert claims == {"aud": "https://127.0.0.1:8443", "exp": int(NOW) + 12 * 3600, "sub": SUBJECT}


def test_vapid_token_is_reused_until_an_hour_before_it_expires() -> None:
    cache = webpush.VapidTokenCache()
    auth = APP.auth
    assert isinstance(auth, WebPushAuth)
    first = cache.header(auth, "https://push.example", NOW)
    assert cache.header(auth, "https://push.example", NOW + 10 * 3600) == first
    assert cache.header(auth, "https://other.example", NOW) != first
    assert cache.header(auth, "https://push.example", NOW + 11 * 3600) != first
    assert cache.generated == 3


def test_stand_in_delivers_what_it_decrypts() -> None:
    server = make_server()
    browser = server.subscribe(webpush.vapid_public_key(KEY))
    reply = server.answer(as_received(build(server, browser)))
    assert reply.status == 201
    assert reply.delivered is not None
    assert reply.delivered[1]["call-id"] == "c-1"


@pytest.mark.parametrize(
    ("changes", "status", "words"),
    [
        ({"authorization": None}, 401, "vapid"),
        ({"ttl": None}, 400, "TTL"),
        ({"ttl": "-5"}, 400, "TTL"),
        ({"urgency": "urgent"}, 400, "Urgency"),
        ({"content_encoding": "aesgcm"}, 415, "aes128gcm"),
        ({"body": b"\0" * 120}, 400, "decrypt"),
        ({"body": b"\0" * 5000}, 413, "4096"),
    ],
)
def test_stand_in_refuses_what_a_push_service_refuses(
    changes: dict[str, object], status: int, words: str
) -> None:
    server = make_server()
    browser = server.subscribe()
    reply = server.answer(as_received(build(server, browser), **changes))
    assert (reply.status, reply.delivered) == (status, None)
    assert words in reply.reason


def test_stand_in_refuses_a_jwt_for_another_origin_or_too_long_lived() -> None:
    server = make_server()
    browser = server.subscribe()
    key = webpush.load_vapid_key(KEY)
    k = webpush.vapid_public_key(KEY)
    request = build(server, browser)
    for claims, words in (
        ({"aud": "https://elsewhere.example", "exp": int(NOW) + 60, "sub": SUBJECT}, "Audience"),
        ({"aud": server.origin, "exp": int(NOW) + 25 * 3600, "sub": SUBJECT}, "24 hours"),
        ({"aud": server.origin, "exp": int(NOW) + 60, "sub": "ops"}, "mailto"),
        ({"aud": server.origin, "exp": int(NOW) + 60}, "sub"),
    ):
        token = jwt.encode(claims, key, algorithm="ES256")
        reply = server.answer(as_received(request, authorization=f"vapid t={token}, k={k}"))
        assert reply.status == 401 and words in reply.reason, (claims, reply.reason)


def test_subscription_keys_are_checked() -> None:
    server = make_server()
    browser = server.subscribe()
    good = device_for(browser)
    for extra, words in (
        ({"p256dh": browser.p256dh}, "auth"),
        ({"p256dh": browser.p256dh[:-4], "auth": browser.auth}, "p256dh"),
        ({"p256dh": "!!", "auth": browser.auth}, "base64url"),
    ):
        with pytest.raises(webpush.SubscriptionError, match=words):
            webpush.parse_subscription(attrs.evolve(good, extra=extra))
    with pytest.raises(webpush.SubscriptionError, match="https"):
        webpush.parse_subscription(attrs.evolve(good, token="http://push.example/x"))


def test_too_large_payload_is_rejected_before_encryption() -> None:
    server = make_server()
    browser = server.subscribe()
    big = PushMessage(call_id="c", payload={"x": "y" * 5000})
    result = webpush.build_request(
        APP,
        device_for(browser),
        big,
        "vapid t=x, k=y",
        NOW,
        NOW + 20,
        ec.generate_private_key(ec.SECP256R1()),
        os.urandom(16),
    )
    assert isinstance(result, Rejected) and "too large" in result.reason


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (201, (("location", "/m/1"),), Delivered("/m/1")),
        (404, (), TokenInvalid),
        (410, (), TokenInvalid),
        (401, (), AuthFailed),
        (403, (), AuthFailed),
        (413, (), Rejected),
        (400, (), Rejected),
        (429, (("retry-after", "7"),), RetryLater),
        (502, (), RetryLater),
    ],
)
def test_answers(status: int, headers: tuple[tuple[str, str], ...], expected: object) -> None:
    outcome = webpush.interpret_response(status, headers, b"why")
    if isinstance(expected, type):
        assert isinstance(outcome, expected)
    else:
        assert outcome == expected
    if status == 429:
        assert isinstance(outcome, RetryLater) and outcome.after == 7.0


def test_payload_json_is_what_the_browser_reads() -> None:
    server = make_server()
    browser = server.subscribe()
    reply = server.answer(as_received(build(server, browser)))
    assert reply.delivered is not None
    assert json.dumps(reply.delivered[1])
