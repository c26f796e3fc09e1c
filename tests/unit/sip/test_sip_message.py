"""parse_message on real clients' REGISTERs and 200 OKs, and on broken input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import sip

CORPUS = Path(__file__).resolve().parents[2] / "data" / "sip"
TOK = "8a3f2c1d9e4b7a6f5c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b"
VTOK = "f1e2d3c4b5a6978877665544332211000ffeeddccbbaa99887766554433221100"


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


# file -> expected: start line, Call-ID, CSeq, Expires, User-Agent, To user, and per
# Contact (display name, scheme, user, host, port, a subset of URI params, header
# params, expires, wildcard).
CASES: dict[str, dict[str, Any]] = {
    "linphone_rfc8599_register.sip": {
        "start": ("REGISTER", "sip:sip.example.org;transport=tls"),
        "call_id": "3Q0pC-GSsY",
        "cseq": (21, "REGISTER"),
        "expires": 3600,
        "user_agent": "LinphoneiOS/4.4.2 (iPhone) LinphoneSDK/4.5.0",
        "to_user": "alice",
        "contacts": [
            (
                None, "sip", "alice", "10.0.0.23", 49352,
                {
                    "pn-provider": "apns",
                    "pn-prid": f"{TOK}:remote&{VTOK}:voip",
                    "pn-param": "ABCD123456.org.linphone.phone.remote&voip",
                    "pn-silent": "1",
                    "transport": "tls",
                },
                {
                    "+sip.instance": "<urn:uuid:0b6a4e2c-9d1f-4c3b-8a7e-5f6d4c3b2a10>",
                    "+org.linphone.specs": "ephemeral,groupchat,groupchat/1.1,lime",
                },
                None, False,
            )
        ],
    },
    "linphone_rfc8599_200ok.sip": {
        "start": (200, "Ok"),
        "call_id": "3Q0pC-GSsY",
        "cseq": (21, "REGISTER"),
        "expires": None,
        "user_agent": None,
        "to_user": "alice",
        "contacts": [
            (
                None, "sip", "alice", "10.0.0.23", 49352,
                {
                    "pn-provider": "apns",
                    "pn-prid": TOK,
                    "pn-param": "ABCD123456.org.linphone.phone.voip",
                },
                {
                    "expires": "3600",
                    "+sip.instance": "<urn:uuid:0b6a4e2c-9d1f-4c3b-8a7e-5f6d4c3b2a10>",
                },
                3600, False,
            )
        ],
    },
    "linphone_legacy_register.sip": {
        "start": ("REGISTER", "sip:sip.linphone.org"),
        "call_id": "7YeJWVsHkM",
        "cseq": (20, "REGISTER"),
        "expires": 600,
        "user_agent": "LinphoneIphone/3.16.5 (iPhone) LinphoneSDK/4.3.0",
        "to_user": "bob",
        "contacts": [
            (
                None, "sip", "bob", "192.168.1.20", 5060,
                {
                    "app-id": "org.linphone.phone.prod",
                    "pn-type": "apple",
                    "pn-tok": TOK,
                    "pn-silent": "1",
                },
                {"+sip.instance": "<urn:uuid:2a1b9c8d-7e6f-4a5b-9c8d-7e6f5a4b3c2d>"},
                None, False,
            )
        ],
    },
    "seed_myapp_register.sip": {
        "start": ("REGISTER", "sip:example.com"),
        "call_id": "NzQ5ZjFmZDBhOGQ3ZTI3MTU5YWM4MjI1YTM2ZDNjNmY",
        "cseq": (2, "REGISTER"),
        "expires": 3600,
        "user_agent": "MyApp iOS 1.0",
        "to_user": "user",
        "contacts": [
            (
                None, "sip", "user", "192.168.1.1", None, {},
                {"reg-id": "1", "app-id": "org.myorg.myapp", "pn-tok": "token", "pn-type": "apple"},
                None, False,
            )
        ],
    },
    "zoiper_register.sip": {
        "start": ("REGISTER", "sip:pbx.example.net;transport=UDP"),
        "call_id": "ZGU3NGYzZjBmOWJkMmEwZDE5MDhhYjY2YTMwYTdhOTk",
        "cseq": (1, "REGISTER"),
        "expires": 60,
        "user_agent": "Z 5.6.1 v2.10.19.9",
        "to_user": "1001",
        "contacts": [
            (
                None, "sip", "1001", "192.168.0.5", 52131,
                {"rinstance": "8e2a4b5c1d6f7a8b", "transport": "UDP"},
                {"expires": "60"},
                60, False,
            )
        ],
    },
    "bria_register.sip": {
        "start": ("REGISTER", "sip:voip.example.com:5061;transport=tls"),
        "call_id": "81f1Nzk2YzA4ZDM1NzU3ZWJjMmI3NmYxNGQ0YmE4NzE.",
        "cseq": (3, "REGISTER"),
        "expires": 900,
        "user_agent": "Bria iOS release 6.5.2 stamp 115823",
        "to_user": "carol",
        "contacts": [
            (
                "Carol Smith", "sip", "carol", "[2001:db8:4:5::23]", 50112,
                {"transport": "tls", "ob": None},
                {
                    "reg-id": "1",
                    "+sip.instance": "<urn:uuid:5c8d2f4e-1a3b-4c6d-8e9f-0a1b2c3d4e5f>",
                    "+sip.ice": None,
                    "pn-provider": "apns",
                    "pn-prid": VTOK,
                    "pn-param": "XYZ9876543.com.counterpath.bria.voip",
                },
                None, False,
            )
        ],
    },
    "acrobits_register.sip": {
        "start": ("REGISTER", "sip:sip.example.com"),
        "call_id": "5f3e2d1c-0b9a-8f7e-6d5c-4b3a2f1e0d9c",
        "cseq": (14622, "REGISTER"),
        "expires": None,
        "user_agent": "Acrobits Softphone/6.6.2 (Android; 13)",
        "to_user": "dave%40work",
        "contacts": [
            (
                None, "sip", "dave%40work", "198.51.100.20", 5060, {},
                {
                    "expires": "300",
                    "pn-type": "firebase",
                    "app-id": "cz.acrobits.softphone",
                    "pn-tok": "fcm%3AAPA91bH-xYz_0123456789abcdef",
                },
                300, False,
            )
        ],
    },
    "three_contacts_200ok.sip": {
        "start": (200, "OK"),
        "call_id": "1j9FpLxk3uxtm8tn@192.0.2.10",
        "cseq": (2, "REGISTER"),
        "expires": None,
        "user_agent": None,
        "to_user": "bob",
        "contacts": [
            (
                None, "sip", "bob", "192.0.2.10", 5060,
                {"pn-type": "apple", "pn-tok": "ab12cd34ef56", "app-id": "org.linphone.phone.prod"},
                {"expires": "3600", "+sip.instance": "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"},
                3600, False,
            ),
            (None, "sip", "bob", "198.51.100.7", 40001, {"transport": "tcp"}, {"expires": "1200"}, 1200, False),
            (
                'Bob, "desk" <phone>; 2', "sip", "bob", "[2001:db8::1]", 5061, {"transport": "tls"},
                {"expires": "600", "q": "0.5"}, 600, False,
            ),
        ],
    },
    "kamailio_200ok_3contacts.sip": {
        "start": (200, "OK"),
        "call_id": "7YeJWVsHkM",
        "cseq": (20, "REGISTER"),
        "expires": None,
        "user_agent": None,
        "to_user": "bob",
        "contacts": [
            (
                None, "sip", "bob", "192.168.1.20", 5060,
                {"pn-type": "apple", "pn-tok": TOK, "pn-silent": "1"},
                {
                    "expires": "600",
                    "received": "sip:203.0.113.40:5060",
                    "+sip.instance": "<urn:uuid:2a1b9c8d-7e6f-4a5b-9c8d-7e6f5a4b3c2d>",
                    "reg-id": "1",
                },
                600, False,
            ),
            (
                None, "sip", "bob", "10.8.0.14", 41234, {"transport": "tcp", "ob": None},
                {
                    "expires": "3412",
                    "+sip.instance": "<urn:uuid:9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a>",
                    "reg-id": "1",
                },
                3412, False,
            ),
            (
                None, "sip", "bob", "[2001:db8:85a3::8a2e:370:7334]", 5061, {"transport": "tls"},
                {"expires": "1187"}, 1187, False,
            ),
        ],
    },
    "unregister_all.sip": {
        "start": ("REGISTER", "sip:example.com"),
        "call_id": "a84b4c76e66710@pc33.example.com",
        "cseq": (3, "REGISTER"),
        "expires": 0,
        "user_agent": None,
        "to_user": "user",
        "contacts": [(None, "", None, "", None, {}, {}, None, True)],
    },
    "folded_mixed_case.sip": {
        "start": ("REGISTER", "sip:example.com"),
        "call_id": "fold-1@10.1.1.1",
        "cseq": (9, "REGISTER"),
        "expires": None,
        "user_agent": "Eve/1.0",
        "to_user": "eve",
        "contacts": [
            (
                None, "sip", "eve", "10.1.1.1", 5060,
                {"pn-type": "google", "pn-tok": "abc", "app-id": "com.example.app"},
                {"expires": "120"}, 120, False,
            ),
            (None, "sip", "eve", "10.1.1.2", 5060, {}, {"expires": "30"}, 30, False),
        ],
    },
    "challenge_401.sip": {
        "start": (401, "Unauthorized"),
        "call_id": "NzQ5ZjFmZDBhOGQ3ZTI3MTU5YWM4MjI1YTM2ZDNjNmY",
        "cseq": (1, "REGISTER"),
        "expires": None,
        "user_agent": None,
        "to_user": "user",
        "contacts": [],
    },
    "message_with_body.sip": {
        "start": ("MESSAGE", "sip:user2@example.com"),
        "call_id": "asd88asd77a@1.2.3.4",
        "cseq": (1, "MESSAGE"),
        "expires": None,
        "user_agent": None,
        "to_user": "user2",
        "from_user": "user1",
        "contacts": [],
        "body": b"Watson, come here.\r\nI want to see you.\r\n",
    },
    "tel_sips_register.sip": {
        "start": ("REGISTER", "sips:ss2.biloxi.example.com"),
        "call_id": "1j9FpLxk3uxtm8tn@biloxi.example.com",
        "cseq": (1, "REGISTER"),
        "expires": None,
        "user_agent": None,
        "to_user": "bob",
        "contacts": [
            (
                None, "sips", "bob", "client.biloxi.example.com", 5061,
                {"pn-provider": "fcm", "pn-prid": "cK5x%3AAPA91b", "pn-param": "123456789012"},
                {}, None, False,
            ),
            (None, "tel", "+1-201-555-0123", "", None, {"phone-context": "example.com"}, {"expires": "60"}, 60, False),
        ],
    },
}  # fmt: skip


def test_every_corpus_file_has_a_case() -> None:
    assert {p.name for p in CORPUS.glob("*.sip")} == set(CASES)


def check(msg: sip.Request | sip.Response, expected: dict[str, Any]) -> None:
    if isinstance(msg, sip.Request):
        assert (msg.method, msg.uri_text) == expected["start"]
        assert str(msg.uri) == msg.uri_text
    else:
        assert (msg.status_code, msg.reason) == expected["start"]
    assert msg.call_id == expected["call_id"]
    assert msg.cseq == expected["cseq"]
    assert msg.expires == expected["expires"]
    assert msg.user_agent == expected["user_agent"]
    assert msg.to.uri.user == expected["to_user"]
    assert msg.from_.uri.user == expected.get("from_user", expected["to_user"])
    assert msg.from_.tag
    assert msg.body == expected.get("body", b"")
    contacts = msg.contacts()
    assert len(contacts) == len(expected["contacts"])
    for c, (display, scheme, user, host, port, uparams, hparams, expires, wildcard) in zip(
        contacts, expected["contacts"], strict=True
    ):
        assert c.display_name == display
        assert (c.uri.scheme, c.uri.user, c.uri.host, c.uri.port) == (scheme, user, host, port)
        assert {k: c.uri.params[k] for k in uparams} == uparams
        assert c.params == hparams
        assert c.expires == expires
        assert c.is_wildcard is wildcard


@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus_message_parses_as_expected(name: str) -> None:
    check(sip.parse_message(corpus(name)), CASES[name])


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize(
    "garbage",
    [b"\r\n", b"garbage after the message", b"\x00\xff" * 40, b"INVITE sip:x SIP/2.0\r\n\r\n"],
)
def test_corpus_message_with_trailing_garbage_parses_the_same(name: str, garbage: bytes) -> None:
    # Every corpus file carries Content-Length: what follows the body is not the message.
    check(sip.parse_message(corpus(name) + garbage), CASES[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus_message_with_lf_line_ends_parses_the_same(name: str) -> None:
    data = corpus(name)
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    lf = head.replace(b"\r\n", b"\n") + b"\n\n" + body
    msg = sip.parse_message(lf)
    expected = dict(CASES[name])
    check(msg, expected)


@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus_message_truncated_raises_or_parses(name: str) -> None:
    data = corpus(name)
    for cut in range(0, len(data), 7):
        try:
            msg = sip.parse_message(data[:cut])
        except sip.SipParseError:
            continue
        assert msg.call_id


def test_contacts_are_cached_and_returned_as_a_fresh_list() -> None:
    msg = sip.parse_message(corpus("three_contacts_200ok.sip"))
    first = msg.contacts()
    first.clear()
    again = msg.contacts()
    assert len(again) == 3
    assert again[0] is msg.contacts()[0]
    assert msg.to is msg.to
    assert msg.from_ is msg.from_


def test_request_uri_is_parsed_lazily_and_cached() -> None:
    msg = sip.parse_message(corpus("bria_register.sip"))
    assert isinstance(msg, sip.Request)
    assert msg.uri is msg.uri
    assert msg.uri.port == 5061
    assert msg.uri.params == {"transport": "tls"}


def test_headers_keep_order_case_and_unknown_headers() -> None:
    msg = sip.parse_message(corpus("folded_mixed_case.sip"))
    names = [name for name, _ in msg.headers]
    assert names[:3] == ["VIA", "from", "TO"]
    assert msg.headers.get("subject") == "a folded subject line"
    assert msg.headers.get("s") == "a folded subject line"
    assert msg.headers.get("Contact") == (
        "<sip:eve@10.1.1.1:5060;pn-type=google;pn-tok=abc;app-id=com.example.app> "
        ";expires=120, <sip:eve@10.1.1.2:5060>;expires=30"
    )
    assert len(msg.headers) == len(names) == 9
    assert "CALL-ID" in msg.headers and "i" in msg.headers


def test_compact_forms_are_full_names() -> None:
    msg = sip.parse_message(corpus("acrobits_register.sip"))
    assert (
        msg.headers.get("Via")
        == "SIP/2.0/UDP 198.51.100.20:5060;rport;branch=z9hG4bKPj4d5e6f7a8b9c"
    )
    assert msg.headers.get("contact") == msg.headers.get("m")
    assert msg.headers.get_all("From") == ["<sip:dave%40work@sip.example.com>;tag=Pd8e9f0a1b"]
    assert ("i", "5f3e2d1c-0b9a-8f7e-6d5c-4b3a2f1e0d9c") in list(msg.headers)


def test_several_accept_headers_in_order() -> None:
    msg = sip.parse_message(corpus("linphone_rfc8599_register.sip"))
    assert msg.headers.get_all("accept") == [
        "application/sdp",
        "text/plain",
        "application/vnd.gsma.rcs-ft-http+xml",
    ]
    assert msg.headers.get_all("X-Absent") == []
    assert msg.headers.get("X-Absent") is None
    assert msg.headers.get("X-Absent", "d") == "d"


def test_percent_encoded_user_is_kept_and_decodable() -> None:
    msg = sip.parse_message(corpus("acrobits_register.sip"))
    contact = msg.contacts()[0]
    assert contact.uri.user == "dave%40work"
    assert sip.percent_decode(contact.uri.user) == "dave@work"
    assert sip.unquote_param(contact.params["pn-tok"]) == "fcm:APA91bH-xYz_0123456789abcdef"


BASE = (
    "REGISTER sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
    "From: <sip:a@example.com>;tag=1\r\n"
    "To: <sip:a@example.com>\r\n"
    "Call-ID: c1\r\n"
    "CSeq: 1 REGISTER\r\n"
)


def build(*extra: str, start: str | None = None, body: str = "") -> bytes:
    head = BASE if start is None else BASE.replace("REGISTER sip:example.com SIP/2.0", start, 1)
    return (head + "".join(h + "\r\n" for h in extra) + "\r\n" + body).encode()


def test_body_without_content_length_is_the_rest_of_the_datagram() -> None:
    msg = sip.parse_message(build(body="v=0\r\nrest"))
    assert msg.body == b"v=0\r\nrest"


def test_content_length_shorter_than_the_rest() -> None:
    msg = sip.parse_message(build("Content-Length: 3", body="abcdef"))
    assert msg.body == b"abc"


def test_lf_only_blank_line_before_a_crlf_one_ends_the_headers() -> None:
    data = BASE.encode() + b"X-A: 1\n\nbody\r\n\r\nmore"
    msg = sip.parse_message(data)
    assert msg.headers.get("x-a") == "1"
    assert msg.body == b"body\r\n\r\nmore"


def test_mixed_lf_then_crlf_blank_line() -> None:
    data = BASE.encode() + b"X-A: 1\n\r\nbody"
    msg = sip.parse_message(data)
    assert msg.body == b"body"


def test_header_names_any_case_and_blank_before_colon() -> None:
    msg = sip.parse_message(build("x-CuStOm  : Value With  Spaces  ", "EXPIRES:\t30"))
    assert msg.headers.get("X-Custom") == "Value With  Spaces"
    assert msg.expires == 30
    assert ("x-CuStOm", "Value With  Spaces") in list(msg.headers)


def test_expires_over_32_bits_is_clamped() -> None:
    assert sip.parse_message(build("Expires: 99999999999")).expires == 2**32 - 1


def test_response_reason_may_be_empty_or_have_spaces() -> None:
    msg = sip.parse_message(build(start="SIP/2.0 183 Session Progress Here"))
    assert isinstance(msg, sip.Response)
    assert (msg.status_code, msg.reason) == (183, "Session Progress Here")
    msg = sip.parse_message(build(start="SIP/2.0 200"))
    assert isinstance(msg, sip.Response)
    assert (msg.status_code, msg.reason) == (200, "")


def test_extension_method_and_cseq_with_tabs() -> None:
    msg = sip.parse_message(
        build(start="X-PING sip:example.com SIP/2.0").replace(
            b"CSeq: 1 REGISTER", b"CSeq: 7\t X-PING"
        )
    )
    assert isinstance(msg, sip.Request)
    assert msg.method == "X-PING"
    assert msg.cseq == (7, "X-PING")


def test_repr_names_the_message() -> None:
    assert "REGISTER" in repr(sip.parse_message(build()))
    assert "401" in repr(sip.parse_message(corpus("challenge_401.sip")))
    assert "Via" in repr(sip.parse_message(build()).headers)


def test_limits_are_errors_not_slow_paths() -> None:
    with pytest.raises(sip.SipParseError, match="over 65535"):
        sip.parse_message(build(body="x" * 65536))
    with pytest.raises(sip.SipParseError, match="more than 256"):
        sip.parse_message(build(*[f"X-H{i}: {i}" for i in range(260)]))
    with pytest.raises(sip.SipParseError, match="over 8192"):
        sip.parse_message(build("X-Big: " + "a" * 8200))
    with pytest.raises(sip.SipParseError, match="over 8192"):
        sip.parse_message(build("X-Folded: start", *[" " + "b" * 1000] * 9))
    # just under the limits is fine
    msg = sip.parse_message(build(*[f"X-H{i}: {i}" for i in range(250)], "X-Big: " + "a" * 8000))
    assert len(msg.headers) == 256


MALFORMED = [
    pytest.param(b"", id="empty"),
    pytest.param(b"REGISTER sip:x SIP/2.0\r\nCall-ID: 1\r\n", id="no-blank-line"),
    pytest.param(build(start="REGISTER sip:example.com"), id="request-line-two-parts"),
    pytest.param(build(start="REGISTER sip:a b SIP/2.0"), id="request-line-four-parts"),
    pytest.param(build(start="REGISTER  SIP/2.0"), id="request-line-empty-uri"),
    pytest.param(build(start="REGISTER sip:example.com SIP/3.0"), id="bad-version"),
    pytest.param(build(start="REG<ISTER sip:example.com SIP/2.0"), id="bad-method"),
    pytest.param(build(start="SIP/2.0 2000 OK"), id="status-four-digits"),
    pytest.param(build(start="SIP/2.0 abc OK"), id="status-not-digits"),
    pytest.param(build(start="SIP/1.0 200 OK"), id="status-bad-version"),
    pytest.param(build().replace(b"Call-ID: c1\r\n", b""), id="no-call-id"),
    pytest.param(build().replace(b"Call-ID: c1", b"Call-ID:"), id="empty-call-id"),
    pytest.param(build().replace(b"CSeq: 1 REGISTER\r\n", b""), id="no-cseq"),
    pytest.param(build().replace(b"CSeq: 1 REGISTER", b"CSeq: abc REGISTER"), id="cseq-not-number"),
    pytest.param(build().replace(b"CSeq: 1 REGISTER", b"CSeq: 1"), id="cseq-no-method"),
    pytest.param(
        build().replace(b"CSeq: 1 REGISTER", b"CSeq: 4294967296 REGISTER"), id="cseq-too-big"
    ),
    pytest.param(build().replace(b"CSeq: 1 REGISTER", b"CSeq: 1 REG<"), id="cseq-bad-method"),
    pytest.param(build("Contact"), id="known-name-no-colon"),
    pytest.param(build("this line has no colon"), id="line-no-colon"),
    pytest.param(build("Bad Name: x"), id="name-with-space"),
    pytest.param(build(": no name"), id="empty-name"),
    pytest.param(build("X-\x01: ctl"), id="name-with-control"),
    pytest.param(
        build(start="REGISTER sip:example.com SIP/2.0\r\n folded-first-line"),
        id="fold-before-header",
    ),
    pytest.param(build("X-A: 1", " more", "\r", " continued"), id="fold-onto-blank-line"),
    pytest.param(build("Content-Length: abc"), id="content-length-not-digits"),
    pytest.param(build("Content-Length: 123456"), id="content-length-six-digits"),
    pytest.param(build("Content-Length: 10", body="short"), id="content-length-past-end"),
    pytest.param(build("Content-Length: \u0661"), id="content-length-arabic-digit"),
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_message_raises_sip_parse_error(data: bytes) -> None:
    with pytest.raises(sip.SipParseError):
        sip.parse_message(data)


LAZY_MALFORMED = [
    pytest.param(("Contact: <sip:a@b",), "contacts", id="contact-unclosed"),
    pytest.param(("Contact: <sip:a@b>;expires=abc",), "contacts", id="contact-bad-expires"),
    pytest.param(("Contact: <sip:a@b> junk",), "contacts", id="contact-junk"),
    pytest.param(("Expires: soon",), "expires", id="expires-not-digits"),
    pytest.param(("Expires: -1",), "expires", id="expires-negative"),
]


@pytest.mark.parametrize(("extra", "what"), LAZY_MALFORMED)
def test_typed_headers_are_checked_when_asked(extra: tuple[str, ...], what: str) -> None:
    msg = sip.parse_message(build(*extra))  # the message itself is fine
    with pytest.raises(sip.SipParseError):
        if what == "contacts":
            msg.contacts()
        else:
            _ = msg.expires


def test_missing_or_bad_to_from_raise_when_asked() -> None:
    msg = sip.parse_message(build().replace(b"To: <sip:a@example.com>\r\n", b""))
    with pytest.raises(sip.SipParseError, match="no to"):
        _ = msg.to
    msg = sip.parse_message(build().replace(b"From: <sip:a@example.com>;tag=1", b"From: <nope"))
    with pytest.raises(sip.SipParseError):
        _ = msg.from_


def test_bad_request_uri_raises_when_asked() -> None:
    msg = sip.parse_message(build(start="REGISTER sip:@example.com SIP/2.0"))
    assert isinstance(msg, sip.Request)
    with pytest.raises(sip.SipParseError):
        _ = msg.uri


def test_building_messages_by_hand_checks_call_id_and_cseq() -> None:
    headers = sip.Headers([("Call-ID", "x"), ("CSeq", "2 OPTIONS"), ("Contact", "<sip:a@b>")])
    req = sip.Request("OPTIONS", "sip:b", headers)
    assert req.cseq == (2, "OPTIONS")
    assert req.contacts()[0].uri.host == "b"
    resp = sip.Response(200, "OK", headers, b"body")
    assert resp.body == b"body"
    with pytest.raises(sip.SipParseError):
        sip.Response(200, "OK", sip.Headers([("Call-ID", "x")]))
