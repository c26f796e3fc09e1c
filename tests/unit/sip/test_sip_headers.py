"""Contact / name-addr grammar (RFC 3261 §20.10, §25.1) and the Headers container."""

from __future__ import annotations

from typing import Any

import pytest

import sip
from sip.headers import _params_re, _params_split, _parse_contacts

# value -> [(display_name, uri raw, header params, expires, wildcard)]
CONTACTS: list[tuple[str, list[tuple[Any, ...]]]] = [
    ("<sip:a@h>", [(None, "sip:a@h", {}, None, False)]),
    ("  <sip:a@h>  ", [(None, "sip:a@h", {}, None, False)]),
    ("<sip:a@h>;expires=60", [(None, "sip:a@h", {"expires": "60"}, 60, False)]),
    ("<sip:a@h>;Expires=60;Q=0.7", [(None, "sip:a@h", {"expires": "60", "q": "0.7"}, 60, False)]),
    ("<sip:a@h>, <sip:b@h>", [(None, "sip:a@h", {}, None, False), (None, "sip:b@h", {}, None, False)]),
    ("<sip:a@h> , <sip:b@h>;expires=0", [(None, "sip:a@h", {}, None, False), (None, "sip:b@h", {"expires": "0"}, 0, False)]),
    ("<sip:a@h>,<sip:b@h>", [(None, "sip:a@h", {}, None, False), (None, "sip:b@h", {}, None, False)]),
    ('"Mr. Watson" <sip:watson@worcester.bell-telephone.com>;q=0.7; expires=3600',
     [("Mr. Watson", "sip:watson@worcester.bell-telephone.com", {"q": "0.7", "expires": "3600"}, 3600, False)]),
    ('"a, b; <c>" <sip:a@h>, "d" <sip:d@h>',
     [("a, b; <c>", "sip:a@h", {}, None, False), ("d", "sip:d@h", {}, None, False)]),
    (r'"say \"hi\" \\ bye" <sip:a@h>', [('say "hi" \\ bye', "sip:a@h", {}, None, False)]),
    ('"" <sip:a@h>', [("", "sip:a@h", {}, None, False)]),
    ("Mr Watson <sip:w@h>", [("Mr Watson", "sip:w@h", {}, None, False)]),
    ("sip:a@h;expires=30;reg-id=1", [(None, "sip:a@h", {"expires": "30", "reg-id": "1"}, 30, False)]),
    ("sip:a@h;x, sip:b@h", [(None, "sip:a@h", {"x": None}, None, False), (None, "sip:b@h", {}, None, False)]),
    ("<sip:a@h;transport=tcp>;+sip.instance=\"<urn:uuid:1-2>\";reg-id=1",
     [(None, "sip:a@h;transport=tcp", {"+sip.instance": "<urn:uuid:1-2>", "reg-id": "1"}, None, False)]),
    ('<sip:a@h>;+org.linphone.specs="a,b";x=1, <sip:b@h>',
     [(None, "sip:a@h", {"+org.linphone.specs": "a,b", "x": "1"}, None, False), (None, "sip:b@h", {}, None, False)]),
    ('<sip:a@h>;p="x\\"y"', [(None, "sip:a@h", {"p": 'x"y'}, None, False)]),
    ('<sip:a@h> ; p = "v" ; flag', [(None, "sip:a@h", {"p": "v", "flag": None}, None, False)]),
    ('<sip:a@h>;p="";q', [(None, "sip:a@h", {"p": "", "q": None}, None, False)]),
    ("<sip:a@h>;received=[2001:db8::1]:5060", [(None, "sip:a@h", {"received": "[2001:db8::1]:5060"}, None, False)]),
    ("<sip:a@h>;tok=abc==;x=a=b", [(None, "sip:a@h", {"tok": "abc==", "x": "a=b"}, None, False)]),
    ("<sip:a@h>;expires=99999999999", [(None, "sip:a@h", {"expires": "99999999999"}, 2**32 - 1, False)]),
    ("<tel:+123>;expires=5", [(None, "tel:+123", {"expires": "5"}, 5, False)]),
    ("<sip:a@h;;x;>;y", [(None, "sip:a@h;;x;", {"y": None}, None, False)]),
    ('"B" <sip:a@h>  ', [("B", "sip:a@h", {}, None, False)]),
    ('"B" <sip:a@h> , <sip:b@h>', [("B", "sip:a@h", {}, None, False), (None, "sip:b@h", {}, None, False)]),
    ("*", [(None, "*", {}, None, True)]),
    (" * ", [(None, "*", {}, None, True)]),
    ("*;expires=0", [(None, "*", {"expires": "0"}, None, True)]),
    ("* <sip:a@h>", [("*", "sip:a@h", {}, None, False)]),
]  # fmt: skip


@pytest.mark.parametrize(("value", "expected"), CONTACTS, ids=[v for v, _ in CONTACTS])
def test_parse_contacts(value: str, expected: list[tuple[Any, ...]]) -> None:
    contacts = sip.parse_contacts(value)
    got = [(c.display_name, c.uri.raw, c.params, c.expires, c.is_wildcard) for c in contacts]
    assert got == expected
    assert contacts == _parse_contacts(value, False)  # the one-regex fast path agrees


def test_several_contact_headers_are_concatenated() -> None:
    headers = sip.Headers(
        [
            ("Call-ID", "x"),
            ("CSeq", "1 REGISTER"),
            ("m", "<sip:a@h>, <sip:b@h>"),
            ("Contact", "<sip:c@h>"),
        ]
    )
    msg = sip.Request("REGISTER", "sip:h", headers)
    assert [c.uri.user for c in msg.contacts()] == ["a", "b", "c"]
    assert msg.expires is None and msg.user_agent is None


def test_no_contact_header_means_no_contacts() -> None:
    msg = sip.Request("REGISTER", "sip:h", sip.Headers([("Call-ID", "x"), ("CSeq", "1 REGISTER")]))
    assert msg.contacts() == []


def test_wildcard_uri_and_tag() -> None:
    (c,) = sip.parse_contacts("*")
    assert c.uri.scheme == "" and c.uri.host == "" and str(c.uri) == "*" and c.tag is None


BAD_CONTACTS = [
    "",
    "   ",
    "<sip:a@h",
    "<sip:a@h>>",
    "<sip:<a@h>",
    "<sip:a@h> x",
    "<sip:a@h>;",
    "<sip:a@h>;;x",
    "<sip:a@h>;=1",
    "<sip:a@h>;expires=soon",
    "<sip:a@h>;expires=-1",
    "<sip:a@h>,",
    "<sip:a@h;=x>",
    "<sip:a@h:99999>",
    "<sip:a@h:65536>;x=1",
    "<sip:a@h>, ",
    "<sip:a@h> <sip:b@h>",
    '"unclosed <sip:a@h>',
    '<sip:a@h>;p="unclosed',
    '<sip:a@h>;"x"',
    '<sip:a@h>;p"x"',
    '<sip:a@h>;p=x"y"',
    "* junk",
    "*;x junk",
    "*, <sip:a@h>",
    "<>",
    "<sip:@h>",
    "sip:a@h@",
    ",",
]


@pytest.mark.parametrize("value", BAD_CONTACTS)
def test_bad_contacts_raise(value: str) -> None:
    with pytest.raises(sip.SipParseError):
        sip.parse_contacts(value)
    with pytest.raises(sip.SipParseError):
        _parse_contacts(value, False)


NAME_ADDRS = [
    (
        "<sip:alice@atlanta.com>;tag=1928301774",
        None,
        "sip:alice@atlanta.com",
        {"tag": "1928301774"},
    ),
    ('"Bob" <sips:bob@biloxi.com> ;tag=a48s', "Bob", "sips:bob@biloxi.com", {"tag": "a48s"}),
    (
        "Anonymous <sip:c8oqz84zk7z@privacy.org>;tag=hyh8",
        "Anonymous",
        "sip:c8oqz84zk7z@privacy.org",
        {"tag": "hyh8"},
    ),
    (
        "sip:+12125551212@phone2net.com;tag=887s",
        None,
        "sip:+12125551212@phone2net.com",
        {"tag": "887s"},
    ),
    ("sip:alice@atlanta.com", None, "sip:alice@atlanta.com", {}),
    ("<sip:alice@atlanta.com>  ", None, "sip:alice@atlanta.com", {}),
]


@pytest.mark.parametrize(("text", "display", "uri", "params"), NAME_ADDRS)
def test_parse_name_addr(text: str, display: str | None, uri: str, params: dict[str, str]) -> None:
    na = sip.parse_name_addr(text)
    assert (na.display_name, na.uri.raw, na.params) == (display, uri, params)
    assert na.tag == params.get("tag")


@pytest.mark.parametrize(
    "text", ["", "<sip:a@h>, <sip:b@h>", "<sip:a@h> junk", "*", "<sip:a@h>;tag"]
)
def test_bad_name_addr_raises(text: str) -> None:
    if text == "<sip:a@h>;tag":
        assert sip.parse_name_addr(text).tag is None
        return
    with pytest.raises(sip.SipParseError):
        sip.parse_name_addr(text)


@pytest.mark.parametrize(
    "section",
    [
        ";a=1;b",
        ';a="x,y";b=2, <sip:next>',
        ';a="x";b="y"',
        ';a="x" ;b=1',
        ";a=1 , x",
        ";a=1,",
        ';a="x\\"y"',
        ';a="x"junk',
        ';a="x"',
        ';a="unclosed',
        ";a=1;",
        ";=1",
        ';"x"',
        ';a"x"',
        ';a=1"x"',
        "junk",
        ';a="q";;b',
        ';a="q";=b',
        ';a="q";b;="x"',
    ],
)
def test_param_fast_path_agrees_with_the_regex(section: str) -> None:
    text = "<sip:a@h>" + section
    fast = _params_split(text, 9, len(text))
    slow = _params_re(text, 9, len(text))
    if fast is not None:
        assert fast == slow


def test_headers_container() -> None:
    h = sip.Headers([("Via", "v1"), ("v", "v2"), ("X-Thing", "a"), ("x-thing", "b")])
    assert h.get("VIA") == "v1"
    assert h.get_all("via") == ["v1", "v2"]
    assert h.get_all("X-THING") == ["a", "b"]
    assert h.items() == [("Via", "v1"), ("v", "v2"), ("X-Thing", "a"), ("x-thing", "b")]
    assert list(h) == h.items()
    assert len(h) == 4
    assert "v" in h and "Via" in h and "Contact" not in h
    assert 42 not in h
    returned = h.get_all("via")
    returned.append("mutated")
    assert h.get_all("via") == ["v1", "v2"]
    assert "Headers(" in repr(h)


def test_header_name_must_be_a_token() -> None:
    with pytest.raises(sip.SipParseError):
        sip.Headers([("Bad Name", "x")])
    assert sip.header_key("Via ") == "via"
    assert sip.header_key("X-Learned-Name\t") == "x-learned-name"
    assert sip.header_key("X-Learned-Name\t") == "x-learned-name"  # now cached


@pytest.mark.parametrize(("compact", "full"), sorted(sip.COMPACT_FORMS.items()))
def test_compact_forms(compact: str, full: str) -> None:
    assert sip.canonical_name(compact) == sip.canonical_name(full) == full.lower()
    assert sip.canonical_name(compact.upper()) == full.lower()
    h = sip.Headers([(compact, "value")])
    assert h.get(full) == "value"
    assert h.get(full.upper()) == "value"


def test_learned_names_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from sip import headers

    monkeypatch.setattr(headers, "_KEYS_LIMIT", 0)
    assert sip.header_key("X-Never-Cached-Name") == "x-never-cached-name"
    assert "X-Never-Cached-Name" not in headers._KEYS
