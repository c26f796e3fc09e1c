"""parse_uri: SIP, SIPS, tel and opaque URIs; params as written; bad URIs."""

from __future__ import annotations

from typing import Any

import pytest

import sip
from sip.uri import _parse_uri, parse_params

GOOD: list[tuple[str, dict[str, Any]]] = [
    ("sip:example.com", {"scheme": "sip", "user": None, "host": "example.com", "port": None, "params": {}}),
    ("SIP:Alice@Example.COM", {"scheme": "sip", "user": "Alice", "host": "Example.COM"}),
    ("sips:bob@biloxi.example.com:5061", {"scheme": "sips", "user": "bob", "port": 5061}),
    ("sip:alice:secret@atlanta.com;transport=tcp", {"user": "alice", "password": "secret", "params": {"transport": "tcp"}}),
    ("sip:alice:@atlanta.com", {"user": "alice", "password": ""}),
    ("sip:[2001:db8::1]", {"host": "[2001:db8::1]", "port": None}),
    ("sip:u@[2001:db8::1]:5061;transport=tls", {"host": "[2001:db8::1]", "port": 5061, "params": {"transport": "tls"}}),
    ("sip:u@[::ffff:192.0.2.1]", {"host": "[::ffff:192.0.2.1]"}),
    ("sip:u@h;lr;Transport=UDP;maddr=239.255.255.1", {"params": {"lr": None, "transport": "UDP", "maddr": "239.255.255.1"}}),
    ("sip:u@h;a=1;a=2", {"params": {"a": "2"}}),
    ("sip:u@h;a=;b", {"params": {"a": "", "b": None}}),
    ("sip:u@h;;a=1;", {"params": {"a": "1"}}),
    ("sip:u@h?subject=project&priority=urgent", {"headers": "subject=project&priority=urgent", "params": {}}),
    ("sip:u@h;x=1?h=v", {"headers": "h=v", "params": {"x": "1"}}),
    ("sip:%61lice@h", {"user": "%61lice"}),
    ("sip:+1-212-555-1212:1234@gateway.com;user=phone", {"user": "+1-212-555-1212", "password": "1234"}),
    ("sip:a;b=c@host", {"user": "a;b=c", "host": "host", "params": {}}),
    ("sip:u@h;pn-prid=cK5x:APA91b&x:voip;pn-param=AB.c.d", {"params": {"pn-prid": "cK5x:APA91b&x:voip", "pn-param": "AB.c.d"}}),
    ("sip:u@my_host.example:65535", {"host": "my_host.example", "port": 65535}),
    ("sip:u@h:123456;x", {"port": None, "error": True}),
    ("tel:+1-201-555-0123", {"scheme": "tel", "user": "+1-201-555-0123", "host": "", "params": {}}),
    ("TEL:7042;Phone-Context=example.com", {"scheme": "tel", "user": "7042", "params": {"phone-context": "example.com"}}),
    ("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6", {"scheme": "urn", "user": None, "host": "", "params": {}}),
    ("http://example.com/x", {"scheme": "http"}),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), GOOD, ids=[t for t, _ in GOOD])
def test_parse_uri(text: str, expected: dict[str, Any]) -> None:
    if expected.pop("error", False):
        with pytest.raises(sip.SipParseError):
            sip.parse_uri(text)
        return
    uri = sip.parse_uri(text)
    for key, value in expected.items():
        assert getattr(uri, key) == value, key
    assert str(uri) == uri.raw == text
    assert uri == _parse_uri(text)  # the fast path and the general one agree


BAD = [
    "",
    "sip",
    "sip:",
    "sip:@host",
    "sip::pw@host",
    "sip:u@",
    "sip:u@ho st",
    "sip:u@host;x=<y>",
    'sip:u@host;x="y"',
    "sip:u@host\t",
    "sip:u@host\r\n",
    "sip:u@host\n",
    "sip:u@h!st",
    "sip:u@host:",
    "sip:u@host:port",
    "sip:u@host:65536",
    "sip:u@host:99999",
    "sip:u@host:\u0661",
    "sip:u@[2001:db8::1",
    "sip:u@[zz]",
    "sip:u@[2001:db8::1]5060",
    "sip:u@[2001:db8::1]:x",
    "sip:u@host;=value",
    "sip:u@host;a=1;=value",
    "1sip:x",
    "s p:x",
    "tel:;phone-context=x",
    "tel:;=x",
    "tel:1;=x",
]


@pytest.mark.parametrize("text", BAD)
def test_bad_uri_raises(text: str) -> None:
    with pytest.raises(sip.SipParseError):
        sip.parse_uri(text)


def test_hostport() -> None:
    assert sip.parse_uri("sip:u@h").hostport == "h"
    assert sip.parse_uri("sip:u@[::1]:5060").hostport == "[::1]:5060"


def test_parse_params_skips_empty_segments_and_rejects_nameless_values() -> None:
    assert parse_params("a=1;;B") == {"a": "1", "b": None}
    assert parse_params("") == {}
    with pytest.raises(sip.SipParseError):
        parse_params("=1")


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("abc", "abc"),
        ("fcm%3AAPA91b", "fcm:APA91b"),
        ("%E2%9C%93", "\u2713"),
        ("bad%zzescape", "bad%zzescape"),
        ("%ff", "\ufffd"),
    ],
)
def test_percent_decode(raw: str, decoded: str) -> None:
    assert sip.percent_decode(raw) == decoded
    assert sip.unquote_param(raw) == decoded


def test_unquote_param_keeps_flags() -> None:
    assert sip.unquote_param(None) is None
