"""Hypothesis: the Contact fast path (sip.headers._contacts_split) agrees with the
general parser (``_parse_contacts(value, False)``) on generated Contact headers.

The generator leans on what breaks tokenizers: quoted display names holding commas,
semicolons, ``<``, ``>`` and escaped quotes; addr-spec without ``<>``; IPv6 hosts;
quoted param values holding the same; flags; percent-encoding; blanks and tabs in the
places the grammar allows them and in some it does not. Whenever the fast path
answers, its answer must be the general parser's; on the usual shape it must answer.
"""

from __future__ import annotations

import os
import string

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import sip
from sip.headers import _contacts_split, _parse_contacts

SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=int(os.environ.get("SIP_HYPOTHESIS_EXAMPLES", "150")) * 2,
)

TOKEN_CHARS = string.ascii_letters + string.digits + "-.!%*_+`'~"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=10)
# what ends up inside quotes: the characters that matter, and any printable text
QUOTED_CHARS = ',;<>:=@"\\ \tab\u00e9'
quoted_text = st.one_of(
    st.text(QUOTED_CHARS, max_size=12),
    st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=12),
)
hosts = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9_-]{0,6}[a-z0-9])?(\.[a-z0-9]{1,5}){0,2}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
USER_CHARS = string.ascii_letters + string.digits + "-_.!~*'()&=+$;/"
users = st.one_of(
    st.none(),
    st.lists(
        st.one_of(
            st.text(USER_CHARS, min_size=1, max_size=5),
            st.sampled_from(["%40", "%3A", "%2B", "%22", "%3C"]),
        ),
        min_size=1,
        max_size=3,
    ).map("".join),
)
PCHARS = string.ascii_letters + string.digits + "-_.!~*'()%+[]/:&$=@"
uri_params = st.lists(
    st.tuples(
        st.text(PCHARS.replace("=", ""), min_size=1, max_size=6),
        st.one_of(st.none(), st.text(PCHARS, max_size=8)),
    ),
    max_size=4,
)
HVCHARS = TOKEN_CHARS + ":/[]=<>@"
header_params = st.lists(
    st.tuples(
        st.one_of(tokens, st.sampled_from(["expires", "Expires", "q", "+sip.instance"])),
        st.one_of(
            st.none(),
            st.text(HVCHARS, max_size=8).map(lambda v: ("plain", v)),
            st.integers(0, 2**33).map(lambda n: ("plain", str(n))),
            quoted_text.map(lambda v: ("quoted", v)),
        ),
    ),
    max_size=4,
)
# (before ";", after ";", around "=") blanks
PARAM_BLANKS = st.sampled_from([("", "", ""), ("", "", ""), (" ", " ", " "), ("\t", "", "")])


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def contact(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["sip", "sip", "sips", "SIP"]))
    uri = f"{scheme}:"
    user = draw(users)
    if user is not None:
        uri += user + "@"
    uri += draw(hosts)
    port = draw(st.one_of(st.none(), st.integers(0, 70000)))
    if port is not None:
        uri += f":{port}"
    for name, value in draw(uri_params):
        uri += f";{name}" + ("" if value is None else f"={value}")
    shape = draw(st.sampled_from(["angle", "angle", "quoted", "token", "bare"]))
    if shape == "bare":
        out = uri
    elif shape == "angle":
        out = f"<{uri}>"
    elif shape == "quoted":
        out = quote(draw(quoted_text)) + draw(st.sampled_from(["", " ", "  "])) + f"<{uri}>"
    else:
        out = " ".join(draw(st.lists(tokens, min_size=1, max_size=2))) + f" <{uri}>"
    before, after, around = draw(PARAM_BLANKS)
    for name, value in draw(header_params):
        out += f"{before};{after}{name}"
        if value is not None:
            kind, text = value
            out += f"{around}={around}" + (quote(text) if kind == "quoted" else text)
    return out


def general(value: str) -> list[sip.Contact] | str:
    try:
        return _parse_contacts(value, False)
    except sip.SipParseError:
        return "SipParseError"


def check(value: str) -> None:
    fast = _contacts_split(value)
    expected = general(value)
    if fast is not None:
        assert fast == expected
    try:
        got: list[sip.Contact] | str = sip.parse_contacts(value)
    except sip.SipParseError:
        got = "SipParseError"
    assert got == expected


SEPARATORS = st.sampled_from([",", ", ", " , ", ",  ", "\t,", ",\t"])


@SETTINGS
@given(st.lists(contact(), min_size=1, max_size=3), SEPARATORS)
@example(['"a, b; <c> \\"d\\"" <sip:a@h>', '<sip:b@[::1]:5060;ob>;+sip.instance="<u,r;n>"'], ", ")
@example(['<sip:%22a@h;p=%3C>;q="x;y";flag', "sip:c@h;expires=5"], ",")
def test_fast_path_agrees_with_the_general_parser(group: list[str], sep: str) -> None:
    check(sep.join(group))


@SETTINGS
@given(
    st.lists(contact(), min_size=1, max_size=2),
    st.lists(
        st.tuples(st.integers(0, 400), st.sampled_from(list(';=,"\\<> \t:@[]?%*\r'))), max_size=3
    ),
)
def test_fast_path_agrees_on_mutated_values(group: list[str], edits: list[tuple[int, str]]) -> None:
    value = ", ".join(group)
    for pos, char in edits:
        pos %= len(value) + 1
        value = value[:pos] + char + value[pos:]
    check(value)


# no backslash, quote, tab or "?" (the fast path leaves those to the general parser)
USUAL_QUOTED_CHARS = ",;<>:=@ ab\u00e9"


@st.composite
def usual_contact(draw: st.DrawFn) -> str:
    uri = draw(st.sampled_from(["sip", "sips"])) + ":"
    user = draw(
        st.one_of(
            st.none(), st.text(string.ascii_letters + string.digits + "%-.", min_size=1, max_size=8)
        )
    )
    if user is not None:
        uri += user + "@"
    uri += draw(hosts)
    port = draw(st.one_of(st.none(), st.integers(0, 65535)))
    if port is not None:
        uri += f":{port}"
    for name, value in draw(
        uri_params.map(lambda ps: [(n, v) for n, v in ps if "@" not in n + (v or "")])
    ):
        uri += f";{name}" + ("" if value is None else f"={value}")
    out = f"<{uri}>"
    display = draw(st.one_of(st.none(), st.text(USUAL_QUOTED_CHARS, max_size=8)))
    if display is not None:
        out = f'"{display}"' + draw(st.sampled_from(["", " "])) + out
    for name, value in draw(header_params):
        out += f";{name}"
        if value is not None:
            kind, text = value
            if kind == "quoted":
                out += '="' + "".join(c for c in text if c not in '\\"\r\n\t?') + '"'
            else:
                out += "=" + text
    return out


@SETTINGS
@given(st.lists(usual_contact(), min_size=1, max_size=3), st.sampled_from([",", ", "]))
def test_fast_path_takes_the_usual_shape(group: list[str], sep: str) -> None:
    value = sep.join(group)
    expected = general(value)
    fast = _contacts_split(value)
    if expected != "SipParseError":
        assert fast is not None, value
    if fast is not None:
        assert fast == expected
