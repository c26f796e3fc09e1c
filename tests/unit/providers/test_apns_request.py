"""APNs request building: headers, topic, payload, size limits (Apple's documented rules)."""

from __future__ import annotations

import json

import pytest

from pusher_trio.model import App, AppleCertAuth, Device, PushMessage, Rejected
from pusher_trio.providers import apns
from pusher_trio.providers.http import HttpRequest

NOW = 1_800_000_000.0
TOKEN = "ab" * 32


def make_app(**kw: object) -> App:
    fields: dict[str, object] = {
        "app_id": "com.example.phone",
        "type": "apple",
        "auth": AppleCertAuth("pem"),
    }
    fields.update(kw)
    return App(**fields)  # type: ignore[arg-type]


def make_device(**kw: object) -> Device:
    fields: dict[str, object] = {
        "aor": "alice@example.com",
        "device_id": "d1",
        "type": "apple",
        "app": "com.example.phone",
        "token": TOKEN,
    }
    fields.update(kw)
    return Device(**fields)  # type: ignore[arg-type]


MESSAGE = PushMessage(call_id="call-1@host", caller_number="+15551234", caller_name="Bob")


def build(
    app: App | None = None,
    device: Device | None = None,
    message: PushMessage = MESSAGE,
    jwt: str | None = None,
) -> HttpRequest:
    request = apns.build_request(
        app or make_app(), device or make_device(), message, jwt, NOW, NOW + 20.4
    )
    assert isinstance(request, HttpRequest)
    return request


def test_request_path_and_method() -> None:
    request = build()
    assert request.method == "POST"
    assert request.path == f"/3/device/{TOKEN}"


def test_token_is_normalized_to_lowercase_hex() -> None:
    request = build(device=make_device(token="<" + "AB CD" * 16 + ">"))
    assert request.path == "/3/device/" + "abcd" * 16


def test_alert_push_headers() -> None:
    request = build()
    assert request.header("apns-push-type") == "alert"
    assert request.header("apns-topic") == "com.example.phone"
    assert request.header("apns-priority") == "10"
    assert request.header("apns-expiration") == str(int(NOW + 20.4))
    assert request.header("apns-collapse-id") == "call-1@host"
    apns_id = request.header("apns-id")
    assert apns_id is not None and apns_id == apns_id.lower() and len(apns_id) == 36
    assert request.header("authorization") is None


def test_voip_app_appends_voip_to_topic_and_has_no_collapse_id() -> None:
    request = build(app=make_app(push_type="voip"))
    assert request.header("apns-push-type") == "voip"
    assert request.header("apns-topic") == "com.example.phone.voip"
    assert request.header("apns-collapse-id") is None


def test_device_push_type_wins_over_app() -> None:
    assert (
        build(device=make_device(push_type="voip")).header("apns-topic") == "com.example.phone.voip"
    )
    alert = build(app=make_app(push_type="voip"), device=make_device(push_type="alert"))
    assert alert.header("apns-topic") == "com.example.phone"


def test_app_id_with_voip_suffix_is_not_doubled() -> None:
    request = build(app=make_app(app_id="com.example.phone.voip", push_type="voip"))
    assert request.header("apns-topic") == "com.example.phone.voip"


def test_collapse_id_longer_than_64_bytes_is_left_out() -> None:
    request = build(message=PushMessage(call_id="x" * 65))
    assert request.header("apns-collapse-id") is None
    assert build(message=PushMessage(call_id="x" * 64)).header("apns-collapse-id") == "x" * 64


def test_token_auth_adds_bearer() -> None:
    assert build(jwt="abc.def.ghi").header("authorization") == "bearer abc.def.ghi"


def test_default_alert_payload_is_kazoo_compatible() -> None:
    payload = json.loads(build().body)
    assert payload == {
        "aps": {"alert": {"loc-key": "IC_MSG", "loc-args": ["Bob"]}, "sound": "default"},
        "call-id": "call-1@host",
        "caller-id-number": "+15551234",
        "caller-id-name": "Bob",
        "utc_unix_timestamp_ms": int(NOW * 1000),
    }


def test_voip_payload_has_no_alert() -> None:
    payload = json.loads(build(app=make_app(push_type="voip")).body)
    assert "aps" not in payload
    assert payload["call-id"] == "call-1@host"


def test_caller_number_when_no_name() -> None:
    payload = json.loads(build(message=PushMessage(call_id="c", caller_number="100")).body)
    assert payload["aps"]["alert"]["loc-args"] == ["100"]


def test_kazoo_overrides() -> None:
    message = PushMessage(
        call_id="c",
        caller_number="100",
        alert_key="MISSED",
        alert_params=("a", "b"),
        sound="ring.caf",
        payload={"aps": {"badge": 1}, "extra": "x"},
    )
    payload = json.loads(build(message=message).body)
    assert payload["aps"] == {
        "alert": {"loc-key": "MISSED", "loc-args": ["a", "b"]},
        "sound": "ring.caf",
        "badge": 1,
    }
    assert payload["extra"] == "x"


def test_template_replaces_default_payload() -> None:
    template = '{"aps": {"alert": "Call from {caller}"}, "id": "{call_id}", "ts": "{timestamp_ms}", "lit": "{{x}}"}'
    payload = json.loads(build(app=make_app(payload_template=template)).body)
    assert payload == {
        "aps": {"alert": "Call from Bob"},
        "id": "call-1@host",
        "ts": int(NOW * 1000),
        "lit": "{x}",
    }


def test_bad_template_is_rejected_not_raised() -> None:
    outcome = apns.build_request(
        make_app(payload_template='{"a": "{nope}"}'), make_device(), MESSAGE, None, NOW, NOW
    )
    assert isinstance(outcome, Rejected) and "nope" in outcome.reason


@pytest.mark.parametrize(("push_type", "limit"), [("alert", 4096), ("voip", 5120)])
def test_payload_size_limit(push_type: str, limit: int) -> None:
    app = make_app(push_type=push_type)
    base = len(build(app=app, message=PushMessage(payload={"pad": ""})).body)
    fits = PushMessage(payload={"pad": "x" * (limit - base)})
    assert len(build(app=app, message=fits).body) == limit
    too_big = PushMessage(payload={"pad": "x" * (limit - base + 1)})
    outcome = apns.build_request(app, make_device(), too_big, None, NOW, NOW + 20)
    assert isinstance(outcome, Rejected) and "PayloadTooLarge" in outcome.reason


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("api.push.apple.com", ("api.push.apple.com", 443)),
        ("api.sandbox.push.apple.com:2197", ("api.sandbox.push.apple.com", 2197)),
        ("127.0.0.1:8443", ("127.0.0.1", 8443)),
        ("[::1]:9000", ("::1", 9000)),
        ("[::1]", ("::1", 443)),
    ],
)
def test_split_host(host: str, expected: tuple[str, int]) -> None:
    assert apns.split_host(host) == expected


def test_unserialisable_payload_is_rejected() -> None:
    outcome = apns.build_request(
        make_app(), make_device(), PushMessage(payload={"x": object()}), None, NOW, NOW
    )
    assert isinstance(outcome, Rejected) and "not JSON" in outcome.reason


@pytest.mark.parametrize("host", ["h:0", "h:70000", "[::1]:99999", ":443"])
def test_bad_host_port(host: str) -> None:
    with pytest.raises(ValueError, match="bad APNs host"):
        apns.split_host(host)


@pytest.mark.parametrize(
    ("token", "sent"),
    [
        ("ab12" * 16, "ab12" * 16),  # RFC 8599 phones: already what APNs wants
        ("AB12" * 16, "ab12" * 16),
        ("<ab12 AB12 ab12>", "ab12ab12ab12"),
        ("not-hex token", "not-hex token"),  # left as it is: APNs answers BadDeviceToken
    ],
)
def test_tokens_are_sent_as_lowercase_hex(token: str, sent: str) -> None:
    assert apns.normalize_token(token) == sent
