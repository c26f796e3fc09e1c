"""sip.peek_*: Call-ID / CSeq / start line without the parser, None when unsure."""

from __future__ import annotations

from pathlib import Path

import pytest

import sip

DATA = Path(__file__).resolve().parents[2] / "data" / "sip"


def _message(
    start: str,
    *,
    call_id: str = "abc@10.0.0.1",
    cseq: str = "1 REGISTER",
    extra: str = "",
    body: str = "",
) -> bytes:
    lines = [
        start,
        "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-1",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq}",
        *([extra] if extra else []),
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


REGISTER = _message("REGISTER sip:example.com SIP/2.0")
OK = _message("SIP/2.0 200 OK")


def check_agrees(payload: bytes) -> None:
    """Whenever a peek answers and the parser accepts the bytes, both say the same."""
    request = sip.peek_request(payload)
    response = sip.peek_response(payload)
    cseq = sip.peek_cseq(payload)
    assert request is None or response is None
    try:
        message = sip.parse_message(payload)
    except sip.SipParseError:
        return
    if cseq is not None:
        assert cseq == message.cseq
    if request is not None:
        assert isinstance(message, sip.Request)
        assert request == (message.method, message.call_id, *message.cseq)
        assert sip.looks_like_request_or_keepalive(payload)
    if response is not None:
        assert isinstance(message, sip.Response)
        assert response == (message.status_code, message.call_id, *message.cseq)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (REGISTER, ("REGISTER", "abc@10.0.0.1", 1, "REGISTER")),
        (
            _message("OPTIONS sip:x SIP/2.0", cseq="7 OPTIONS"),
            ("OPTIONS", "abc@10.0.0.1", 7, "OPTIONS"),
        ),
        (REGISTER.replace(b"Call-ID:", b"i:"), ("REGISTER", "abc@10.0.0.1", 1, "REGISTER")),
        (
            REGISTER.replace(b"Call-ID: ", b"CALL-ID \t:\t"),
            ("REGISTER", "abc@10.0.0.1", 1, "REGISTER"),
        ),
        (
            REGISTER.replace(b"CSeq: 1 REGISTER", b"cseq :  1 \t REGISTER  "),
            ("REGISTER", "abc@10.0.0.1", 1, "REGISTER"),
        ),
        (
            REGISTER.replace(b"Call-ID: abc@10.0.0.1", b"Call-ID: a b\xff "),
            ("REGISTER", "a b\ufffd", 1, "REGISTER"),
        ),
        (
            REGISTER.replace(b"\r\nVia", b"\nVia"),
            ("REGISTER", "abc@10.0.0.1", 1, "REGISTER"),
        ),  # mixed ends
        (REGISTER.replace(b"\r\n", b"\n"), None),  # LF only: no CRLF CRLF
        (REGISTER[:-4], None),  # no empty line
        (REGISTER.replace(b"Call-ID: ", b"Call-ID:\r\n "), None),  # folded
        (REGISTER.replace(b"\r\nVia", b"\n\r\nVia"), None),  # an LF-then-CRLF empty line first
        (REGISTER.replace(b"\r\nVia", b"\n\nVia"), None),  # an LF-only empty line first
        (REGISTER.replace(b"Call-ID: abc@10.0.0.1", b"Call-ID:  "), None),  # empty Call-ID
        (REGISTER.replace(b"Call-ID", b"X-Call-ID"), None),
        (REGISTER.replace(b"CSeq: 1 REGISTER", b"CSeq: 2147483648 REGISTER"), None),  # ≥ 2**31
        (REGISTER.replace(b"CSeq: 1 REGISTER", b"CSeq: 1 REGISTER x"), None),
        (REGISTER.replace(b"CSeq", b"X-CSeq"), None),
        (
            _message("REGISTER sip:x SIP/2.0", extra="CSeq: 2 REGISTER"),
            ("REGISTER", "abc@10.0.0.1", 1, "REGISTER"),
        ),
        (_message("SIP/2.0 200 OK"), None),  # a response
        (b"\x00\x01junk\r\n\r\n", None),
        (b"", None),
    ],
)
def test_peek_request(payload: bytes, expected: tuple[str, str, int, str] | None) -> None:
    assert sip.peek_request(payload) == expected
    check_agrees(payload)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (OK, (200, "abc@10.0.0.1", 1, "REGISTER")),
        (_message("SIP/2.0 401 Unauthorized"), (401, "abc@10.0.0.1", 1, "REGISTER")),
        (_message("SIP/2.0 180 Ringing", cseq="3 INVITE"), (180, "abc@10.0.0.1", 3, "INVITE")),
        (OK.replace(b"Call-ID:", b"i:"), (200, "abc@10.0.0.1", 1, "REGISTER")),
        (
            OK.replace(b"Content-Length: 0", b"Content-Length: 22\r\nContent-Type: x")
            + b"\r\nCall-ID: in-the-body",
            (200, "abc@10.0.0.1", 1, "REGISTER"),
        ),
        (OK.replace(b"200 OK", b"200\r\nOK"), None),  # no reason phrase
        (OK.replace(b"200 OK", b"099 Odd"), None),
        (OK.replace(b"200 OK", b"700 Odd"), None),
        (OK.replace(b"200 OK", b"2x0 Odd"), None),
        (OK.replace(b"SIP/2.0", b"SIP/3.0"), None),
        (OK.replace(b"\r\n", b"\n"), None),
        (OK.replace(b"CSeq: 1 ", b"CSeq: 1\r\n "), None),  # folded
        (OK.replace(b"CSeq", b"X-CSeq"), None),
        (OK.replace(b"Call-ID", b"X-Call-ID"), None),
        (REGISTER, None),
    ],
)
def test_peek_response(payload: bytes, expected: tuple[int, str, int, str] | None) -> None:
    assert sip.peek_response(payload) == expected
    check_agrees(payload)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (OK, (1, "REGISTER")),
        (_message("SIP/2.0 200 OK", cseq="42 INVITE").replace(b"Call-ID", b"X"), (42, "INVITE")),
        (OK.replace(b"CSeq: 1 REGISTER", b"CSeq:1\tREGISTER\r"), (1, "REGISTER")),
        (
            OK.replace(b"CSeq: 1 REGISTER", b"CSeq: 1 REG-ISTER"),
            None,
        ),  # a token, not letters: unsure
        (OK.replace(b"CSeq: 1 REGISTER", b"CSeq: one REGISTER"), None),
        (OK.replace(b"CSeq: 1 REGISTER", b"CSeq: 12345678901 REGISTER"), None),
        (OK.replace(b"\r\n", b"\n"), None),
        (OK[:-4], None),
        (b"", None),
    ],
)
def test_peek_cseq(payload: bytes, expected: tuple[int, str] | None) -> None:
    assert sip.peek_cseq(payload) == expected
    check_agrees(payload)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"OPTIONS sip:x SIP/2.0\r\n\r\n", True),
        (b"INVITE sip:x", True),
        (b"\r\n\r\n", True),  # RFC 5626 keep-alive
        (b"", True),
        (b" \x00\t\n", True),
        (b"SIP/2.0 200 OK\r\n", False),  # '/' is no token character
        (b"\x16\x03\x01junk", False),
        (b"A" * 33 + b" sip:x", False),
        (b"REGISTER  sip:x", False),
    ],
)
def test_looks_like_request_or_keepalive(payload: bytes, expected: bool) -> None:
    assert sip.looks_like_request_or_keepalive(payload) is expected


@pytest.mark.parametrize("path", sorted(DATA.glob("*.sip")), ids=lambda p: p.name)
def test_peeks_agree_with_the_parser_on_captured_messages(path: Path) -> None:
    payload = path.read_bytes()
    check_agrees(payload)
    message = sip.parse_message(payload)
    peek = sip.peek_request(payload) or sip.peek_response(payload)
    if b"\r\n\r\n" in payload and b"\n " not in payload and b"\n\t" not in payload:
        assert peek is not None, "a usual layout is read without the parser"
    if peek is not None:
        assert peek[1:] == (message.call_id, *message.cseq)
