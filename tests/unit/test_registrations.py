"""RegistrationTable (REGISTER <-> response correlation) and push-target extraction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

import sip
from pusher_trio.registrations import (
    Registered,
    RegistrationTable,
    Unregistered,
    extract_target,
)

TOKEN = "740f4707bebcf74f9b7c25d48e3358945f6aa01da5ddb387462c7eaf61bb78ad"
FCM_TOKEN = "dGVzdC10b2tlbjpBUEE5MWJHLXN4eTJ4eEJxd3hLbXZ3X2Rv"
INSTANCE = "urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF"

KAZOO_UA = {
    "MyApp": {
        "regex": "^MyApp",
        "properties": {"Token-App": "app-id", "Token-Type": "pn-type", "Token-ID": "pn-tok"},
    }
}


def register(
    contact: str | list[str] | None,
    *,
    call_id: str = "reg-1@10.0.0.1",
    cseq: int = 1,
    to: str = "<sip:alice@Example.COM>",
    user_agent: str | None = "Linphone/5.2 (iPhone) LinphoneSDK/5.2",
    expires: int | None = None,
    extra: str = "",
) -> bytes:
    contacts = [] if contact is None else [contact] if isinstance(contact, str) else contact
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;rport",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=abc",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *(f"Contact: {c}" for c in contacts),
    ]
    if user_agent is not None:
        lines.append(f"User-Agent: {user_agent}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if extra:
        lines.append(extra)
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def response(
    status: int = 200,
    *,
    call_id: str = "reg-1@10.0.0.1",
    cseq: int = 1,
    method: str = "REGISTER",
    reason: str = "OK",
) -> bytes:
    lines = [
        f"SIP/2.0 {status} {reason}",
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;rport=5060",
        "From: <sip:alice@example.com>;tag=abc",
        "To: <sip:alice@example.com>;tag=xyz",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


RFC8599_APNS = (
    f"<sip:alice@10.0.0.1:5060;transport=udp;pn-provider=apns;pn-prid={TOKEN};"
    f'pn-param=ABCD1234EF.com.example.phone.voip>;+sip.instance="<{INSTANCE}>";expires=600'
)


def apply_all(
    table: RegistrationTable,
    messages: list[bytes],
    now: float = 1000.0,
    user_agents: Mapping[str, Any] | None = None,
) -> list[Registered | Unregistered]:
    events: list[Registered | Unregistered] = []
    for m in messages:
        events += table.apply(sip.parse_message(m), now, user_agents or {})
    return events


def one_device(contact: str, user_agent: str = "Phone", ua_map: Mapping[str, Any] | None = None):  # type: ignore[no-untyped-def]
    (event,) = apply_all(
        RegistrationTable(require_2xx=False),
        [register(contact, user_agent=user_agent)],
        user_agents=ua_map,
    )
    assert isinstance(event, Registered)
    return event.devices[0] if event.devices else None


# --- correlation ----------------------------------------------------------------------


def test_register_alone_changes_nothing() -> None:
    table = RegistrationTable()
    assert apply_all(table, [register(RFC8599_APNS)]) == []
    assert len(table) == 1


def test_register_then_200_registers() -> None:
    table = RegistrationTable()
    events = apply_all(table, [register(RFC8599_APNS), response(200)], now=1234.5)
    (event,) = events
    assert isinstance(event, Registered)
    assert event.aor == "alice@example.com"
    assert event.at == 1234.5
    assert event.contact.startswith("sip:alice@10.0.0.1:5060;transport=udp;pn-provider=apns")
    (d,) = event.devices
    assert (d.aor, d.device_id, d.token, d.last_registered) == (
        "alice@example.com",
        INSTANCE,
        TOKEN,
        1234.5,
    )
    assert len(table) == 0


@pytest.mark.parametrize("status", [401, 403, 407, 500, 503])
def test_failed_register_changes_nothing(status: int) -> None:
    table = RegistrationTable()
    assert apply_all(table, [register(RFC8599_APNS), response(status)]) == []
    assert len(table) == 0
    assert table.statistics()["answered_failure"] == 1


def test_401_then_authenticated_200() -> None:
    table = RegistrationTable()
    challenged = [register(RFC8599_APNS, cseq=1), response(401, cseq=1, reason="Unauthorized")]
    assert apply_all(table, challenged) == []
    authed = register(RFC8599_APNS, cseq=2, extra='Authorization: Digest username="alice"')
    events = apply_all(table, [authed, response(200, cseq=2)])
    assert [type(e) for e in events] == [Registered]


def test_200_of_the_challenged_cseq_does_not_count_twice() -> None:
    table = RegistrationTable()
    apply_all(table, [register(RFC8599_APNS, cseq=1), response(401, cseq=1)])
    assert apply_all(table, [response(200, cseq=1)]) == []


def test_spoofed_2xx_changes_nothing() -> None:
    table = RegistrationTable()
    assert apply_all(table, [response(200, call_id="never-seen")]) == []
    apply_all(table, [register(RFC8599_APNS)])
    assert apply_all(table, [response(200, cseq=7)]) == []  # right Call-ID, other CSeq
    assert apply_all(table, [response(200, call_id="other")]) == []
    assert table.statistics()["unmatched_responses"] == 3
    assert len(table) == 1


def test_never_answered_register_expires_after_32_s() -> None:
    table = RegistrationTable()
    apply_all(table, [register(RFC8599_APNS)], now=1000.0)
    assert apply_all(table, [response(200)], now=1032.0) == []
    assert len(table) == 0
    assert table.statistics()["expired"] == 1


def test_answer_within_ttl_counts() -> None:
    table = RegistrationTable()
    apply_all(table, [register(RFC8599_APNS)], now=1000.0)
    assert len(apply_all(table, [response(200)], now=1031.9)) == 1


def test_provisional_response_keeps_waiting() -> None:
    table = RegistrationTable()
    apply_all(table, [register(RFC8599_APNS), response(100, reason="Trying")])
    assert len(table) == 1
    assert len(apply_all(table, [response(200)])) == 1


def test_response_to_other_method_is_ignored() -> None:
    table = RegistrationTable()
    apply_all(table, [register(RFC8599_APNS)])
    assert apply_all(table, [response(200, method="INVITE")]) == []
    assert len(table) == 1


def test_other_requests_are_ignored() -> None:
    table = RegistrationTable(require_2xx=False)
    options = register(RFC8599_APNS).replace(b"REGISTER sip", b"OPTIONS sip", 1)
    assert apply_all(table, [options]) == []


def test_retransmitted_register_is_one_entry() -> None:
    table = RegistrationTable()
    apply_all(table, [register(RFC8599_APNS)] * 3)
    assert len(table) == 1
    assert len(apply_all(table, [response(200)])) == 1


def test_flood_of_unanswered_registers_is_capped() -> None:
    table = RegistrationTable(max_entries=100)
    for i in range(1000):
        apply_all(table, [register(RFC8599_APNS, call_id=f"flood-{i}")], now=1000.0 + i / 1000)
    assert len(table) == 100
    assert table.statistics()["evicted"] == 900
    # the newest survive, the oldest were evicted
    assert len(apply_all(table, [response(200, call_id="flood-999")], now=1001.0)) == 1
    assert apply_all(table, [response(200, call_id="flood-0")], now=1001.0) == []


def test_table_is_capped_by_bytes_too() -> None:
    table = RegistrationTable(max_bytes=20_000)
    big = [RFC8599_APNS.replace("expires=600", f"x{i}={'y' * 200}") for i in range(3)]
    for i in range(200):
        apply_all(table, [register(big, call_id=f"c{i}")])
        assert table.pending_bytes <= 20_000
    assert 0 < len(table) < 200


def test_require_2xx_false_counts_the_register_alone() -> None:
    table = RegistrationTable(require_2xx=False)
    (event,) = apply_all(table, [register(RFC8599_APNS)])
    assert isinstance(event, Registered)
    assert len(table) == 0
    assert apply_all(table, [response(200)]) == []  # the copy of the 2xx adds nothing


def test_register_without_contact_is_a_query() -> None:
    table = RegistrationTable()
    assert apply_all(table, [register(None), response(200)]) == []


def test_register_without_push_params_still_registers() -> None:
    (event,) = apply_all(
        RegistrationTable(), [register("<sip:alice@10.0.0.1:5060>"), response(200)]
    )
    assert isinstance(event, Registered)
    assert event.devices == []
    assert event.contact == "sip:alice@10.0.0.1:5060"


# --- unregistration -------------------------------------------------------------------


def test_expires_0_contact_param_unregisters_the_device() -> None:
    contact = RFC8599_APNS.replace("expires=600", "expires=0")
    (event,) = apply_all(RegistrationTable(), [register(contact), response(200)], now=5.0)
    assert event == Unregistered("alice@example.com", [INSTANCE], 5.0)


def test_expires_header_0_unregisters() -> None:
    contact = RFC8599_APNS.replace(";expires=600", "")
    (event,) = apply_all(RegistrationTable(), [register(contact, expires=0), response(200)])
    assert isinstance(event, Unregistered)
    assert event.device_ids == [INSTANCE]


def test_contact_param_wins_over_expires_header() -> None:
    (event,) = apply_all(RegistrationTable(), [register(RFC8599_APNS, expires=0), response(200)])
    assert isinstance(event, Registered)


def test_unregister_without_instance_uses_the_token() -> None:
    contact = f"<sip:alice@10.0.0.1;pn-type=apple;pn-tok={TOKEN};app-id=com.x.prod>;expires=0"
    (event,) = apply_all(RegistrationTable(), [register(contact), response(200)])
    assert event == Unregistered("alice@example.com", [TOKEN], 1000.0)


def test_wildcard_unregisters_everything() -> None:
    (event,) = apply_all(RegistrationTable(), [register("*", expires=0), response(200)])
    assert event == Unregistered("alice@example.com", None, 1000.0)


def test_wildcard_without_expires_0_is_ignored() -> None:
    assert apply_all(RegistrationTable(), [register("*", expires=60), response(200)]) == []


def test_unregister_of_a_failed_register_changes_nothing() -> None:
    contact = RFC8599_APNS.replace("expires=600", "expires=0")
    assert apply_all(RegistrationTable(), [register(contact), response(403)]) == []


def test_mixed_bind_and_unbind_in_one_register() -> None:
    old = f"<sip:alice@10.0.0.9;pn-type=apple;pn-tok={'b' * 64};app-id=com.x>;expires=0"
    events = apply_all(RegistrationTable(), [register([old, RFC8599_APNS]), response(200)])
    assert [type(e) for e in events] == [Unregistered, Registered]
    assert events[0].device_ids == ["b" * 64]  # type: ignore[union-attr]
    assert events[1].contact.startswith("sip:alice@10.0.0.1:5060")


# --- RFC 8599 -------------------------------------------------------------------------


def test_rfc8599_apns_voip() -> None:
    d = one_device(RFC8599_APNS)
    assert d.type == "apple"
    assert d.app == "com.example.phone"  # no team id, no service
    assert d.push_type == "voip"
    assert d.extra["team_id"] == "ABCD1234EF"
    assert d.extra["source"] == "rfc8599"
    assert d.sandbox is False
    assert d.bound


def test_rfc8599_apns_alert_service() -> None:
    d = one_device(RFC8599_APNS.replace(".voip>", ".apns>"))
    assert (d.app, d.push_type) == ("com.example.phone", "alert")


def test_rfc8599_apns_linphone_dual_token() -> None:
    contact = (
        "<sip:alice@10.0.0.1;pn-provider=apns.dev;pn-prid=VOIPTOK:voip%26REMOTETOK:remote;"
        "pn-param=TEAM.org.linphone.phone.voip%26remote>"
    )
    d = one_device(contact)
    assert (d.token, d.push_type, d.app, d.sandbox) == (
        "VOIPTOK",
        "voip",
        "org.linphone.phone",
        True,
    )


def test_rfc8599_fcm() -> None:
    d = one_device(f"<sip:alice@10.0.0.1;pn-provider=fcm;pn-prid={FCM_TOKEN};pn-param=123456789>")
    assert (d.type, d.app, d.token, d.push_type) == ("firebase", "123456789", FCM_TOKEN, None)
    assert d.extra["project"] == "123456789"
    assert d.device_id == FCM_TOKEN  # no +sip.instance: the token


def test_rfc8599_params_are_case_insensitive_and_percent_decoded() -> None:
    contact = (
        "<sip:alice@10.0.0.1;PN-Provider=APNS;PN-PRID=ab%3Acd%2Fef0123456789;"
        "pn-PARAM=TEAM.com.example.voip>"
    )
    d = one_device(contact)
    assert d.token == "ab:cd/ef0123456789"
    assert d.app == "com.example"


def test_rfc8599_params_in_contact_header() -> None:
    contact = (
        f"<sip:alice@10.0.0.1>;pn-provider=apns;pn-prid={TOKEN};pn-param=T.com.example.app.voip"
    )
    d = one_device(contact)
    assert (d.token, d.app) == (TOKEN, "com.example.app")


def test_rfc8599_wins_over_legacy() -> None:
    contact = RFC8599_APNS.replace(">;", ";pn-type=firebase;pn-tok=LEGACY;app-id=other>;")
    assert one_device(contact).token == TOKEN


WEB_ENDPOINT = "https://push.example.net/wpush/v2/gAAAAABk-x_1"
P256DH = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
AUTH = "tBHItJI5svbpez7KI4CCXg"


def test_webpush_endpoint_and_keys_from_pn_prid_and_pn_param() -> None:
    encoded = WEB_ENDPOINT.replace(":", "%3A").replace("/", "%2F")
    device = one_device(
        f"<sip:alice@10.0.0.1;transport=ws;pn-provider=webpush;pn-prid={encoded};"
        f"pn-param={P256DH}.{AUTH}>"
    )
    assert device is not None
    assert (device.type, device.app, device.token) == ("webpush", "", WEB_ENDPOINT)
    assert device.extra == {"source": "rfc8599", "p256dh": P256DH, "auth": AUTH}


def test_webpush_without_keys_is_a_target_without_payload_keys() -> None:
    device = one_device(f"<sip:alice@10.0.0.1;pn-provider=webpush;pn-prid={WEB_ENDPOINT}>")
    assert device is not None and device.type == "webpush"
    assert device.extra == {"source": "rfc8599"}


# --- legacy ---------------------------------------------------------------------------


def test_seed_example_register() -> None:
    """The seed's sample: params outside <>, User-Agent `MyApp iOS 1.0`."""
    contact = f"<sip:user@192.168.1.1>;reg-id=1;app-id=org.myorg.myapp;pn-tok={TOKEN};pn-type=apple"
    table = RegistrationTable()
    events = apply_all(
        table, [register(contact, user_agent="MyApp iOS 1.0"), response(200)], user_agents=KAZOO_UA
    )
    (event,) = events
    assert isinstance(event, Registered)
    (d,) = event.devices
    assert (d.type, d.app, d.token, d.sandbox, d.device_id) == (
        "apple",
        "org.myorg.myapp",
        TOKEN,
        False,
        TOKEN,  # reg-id=1 is not an identity (DESIGN §8)
    )
    assert d.user_agent == "MyApp iOS 1.0"
    assert event.contact == "sip:user@192.168.1.1"


@pytest.mark.parametrize(
    ("app_id", "app", "sandbox"),
    [
        ("org.linphone.phone.dev", "org.linphone.phone", True),
        ("org.linphone.phone.prod", "org.linphone.phone", False),
        ("org.linphone.phone", "org.linphone.phone", False),
    ],
)
def test_legacy_app_id_suffix(app_id: str, app: str, sandbox: bool) -> None:
    d = one_device(f"<sip:alice@10.0.0.1;pn-type=apple;pn-tok={TOKEN};app-id={app_id}>")
    assert (d.app, d.sandbox, d.push_type) == (app, sandbox, None)
    assert d.extra["source"] == "legacy"


@pytest.mark.parametrize(
    ("pn_type", "expected"),
    [("apple", "apple"), ("firebase", "firebase"), ("google", "firebase"),
     ("android", "firebase"), ("Apple", "apple")],
)  # fmt: skip
def test_legacy_types(pn_type: str, expected: str) -> None:
    d = one_device(f"<sip:alice@10.0.0.1;pn-type={pn_type};pn-tok={TOKEN};app-id=a.b>")
    assert d.type == expected


def test_legacy_unknown_type_is_not_a_target() -> None:
    assert one_device(f"<sip:alice@10.0.0.1;pn-type=blackberry;pn-tok={TOKEN}>") is None


def test_legacy_without_token_is_not_a_target() -> None:
    assert one_device("<sip:alice@10.0.0.1;pn-type=apple;app-id=a.b>") is None


# --- the Kazoo User-Agents mapping ---------------------------------------------------------

CUSTOM_UA = {
    "Other": {
        "regex": "^Nope",
        "properties": {"Token-App": "a", "Token-Type": "b", "Token-ID": "c"},
    },
    "Acme": {
        "regex": r"Acme\s+Softphone",
        "properties": {"Token-App": "X-App", "Token-Type": "x-kind", "Token-ID": "x-push"},
    },
}


def test_mapping_names_the_params() -> None:
    contact = f"<sip:alice@10.0.0.1;x-push={TOKEN}>;X-KIND=apple;x-app=com.acme.sp.dev"
    d = one_device(contact, user_agent="The Acme Softphone 3.1", ua_map=CUSTOM_UA)
    assert (d.type, d.app, d.token, d.sandbox) == ("apple", "com.acme.sp", TOKEN, True)
    assert d.extra == {"source": "mapping", "mapping": "Acme"}


def test_mapping_needs_a_matching_user_agent() -> None:
    contact = f"<sip:alice@10.0.0.1;x-push={TOKEN}>;x-kind=apple;x-app=com.acme"
    assert one_device(contact, user_agent="Zoiper 5", ua_map=CUSTOM_UA) is None


def test_mapping_first_matching_entry_decides() -> None:
    ua = {
        "First": {"regex": "^Acme", "properties": {"Token-App": "a1", "Token-Type": "t1", "Token-ID": "i1"}},
        "Second": {"regex": "^Acme", "properties": {"Token-App": "a2", "Token-Type": "t2", "Token-ID": "i2"}},
    }  # fmt: skip
    contact = f"<sip:alice@10.0.0.1;a2=x;t2=apple;i2={TOKEN}>"
    assert one_device(contact, user_agent="Acme", ua_map=ua) is None


def test_mapping_with_bad_entries_still_uses_good_ones() -> None:
    ua: dict[str, Any] = {
        "BadRegex": {"regex": "(", "properties": {"Token-App": "a", "Token-Type": "b", "Token-ID": "c"}},
        "NoProps": {"regex": "^Acme"},
        "NotADict": "x",
        **CUSTOM_UA,
    }  # fmt: skip
    contact = f"<sip:alice@10.0.0.1;x-push={TOKEN};x-kind=firebase;x-app=acme>"
    d = one_device(contact, user_agent="Acme Softphone", ua_map=ua)
    assert (d.type, d.app) == ("firebase", "acme")


def test_legacy_params_win_over_the_mapping() -> None:
    contact = f"<sip:alice@10.0.0.1;pn-type=apple;pn-tok={TOKEN};app-id=legacy.app;x-push=M;x-kind=apple;x-app=m>"
    d = one_device(contact, user_agent="Acme Softphone", ua_map=CUSTOM_UA)
    assert d.app == "legacy.app"


# --- identity and extract_target ---------------------------------------------------------


def test_aor_is_to_user_at_host_lowercased_host() -> None:
    (event,) = apply_all(
        RegistrationTable(require_2xx=False),
        [register(RFC8599_APNS, to='"Alice" <sip:Alice@Example.COM:5060;transport=udp>;tag=1')],
    )
    assert event.aor == "Alice@example.com"


def test_same_instance_twice_is_one_device() -> None:
    second = RFC8599_APNS.replace("10.0.0.1", "10.0.0.2")
    (event,) = apply_all(RegistrationTable(require_2xx=False), [register([RFC8599_APNS, second])])
    assert isinstance(event, Registered)
    assert len(event.devices) == 1


def test_extract_target_from_a_parsed_contact() -> None:
    msg = sip.parse_message(register(RFC8599_APNS))
    (contact,) = msg.contacts()
    d = extract_target(contact, "Linphone", {}, "alice@example.com", 77.0)
    assert d is not None
    assert (d.device_id, d.app, d.last_registered, d.aor) == (
        INSTANCE,
        "com.example.phone",
        77.0,
        "alice@example.com",
    )
    plain = sip.parse_message(register("<sip:alice@10.0.0.1>")).contacts()[0]
    assert extract_target(plain, "Linphone", KAZOO_UA, "alice@example.com", 77.0) is None


def test_malformed_register_raises_parse_error_and_changes_nothing() -> None:
    table = RegistrationTable()
    bad = register(RFC8599_APNS).replace(b"To: <sip:alice@Example.COM>", b"To: <<<>")
    with pytest.raises(sip.SipParseError):
        apply_all(table, [bad])
    assert len(table) == 0


def test_statistics_count_everything() -> None:
    table = RegistrationTable()
    apply_all(table, [register(RFC8599_APNS), response(200)])
    stats = table.statistics()
    assert stats["registers"] == 1
    assert stats["answered_2xx"] == 1
    assert stats["registered_events"] == 1
    assert stats["pending"] == 0


@pytest.mark.parametrize(
    "to",
    [
        "<sip:alice@example.com>",
        "<sip:alice@Example.COM:5060;transport=udp>;tag=1",
        '"Alice Smith" <sip:alice@example.com>;tag=x',
        "Alice <sips:alice@example.com>",
        "sip:alice@example.com;tag=1",  # addr-spec: the parser decides
        "<sip:al%69ce@example.com>",
        "<sip:+15551234567;npdi@example.com>",
        "<sip:alice@[2001:db8::1]:5060>",
        "<tel:+15551234567>",
        "<SIP:alice@example.com>",
    ],
)
def test_aor_fast_path_agrees_with_the_parser(to: str) -> None:
    from pusher_trio.registrations import aor_of

    msg = sip.parse_message(register(RFC8599_APNS, to=to))
    uri = sip.parse_name_addr(to).uri
    user = sip.percent_decode(uri.user or "")
    host = uri.host.lower()
    assert aor_of(msg) == (f"{user}@{host}" if user else host)


def test_mapping_regexes_are_compiled_once_per_distinct_mapping() -> None:
    from pusher_trio.registrations import _mapping_rules

    first = _mapping_rules(CUSTOM_UA)
    again = _mapping_rules({k: dict(v) for k, v in CUSTOM_UA.items()})  # equal, not the same
    assert first is again
    changed = {**CUSTOM_UA, "Acme": {**CUSTOM_UA["Acme"], "regex": "^Acme2"}}
    assert _mapping_rules(changed) is not first
    assert [r.name for r in first] == ["Other", "Acme"]


# --- the lazy path (REGISTER kept as bytes until its 2xx) -----------------------------


def lazy(table: RegistrationTable, data: bytes, now: float = 1000.0) -> list[Any]:
    msg = sip.parse_message(data)
    if isinstance(msg, sip.Request):
        return table.apply_register(data, msg.call_id, msg.cseq[0], now, {})
    return table.apply_response(msg.call_id, msg.cseq[0], msg.status_code, now, KAZOO_UA)


def test_lazy_register_then_200_registers() -> None:
    table = RegistrationTable()
    assert lazy(table, register(RFC8599_APNS)) == []
    (event,) = lazy(table, response(200))
    assert isinstance(event, Registered)
    assert event.devices[0].token == TOKEN


def test_lazy_register_401_is_never_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    table = RegistrationTable()
    data = register(RFC8599_APNS, call_id="c401")

    def no_parsing(data: bytes) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(sip, "parse_message", no_parsing)
    assert table.apply_register(data, "c401", 1, 1000.0, {}) == []
    assert table.apply_response("c401", 1, 401, 1000.0, {}) == []
    assert table.statistics()["answered_failure"] == 1


def test_lazy_malformed_register_answered_2xx_is_counted() -> None:
    table = RegistrationTable()
    broken = (
        b"REGISTER sip:example.com SIP/2.0\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nTo: <<<\r\n\r\n"
    )
    table.apply_register(broken, "x", 1, 1000.0, {})
    assert table.apply_response("x", 1, 200, 1000.0, {}) == []
    assert table.statistics()["malformed_registers"] == 1


def test_lazy_register_uses_the_mapping_given_with_the_2xx() -> None:
    contact = f"<sip:user@192.168.1.1>;app-id=org.myorg.myapp;x=1;pn-tok={TOKEN};pn-type=apple"
    table = RegistrationTable()
    lazy(table, register(contact.replace("pn-type", "pn-kind"), user_agent="MyApp iOS 1.0"))
    (event,) = lazy(table, response(200))  # KAZOO_UA names pn-type: no target
    assert isinstance(event, Registered)
    assert event.devices == []


def test_lazy_path_is_bounded_by_bytes() -> None:
    table = RegistrationTable(max_bytes=10_000)
    for i in range(100):
        table.apply_register(register(RFC8599_APNS, call_id=f"f{i}"), f"f{i}", 1, 1000.0, {})
        assert table.pending_bytes <= 10_000
    assert 0 < len(table) < 100


def test_require_2xx_false_parses_a_lazy_register_at_once() -> None:
    table = RegistrationTable(require_2xx=False)
    data = register(RFC8599_APNS)
    (event,) = table.apply_register(data, "reg-1@10.0.0.1", 1, 1000.0, {})
    assert isinstance(event, Registered)


def test_mapping_entry_missing_a_property_is_skipped() -> None:
    ua = {
        "NoId": {"regex": "^Acme", "properties": {"Token-App": "x-app", "Token-Type": "x-kind"}},
        **CUSTOM_UA,
    }
    contact = f"<sip:alice@10.0.0.1;x-push={TOKEN};x-kind=apple;x-app=acme>"
    d = one_device(contact, user_agent="Acme Softphone", ua_map=ua)
    assert d.extra["mapping"] == "Acme"


def test_one_register_bigger_than_the_byte_budget_is_not_kept() -> None:
    table = RegistrationTable(max_bytes=500)
    table.apply(sip.parse_message(register(RFC8599_APNS)), 1000.0, {})
    assert (len(table), table.pending_bytes) == (0, 0)
    assert table.statistics()["evicted"] == 1


def test_bad_table_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        RegistrationTable(max_entries=0)


def test_registered_names_its_binding_for_kamailio() -> None:
    """Call-ID, CSeq and +sip.instance of the REGISTER that wrote the binding (DESIGN §12)."""
    table = RegistrationTable()
    messages = [register(RFC8599_APNS, cseq=7), response(200, cseq=7)]
    (event,) = apply_all(table, messages)
    assert isinstance(event, Registered)
    assert (event.call_id, event.cseq, event.instance) == ("reg-1@10.0.0.1", 7, INSTANCE)
    (event,) = apply_all(
        RegistrationTable(require_2xx=False),
        [register("<sip:alice@10.0.0.2:5062>", call_id="other", cseq=3)],
    )
    assert isinstance(event, Registered)
    assert (event.call_id, event.cseq, event.instance) == ("other", 3, None)


def test_registered_says_whether_the_ua_asked_for_refresh_pushes() -> None:
    table = RegistrationTable(require_2xx=False)
    (event,) = apply_all(table, [register(RFC8599_APNS + ";+sip.pnsreg")])
    assert isinstance(event, Registered)
    assert (event.pnsreg, event.expires) == (True, 600)
    (event,) = apply_all(table, [register(RFC8599_APNS, call_id="x")])
    assert isinstance(event, Registered)
    assert event.pnsreg is False
    (event,) = apply_all(table, [register(RFC8599_APNS + ";+SIP.PNSREG", call_id="y")])
    assert isinstance(event, Registered) and event.pnsreg is True  # param names ignore case


def test_the_extraction_builds_devices_in_the_field_order_it_assumes() -> None:
    # registrations._target builds Device positionally (cheaper than keywords): a
    # reordered or inserted field must fail here, not shift values silently
    import attrs

    from pusher_trio.model import Device

    names = [f.name for f in attrs.fields(Device)][:12]
    assert names == ["aor", "device_id", "type", "app", "token", "sandbox", "push_type",
                     "extra", "user_agent", "contact", "bound", "last_registered"]  # fmt: skip
    params = {"pn-provider": "apns", "pn-prid": "ab12", "pn-param": "TEAM.com.example.app.voip"}
    from pusher_trio.registrations import target_from_params

    device = target_from_params(
        params, "urn:uuid:1", aor="a@example.com", contact="sip:a@h", user_agent="UA/1",
        user_agents={}, now=42.0,
    )  # fmt: skip
    assert device == Device(
        aor="a@example.com", device_id="urn:uuid:1", type="apple", app="com.example.app",
        token="ab12", sandbox=False, push_type="voip",
        extra={"source": "rfc8599", "team_id": "TEAM"}, user_agent="UA/1", contact="sip:a@h",
        bound=True, last_registered=42.0,
    )  # fmt: skip
