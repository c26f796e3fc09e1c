"""FCM HTTP v1: message shape, OAuth assertion, access-token cache, Google's answers."""

from __future__ import annotations

import json
import urllib.parse

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from pusher_trio.model import (
    App,
    AuthFailed,
    Delivered,
    Device,
    FirebaseAuth,
    PushMessage,
    Rejected,
    RetryLater,
    TokenInvalid,
)
from pusher_trio.providers import fcm
from pusher_trio.providers.http import HttpRequest
from pusher_trio.standins.certs import make_service_account

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def account() -> tuple[dict[str, str], str]:
    return make_service_account("my-project", "https://oauth.example/token")


def make_app(account: dict[str, str], template: str | None = None) -> App:
    return App(
        app_id="com.example.droid",
        type="firebase",
        auth=FirebaseAuth(account),
        payload_template=template,
    )


DEVICE = Device(
    aor="a@b", device_id="d", type="firebase", app="com.example.droid", token="fcm-token-1"
)
MESSAGE = PushMessage(call_id="c1", caller_number="100", caller_name="Bob")


def build(
    account: dict[str, str], message: PushMessage = MESSAGE, template: str | None = None
) -> HttpRequest:
    request = fcm.build_request(
        make_app(account, template), DEVICE, message, "ya29.tok", NOW, NOW + 19.6
    )
    assert isinstance(request, HttpRequest)
    return request


def test_send_request(account: tuple[dict[str, str], str]) -> None:
    request = build(account[0])
    assert request.method == "POST"
    assert request.path == "/v1/projects/my-project/messages:send"
    assert request.header("authorization") == "Bearer ya29.tok"
    body = json.loads(request.body)
    assert body == {
        "message": {
            "token": "fcm-token-1",
            "data": {
                "call-id": "c1",
                "caller-id-number": "100",
                "caller-id-name": "Bob",
                "utc_unix_timestamp_ms": str(int(NOW * 1000)),
            },
            "android": {"priority": "HIGH", "ttl": "19s"},
        }
    }


def test_all_data_values_are_strings(account: tuple[dict[str, str], str]) -> None:
    message = PushMessage(call_id="c", payload={"n": 5, "obj": {"a": [1]}, "flag": True})
    data = json.loads(build(account[0], message).body)["message"]["data"]
    assert all(isinstance(v, str) for v in data.values())
    assert data["n"] == "5" and data["obj"] == '{"a":[1]}' and data["flag"] == "true"


def test_ttl_never_negative(account: tuple[dict[str, str], str]) -> None:
    request = fcm.build_request(make_app(account[0]), DEVICE, MESSAGE, "t", NOW, NOW - 5)
    assert isinstance(request, HttpRequest)
    assert json.loads(request.body)["message"]["android"]["ttl"] == "0s"


def test_template(account: tuple[dict[str, str], str]) -> None:
    data = json.loads(
        build(account[0], template='{"who": "{caller}", "ts": "{timestamp_ms}"}').body
    )["message"]["data"]
    assert data == {"who": "Bob", "ts": str(int(NOW * 1000))}


def test_payload_too_large(account: tuple[dict[str, str], str]) -> None:
    outcome = fcm.build_request(
        make_app(account[0]), DEVICE, PushMessage(payload={"x": "y" * 5000}), "t", NOW, NOW
    )
    assert isinstance(outcome, Rejected) and "too large" in outcome.reason


def test_assertion_claims(account: tuple[dict[str, str], str]) -> None:
    sa, public_pem = account
    url, body = fcm.token_request(sa, NOW)
    assert url == "https://oauth.example/token"
    form = urllib.parse.parse_qs(body.decode())
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    assertion = form["assertion"][0]
    assert jwt.get_unverified_header(assertion)["kid"] == sa["private_key_id"]
    public = serialization.load_pem_public_key(public_pem.encode())
    claims = jwt.decode(
        assertion,
        public,  # type: ignore[arg-type]
        algorithms=["RS256"],
        audience="https://oauth.example/token",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims == {
        "iss": sa["client_email"],
        "scope": "https://www.googleapis.com/auth/firebase.messaging",
        "aud": "https://oauth.example/token",
        "iat": int(NOW),
        "exp": int(NOW) + 3600,
    }


def test_access_token_cache_until_5_minutes_before_expiry() -> None:
    cache = fcm.AccessTokenCache()
    assert cache.get(NOW) is None
    cache.store("tok", 3600, NOW)
    assert cache.get(NOW + 3600 - 301) == "tok"
    assert cache.get(NOW + 3600 - 300) is None


def test_access_token_invalidate_only_the_refused_one() -> None:
    cache = fcm.AccessTokenCache()
    cache.store("new", 3600, NOW)
    cache.invalidate("old")
    assert cache.get(NOW) == "new"
    cache.invalidate("new")
    assert cache.get(NOW) is None


def test_parse_token_response() -> None:
    assert fcm.parse_token_response(
        200, b'{"access_token":"a","expires_in":3599,"token_type":"Bearer"}'
    ) == ("a", 3599.0)
    bad = fcm.parse_token_response(
        400, b'{"error":"invalid_grant","error_description":"Invalid JWT Signature."}'
    )
    assert isinstance(bad, AuthFailed) and "Invalid JWT Signature" in bad.reason
    assert isinstance(fcm.parse_token_response(200, b"nope"), AuthFailed)


def error(
    status: int,
    google_status: str,
    code: str | None = None,
    message: str = "m",
    fields: list[str] | None = None,
) -> bytes:
    details: list[dict[str, object]] = []
    if code:
        details.append({"@type": fcm.FCM_ERROR_TYPE, "errorCode": code})
    if fields:
        details.append(
            {
                "@type": fcm.BAD_REQUEST_TYPE,
                "fieldViolations": [{"field": f, "description": "x"} for f in fields],
            }
        )
    return json.dumps(
        {"error": {"code": status, "message": message, "status": google_status, "details": details}}
    ).encode()


def test_200_delivered() -> None:
    assert fcm.interpret_response(200, (), b'{"name":"projects/p/messages/0:1"}') == Delivered(
        "projects/p/messages/0:1"
    )


def test_unregistered_invalidates() -> None:
    outcome = fcm.interpret_response(404, (), error(404, "NOT_FOUND", "UNREGISTERED"))
    assert isinstance(outcome, TokenInvalid) and "UNREGISTERED" in outcome.reason


def test_invalid_argument_about_the_token_invalidates() -> None:
    by_field = error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", fields=["message.token"])
    assert isinstance(fcm.interpret_response(400, (), by_field), TokenInvalid)
    by_text = error(
        400,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        message="The registration token is not a valid FCM registration token",
    )
    assert isinstance(fcm.interpret_response(400, (), by_text), TokenInvalid)


def test_invalid_argument_about_something_else_is_rejected() -> None:
    other = error(
        400,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        message="Invalid value at 'message.android.ttl'",
        fields=["message.android.ttl"],
    )
    assert isinstance(fcm.interpret_response(400, (), other), Rejected)


@pytest.mark.parametrize(
    ("status", "code"), [(429, "QUOTA_EXCEEDED"), (503, "UNAVAILABLE"), (500, "INTERNAL")]
)
def test_retryable_honour_retry_after(status: int, code: str) -> None:
    outcome = fcm.interpret_response(status, (("retry-after", "12"),), error(status, code, code))
    assert isinstance(outcome, RetryLater) and outcome.after == 12.0
    assert isinstance(fcm.interpret_response(status, (), b""), RetryLater)


@pytest.mark.parametrize(
    ("status", "code"), [(403, "SENDER_ID_MISMATCH"), (401, "THIRD_PARTY_AUTH_ERROR")]
)
def test_sender_and_third_party_errors_are_rejected(status: int, code: str) -> None:
    assert isinstance(
        fcm.interpret_response(status, (), error(status, "PERMISSION_DENIED", code)), Rejected
    )


def test_401_asks_for_a_new_access_token() -> None:
    outcome = fcm.interpret_response(
        401,
        (),
        error(401, "UNAUTHENTICATED", message="Request had invalid authentication credentials."),
    )
    assert isinstance(outcome, fcm.RefreshAccessToken)


def test_403_without_code_is_auth_failure() -> None:
    assert isinstance(fcm.interpret_response(403, (), error(403, "PERMISSION_DENIED")), AuthFailed)


def test_garbage_answers_do_not_raise() -> None:
    assert isinstance(fcm.interpret_response(400, (), b"<html>"), Rejected)
    assert isinstance(fcm.interpret_response(200, (), b"[]"), Delivered)


def test_unserialisable_payload_is_rejected(account: tuple[dict[str, str], str]) -> None:
    outcome = fcm.build_request(
        make_app(account[0]), DEVICE, PushMessage(payload={"x": object()}), "t", NOW, NOW
    )
    assert isinstance(outcome, Rejected) and "not JSON" in outcome.reason


def test_missed_call_is_a_notification_collapsed_by_call_id(
    account: tuple[dict[str, str], str],
) -> None:
    """DESIGN §12: Android shows it by itself (Kazoo-style loc-key), one per call."""
    missed = PushMessage(call_id="c1", caller_number="100", caller_name="Bob", kind="missed_call")
    body = json.loads(build(account[0], missed).body)["message"]
    assert body["android"]["collapse_key"] == "c1"
    assert body["android"]["notification"] == {
        "tag": "c1",
        "body_loc_key": "MC_MSG",
        "body_loc_args": ["Bob"],
    }
    assert body["data"]["call-id"] == "c1"
    # a wake-up stays data-only
    assert "notification" not in json.loads(build(account[0]).body)["message"]["android"]


def test_missed_call_template_without_loc_key_shows_the_caller(
    account: tuple[dict[str, str], str],
) -> None:
    missed = PushMessage(call_id="", caller_number="100", kind="missed_call")
    body = json.loads(build(account[0], missed, template='{"t": "{kind}"}').body)["message"]
    assert body["data"] == {"t": "missed_call"}
    assert body["android"]["notification"] == {"body": "100"}
    assert "collapse_key" not in body["android"]
