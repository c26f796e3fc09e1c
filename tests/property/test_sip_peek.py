"""Hypothesis: sip.peek_* agree with sip.parse_message whenever both answer."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import sip
from tests.unit.sip.test_sip_peek import check_agrees

TOKEN_CHARS = "abcXYZ019-.!%*_+`'~"
BLANKS = st.sampled_from(["", " ", "\t", "  ", " \t"])


def _case(name: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda upper: "".join(
            c.upper() if u else c.lower() for c, u in zip(name, upper, strict=True)
        )
    )


call_id_names = st.one_of(_case("Call-ID"), _case("i"))
call_id_values = st.text(
    st.characters(codec="utf-8", exclude_characters="\r\n\x00"), min_size=1, max_size=20
) | st.sampled_from(["a84b4c76e66710@pc33.atlanta.com", "x y", "é", " "])
_numbers = st.integers(0, 2**31 + 5).map(str)
cseq_numbers = _numbers | _numbers | _numbers | st.sampled_from(["01", "", "x1", "99999999999"])
methods = st.sampled_from(["REGISTER", "INVITE", "OPTIONS", "register"]) | st.text(
    TOKEN_CHARS, min_size=1, max_size=8
)
start_lines = st.one_of(
    st.builds("{} sip:example.com SIP/2.0".format, methods),
    st.builds(
        "SIP/2.0 {} {}".format,
        (st.integers(100, 699) | st.integers(0, 799)).map("{:03d}".format),
        st.sampled_from(["OK", "Unauthorized", "", "Odd Reason"]),
    ),
    st.sampled_from(["SIP/2.0 200", "SIP/2.0 200 ", "REGISTER  sip:x SIP/2.0", "junk"]),
)
start_lines = start_lines | start_lines  # the odd ones a sixth of the time


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    headers = [
        "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-1",
        f"{draw(call_id_names)}{draw(BLANKS)}:{draw(BLANKS)}{draw(call_id_values)}{draw(BLANKS)}",
        f"{draw(_case('CSeq'))}{draw(BLANKS)}:{draw(BLANKS)}{draw(cseq_numbers)}"
        f"{draw(st.sampled_from([' ', '  ', chr(9)]))}{draw(methods)}{draw(BLANKS)}",
        "Contact: <sip:alice@10.0.0.1>;expires=60",
    ]
    headers += draw(
        st.lists(
            st.sampled_from(
                [
                    "Call-ID: second@x",
                    "CSeq: 9 INVITE",
                    "X-Call-ID: nope",
                    "i: compact",
                    "Expires: 60",
                ]
            ),
            max_size=2,
        )
    )
    headers = draw(st.permutations(headers))
    lines = [draw(start_lines), *headers]
    if draw(st.integers(0, 3)) == 0:  # RFC 3261 §7.3.1 folding somewhere
        at = draw(st.integers(1, len(lines) - 1))
        name, _, value = lines[at].partition(":")
        lines[at] = (
            f"{name}:{draw(st.sampled_from(['', ' ']))}\r\n{draw(st.sampled_from([' ', chr(9)]))}{value}"
        )
    eol = draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
    text = eol.join(lines)
    body = draw(st.sampled_from(["", "", "v=0\r\nCall-ID: in-body\r\nCSeq: 5 INVITE\r\n"]))
    ending = draw(st.sampled_from([eol + eol] * 4 + [eol, "", "\n\r\n"]))
    if body:
        text += f"{eol}Content-Length: {len(body)}"
    return (text + ending + body).encode()


@settings(max_examples=1000, deadline=None)
@given(messages())
def test_peeks_agree_with_the_parser_on_generated_messages(payload: bytes) -> None:
    check_agrees(payload)


@settings(max_examples=300, deadline=None)
@given(messages(), st.data())
def test_peeks_agree_after_a_random_mutation(payload: bytes, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(payload)))
    insert = data.draw(st.sampled_from([b"\r", b"\n", b" ", b"\r\n", b"\xff", b":", b"\x00", b""]))
    cut = data.draw(st.integers(0, 2))
    check_agrees(payload[:at] + insert + payload[at + cut :])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_peeks_never_raise_on_bytes(payload: bytes) -> None:
    check_agrees(payload)
    assert isinstance(sip.looks_like_request_or_keepalive(payload), bool)


def test_a_usual_register_and_its_2xx_are_read_without_the_parser() -> None:
    register = (
        b"REGISTER sip:example.com SIP/2.0\r\nCall-ID: c1\r\nCSeq: 3 REGISTER\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    ok = b"SIP/2.0 200 OK\r\ni: c1\r\ncseq:3 REGISTER\r\n\r\n"
    assert sip.peek_request(register) == ("REGISTER", "c1", 3, "REGISTER")
    assert sip.peek_response(ok) == (200, "c1", 3, "REGISTER")
    check_agrees(register)
    check_agrees(ok)


def _head_end_by_search(payload: bytes) -> int:
    """The general way: the first CRLF CRLF, unless a line before it is unusual."""
    end = payload.find(b"\r\n\r\n")
    if end < 0 or sip.peek._UNUSUAL.search(payload, 0, end) is not None:
        return -1
    return end


@settings(max_examples=1000, deadline=None)
@given(messages(), st.data())
def test_the_bodyless_shortcut_finds_the_same_header_end(
    payload: bytes, data: st.DataObject
) -> None:
    # the shortcut answers for payloads ending in CRLF CRLF: mutate near the end too
    if data.draw(st.booleans()):
        at = data.draw(st.integers(max(0, len(payload) - 8), len(payload)))
        insert = data.draw(st.sampled_from([b"\r\n", b"\n", b"\r\n\r\n", b"\n\r\n\r\n", b"x"]))
        payload = payload[:at] + insert + payload[at:]
    assert sip.peek._head_end(payload) == _head_end_by_search(payload)


def test_the_bodyless_shortcut_on_the_edge_cases() -> None:
    for payload in [b"", b"\r\n\r\n", b"x\r\n\r\n", b"\n\r\n\r\n", b"a\r\n\r\nb\r\n\r\n",
                    b"a\r\nb\n\r\n\r\n", b"a\r\n b\r\n\r\n", b"a\r\n\r\n\r\n"]:  # fmt: skip
        assert sip.peek._head_end(payload) == _head_end_by_search(payload), payload
    assert sip.peek._head_end(b"REGISTER x SIP/2.0\r\nCSeq: 1 REGISTER\r\n\r\n") == 36
    assert sip.peek._head_end(b"a\r\n\r\nbody\r\n\r\n") == 1  # a body: the first CRLF CRLF
