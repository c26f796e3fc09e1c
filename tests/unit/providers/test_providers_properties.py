"""The pure provider functions answer with values for any input: they never raise."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from pusher_trio.model import (
    App,
    AppleCertAuth,
    Device,
    FirebaseAuth,
    PushMessage,
    Rejected,
)
from pusher_trio.providers import apns, fcm
from pusher_trio.providers.http import HttpRequest

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
messages = st.builds(
    PushMessage,
    call_id=st.text(max_size=80),
    caller_number=st.text(max_size=20),
    caller_name=st.text(max_size=40),
    alert_key=st.none() | st.text(max_size=10),
    alert_params=st.none() | st.tuples(st.text(max_size=10)),
    sound=st.none() | st.text(max_size=10),
    payload=st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)
templates = (
    st.none()
    | st.text(max_size=60)
    | st.sampled_from(['{"a": "{caller}"}', '{"a": "{nope}"}', "[1]"])
)
headers = st.lists(
    st.tuples(st.sampled_from(["apns-id", "retry-after", "x"]), st.text(max_size=10)), max_size=3
)


@settings(max_examples=300, deadline=None)
@given(messages, templates, st.sampled_from(["alert", "voip"]), st.text(max_size=70))
def test_apns_build_request_never_raises(
    message: PushMessage, template: str | None, push_type: str, token: str
) -> None:
    app = App(
        "com.example.app",
        "apple",
        AppleCertAuth("pem"),
        push_type=push_type,  # type: ignore[arg-type]
        payload_template=template,
    )
    device = Device("a@b", "d", "apple", "com.example.app", token)
    result = apns.build_request(app, device, message, None, 1_800_000_000.0, 1_800_000_020.0)
    assert isinstance(result, HttpRequest | Rejected)
    if isinstance(result, HttpRequest):
        assert len(result.body) <= (5120 if push_type == "voip" else 4096)


@settings(max_examples=300, deadline=None)
@given(messages, templates)
def test_fcm_build_request_never_raises(message: PushMessage, template: str | None) -> None:
    auth = FirebaseAuth(
        {"project_id": "p", "client_email": "e", "private_key": "k", "token_uri": "u"}
    )
    app = App("com.example.droid", "firebase", auth, payload_template=template)
    device = Device("a@b", "d", "firebase", "com.example.droid", "tok")
    result = fcm.build_request(app, device, message, "access", 1_800_000_000.0, 1_800_000_020.0)
    assert isinstance(result, HttpRequest | Rejected)


error_bodies = st.builds(
    lambda status, message, details: {
        "error": {"status": status, "message": message, "details": details}
    },
    json_values,
    json_values,
    st.lists(
        st.dictionaries(st.sampled_from(["errorCode", "fieldViolations", "@type"]), json_values),
        max_size=3,
    )
    | json_values,
)
bodies = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | error_bodies.map(lambda v: json.dumps(v).encode())
    | st.dictionaries(st.sampled_from(["reason", "timestamp"]), json_values).map(
        lambda v: json.dumps(v).encode()
    )
)


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=100, max_value=599), headers, bodies)
def test_interpret_response_never_raises(
    status: int, header_list: list[tuple[str, str]], body: bytes
) -> None:
    apns.interpret_response(status, header_list, body)
    fcm.interpret_response(status, header_list, body)


def test_odd_google_error_shapes_do_not_raise() -> None:
    for detail in (
        {"fieldViolations": 5},
        {"errorCode": [1]},
        {"fieldViolations": [{"field": None}]},
        7,
    ):
        body = json.dumps({"error": {"details": [detail], "status": 3, "message": {}}}).encode()
        assert isinstance(fcm.interpret_response(400, (), body), Rejected)
