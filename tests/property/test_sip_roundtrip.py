"""Hypothesis: build SIP messages, serialize, parse, compare; hostile bytes only ever
raise SipParseError; the fast paths agree with the general ones."""

from __future__ import annotations

import os
import string
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import sip
from sip.headers import _params_re, _params_split, _parse_contacts
from sip.uri import _parse_uri

CORPUS = sorted((Path(__file__).resolve().parents[1] / "data" / "sip").glob("*.sip"))
SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=int(os.environ.get("SIP_HYPOTHESIS_EXAMPLES", "150")),
)

TOKEN_CHARS = string.ascii_letters + string.digits + "-.!%*_+`'~"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
# header values: printable, no CR/LF, no blanks at either end
values = st.text(
    st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="\r\n\x85\u2028\u2029"),
    max_size=40,
).map(lambda s: s.strip(" \t"))
RESERVED = {"content-length", "call-id", "cseq", "contact", "to", "from", "via"}
extra_headers = st.lists(
    st.tuples(tokens.filter(lambda n: sip.canonical_name(n) not in RESERVED), values), max_size=8
)

hostnames = st.from_regex(
    r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z0-9]{1,6}){0,3}", fullmatch=True
)
hosts = st.one_of(
    hostnames,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
USER_CHARS = string.ascii_letters + string.digits + "-_.!~*'()&=+$,;?/"
users = st.one_of(
    st.none(),
    st.lists(
        st.one_of(
            st.text(USER_CHARS, min_size=1, max_size=6), st.sampled_from(["%40", "%3A", "%20"])
        ),
        min_size=1,
        max_size=3,
    ).map("".join),
)
PCHARS = string.ascii_letters + string.digits + "-_.!~*'()%+[]/:&$"
uri_params = st.lists(
    st.tuples(
        st.text(PCHARS, min_size=1, max_size=8), st.one_of(st.none(), st.text(PCHARS, max_size=10))
    ),
    max_size=5,
)
quoted_content = st.text(
    st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="\r\n\x85\u2028\u2029"),
    max_size=20,
)
HVCHARS = TOKEN_CHARS + ":/[]=<>"
header_params = st.lists(
    st.tuples(
        tokens.filter(lambda n: n.lower() != "expires"),
        st.one_of(
            st.none(),
            st.text(HVCHARS, max_size=10).map(lambda v: ("plain", v)),
            quoted_content.map(lambda v: ("quoted", v)),
        ),
        st.booleans(),  # blanks around ";" and "="
    ),
    max_size=4,
)


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class GenContact:
    display: tuple[str, str] | None  # (kind, text)
    scheme: str
    user: str | None
    host: str
    port: int | None
    uparams: list[tuple[str, str | None]]
    hparams: list[tuple[str, tuple[str, str] | None, bool]]
    bracketed: bool = True
    expected_params: dict[str, str | None] = field(default_factory=dict)

    def uri_text(self) -> str:
        text = f"{self.scheme}:"
        if self.user is not None:
            text += self.user + "@"
        text += self.host
        if self.port is not None:
            text += f":{self.port}"
        for name, value in self.uparams:
            text += f";{name}" + ("" if value is None else f"={value}")
        return text

    def serialize(self) -> str:
        out = ""
        if self.display is not None:
            kind, text = self.display
            out += (quote(text) if kind == "quoted" else text) + " "
        uri = self.uri_text()
        out += f"<{uri}>" if self.bracketed else uri
        for name, value, blanks in self.hparams:
            sep = " ; " if blanks else ";"
            out += sep + name
            if value is not None:
                kind, v = value
                out += (" = " if blanks else "=") + (quote(v) if kind == "quoted" else v)
        return out

    def expected_display(self) -> str | None:
        if self.display is None:
            return None
        kind, text = self.display
        return text if kind == "quoted" else (text or None)

    def expected_uparams(self) -> dict[str, str | None]:
        return {name.lower(): value for name, value in self.uparams}

    def expected_hparams(self) -> dict[str, str | None]:
        return {name.lower(): (None if v is None else v[1]) for name, v, _ in self.hparams}


@st.composite
def contacts(draw: st.DrawFn) -> GenContact:
    display = draw(
        st.one_of(
            st.none(),
            quoted_content.map(lambda t: ("quoted", t)),
            st.lists(tokens, min_size=1, max_size=3).map(lambda w: ("token", " ".join(w))),
        )
    )
    c = GenContact(
        display,
        draw(st.sampled_from(["sip", "sips", "SIP"])),
        draw(users),
        draw(hosts),
        draw(st.one_of(st.none(), st.integers(0, 65535))),
        draw(uri_params),
        draw(header_params),
    )
    expires = draw(st.one_of(st.none(), st.integers(0, 2**32 + 5)))
    if expires is not None:
        c.hparams.insert(
            draw(st.integers(0, len(c.hparams))), ("expires", ("plain", str(expires)), False)
        )
    c.scheme = c.scheme.lower() if c.scheme == "SIP" and draw(st.booleans()) else c.scheme
    if display is None and not c.uparams and (c.user is None or c.user.isalnum()):
        c.bracketed = draw(st.booleans())
    return c


@dataclass
class GenMessage:
    request: bool
    method: str
    status: int
    reason: str
    call_id: str
    cseq: int
    contact_headers: list[list[GenContact]]
    extra: list[tuple[str, str]]
    body: bytes
    lf_only: bool
    garbage: bytes

    def serialize(self) -> bytes:
        eol = "\n" if self.lf_only else "\r\n"
        if self.request:
            lines = [f"{self.method} sip:registrar.example.com SIP/2.0"]
        else:
            lines = [f"SIP/2.0 {self.status} {self.reason}".rstrip(" ")]
        lines += [
            "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-x",
            "From: <sip:a@example.com>;tag=1",
            "To: <sip:a@example.com>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} {self.method}",
        ]
        for i, group in enumerate(self.contact_headers):
            lines.append(
                ("m" if i % 2 else "Contact") + ": " + ", ".join(c.serialize() for c in group)
            )
        lines += [f"{n}: {v}" for n, v in self.extra]
        lines.append(f"Content-Length: {len(self.body)}")
        head = eol.join(lines) + eol + eol
        return head.encode() + self.body + self.garbage


messages = st.builds(
    GenMessage,
    request=st.booleans(),
    method=st.one_of(st.sampled_from(["REGISTER", "OPTIONS"]), tokens),
    status=st.integers(100, 699),
    reason=st.text(string.ascii_letters + " ", max_size=20).map(str.strip),
    call_id=st.text(string.ascii_letters + string.digits + "-.@!%*_+~", min_size=1, max_size=30),
    cseq=st.integers(0, 2**31 - 1),
    contact_headers=st.lists(st.lists(contacts(), min_size=1, max_size=3), max_size=2),
    extra=extra_headers,
    body=st.binary(max_size=60),
    lf_only=st.booleans(),
    garbage=st.binary(max_size=20),
)


@SETTINGS
@given(messages)
def test_serialize_then_parse_gives_the_same_message(gen: GenMessage) -> None:
    msg = sip.parse_message(gen.serialize())
    if gen.request:
        assert isinstance(msg, sip.Request)
        assert msg.method == gen.method
        assert msg.uri.host == "registrar.example.com"
    else:
        assert isinstance(msg, sip.Response)
        assert (msg.status_code, msg.reason) == (gen.status, gen.reason)
    assert msg.call_id == gen.call_id
    assert msg.cseq == (gen.cseq, gen.method)
    assert msg.body == gen.body
    for name, _ in gen.extra:
        assert msg.headers.get_all(name) == [v for n, v in gen.extra if n.lower() == name.lower()]
    expected = [c for group in gen.contact_headers for c in group]
    got = msg.contacts()
    assert len(got) == len(expected)
    for c, e in zip(got, expected, strict=True):
        assert c.display_name == e.expected_display()
        assert c.uri.scheme == e.scheme.lower()
        assert (c.uri.user, c.uri.host, c.uri.port) == (e.user, e.host, e.port)
        assert c.uri.params == e.expected_uparams()
        assert c.params == e.expected_hparams()
        assert c.uri.raw == e.uri_text()
        exp = e.expected_hparams().get("expires")
        assert c.expires == (None if exp is None else min(int(exp), 2**32 - 1))
        assert not c.is_wildcard


def contacts_or_error(value: str, fast: bool) -> list[sip.Contact] | str:
    try:
        return _parse_contacts(value, fast)
    except sip.SipParseError:
        return "SipParseError"


@SETTINGS
@given(st.lists(contacts(), min_size=1, max_size=3), st.sampled_from([",", ", ", " ,\t"]))
def test_contact_fast_path_agrees_with_the_general_parser(
    group: list[GenContact], sep: str
) -> None:
    value = sep.join(c.serialize() for c in group)
    assert contacts_or_error(value, True) == contacts_or_error(value, False)


@SETTINGS
@given(
    st.lists(contacts(), min_size=1, max_size=2),
    st.lists(
        st.tuples(st.integers(0, 300), st.sampled_from(list(';=,"\\<> \t:@[]?%*'))), max_size=3
    ),
)
def test_contact_paths_agree_on_mutated_values(
    group: list[GenContact], edits: list[tuple[int, str]]
) -> None:
    value = ", ".join(c.serialize() for c in group)
    for pos, char in edits:
        pos %= len(value) + 1
        value = value[:pos] + char + value[pos:]
    assert contacts_or_error(value, True) == contacts_or_error(value, False)


@SETTINGS
@given(contacts())
def test_uri_fast_path_agrees_with_the_general_parser(c: GenContact) -> None:
    text = c.uri_text()
    assert sip.parse_uri(text) == _parse_uri(text)


@SETTINGS
@given(st.text(string.printable, max_size=60))
@example("sip:a@h:99999")
@example("sip:a:b@h")
def test_uri_paths_agree_on_any_text(text: str) -> None:
    try:
        fast = sip.parse_uri(text)
    except sip.SipParseError:
        fast = None
    try:
        slow = _parse_uri(text)
    except sip.SipParseError:
        slow = None
    assert fast == slow


@SETTINGS
@given(st.text(string.ascii_letters[:6] + ' ;=,"\\\t<>\x0b\xa0\r', max_size=30))
def test_param_fast_path_agrees_with_the_regex(section: str) -> None:
    text = "<sip:a@h>" + section
    fast = _params_split(text, 9, len(text))
    if fast is not None:
        assert fast == _params_re(text, 9, len(text))


def exercise(msg: sip.Request | sip.Response) -> None:
    """Touch every lazy accessor: each may raise SipParseError, nothing else."""
    for accessor in (
        lambda: msg.contacts(),
        lambda: msg.to,
        lambda: msg.from_,
        lambda: msg.expires,
        lambda: msg.user_agent,
        lambda: msg.uri if isinstance(msg, sip.Request) else None,
        lambda: msg.headers.items(),
    ):
        try:
            accessor()
        except sip.SipParseError:
            pass


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_sip_parse_error(data: bytes) -> None:
    try:
        msg = sip.parse_message(data)
    except sip.SipParseError:
        return
    exercise(msg)


@SETTINGS
@given(
    st.sampled_from(CORPUS),
    st.lists(
        st.tuples(st.integers(0, 2000), st.binary(min_size=0, max_size=4)), min_size=1, max_size=6
    ),
)
def test_mutated_corpus_raises_only_sip_parse_error(
    path: Path, edits: list[tuple[int, bytes]]
) -> None:
    data = bytearray(path.read_bytes())
    for pos, chunk in edits:
        pos %= len(data) + 1
        data[pos : pos + len(chunk) // 2] = chunk
    try:
        msg = sip.parse_message(bytes(data))
    except sip.SipParseError:
        return
    exercise(msg)


@SETTINGS
@given(
    messages,
    tokens.filter(lambda n: sip.canonical_name(n) not in RESERVED),
    st.lists(st.text(TOKEN_CHARS + ":/<>", min_size=1, max_size=8), min_size=2, max_size=5),
    st.sampled_from(["\r\n ", "\r\n\t", "\r\n   ", "\n "]),
)
def test_folding_a_header_keeps_its_value(
    gen: GenMessage, name: str, words: list[str], fold: str
) -> None:
    gen.extra = [(name, fold.join(words))]
    msg = sip.parse_message(gen.serialize())
    assert msg.headers.get(name) == " ".join(words)
    assert len(msg.headers) == 7 + len(gen.contact_headers)


@SETTINGS
@given(messages)
def test_line_ends_do_not_matter(gen: GenMessage) -> None:
    gen.lf_only = False
    crlf = sip.parse_message(gen.serialize())
    gen.lf_only = True
    lf = sip.parse_message(gen.serialize())
    assert crlf.headers.items() == lf.headers.items()
    assert crlf.body == lf.body
    assert crlf.contacts() == lf.contacts()
