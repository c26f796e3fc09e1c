"""Peeks: Call-ID, CSeq and start line read off the raw bytes, without the parser.

For a consumer that throws most messages away (the sniffer keeps REGISTERs and
their responses) a full :func:`sip.parse_message` per datagram costs more than
the rest of its work. These readers answer from a few regex searches over the
header block. They never raise, and they answer None whenever the layout is
unusual (no CRLF CRLF, folded lines, an LF-only empty line, an odd CSeq or
status line): the caller then runs the parser. Whenever a peek answers and
:func:`sip.parse_message` accepts the same bytes, both say the same thing; a
peek is not a validation (a message a peek answers for may still be malformed).
"""

from __future__ import annotations

import re
from typing import TypeVar

from . import _abnf

__all__ = ["looks_like_request_or_keepalive", "peek_cseq", "peek_request", "peek_response"]

# RFC 3261 §20.16: CSeq = "CSeq" HCOLON 1*DIGIT LWS Method (no compact form). `\n`
# anchors it to a line start; the optional group makes the *first* CSeq line the
# match even when its value has another shape (then group 1 is None: unsure). Letters
# only: every standard method; another token (allowed) is left to the parser.
_CSEQ = re.compile(rb"\n(?i:cseq)[ \t]*:[ \t]*(?:([0-9]{1,10})[ \t]+([A-Za-z]+)[ \t\r]*\n)?")
# RFC 3261 §20.8: Call-ID, compact form `i`. The value is the whole line, its blanks
# and CR stripped, as the parser reads it.
_CALL_ID = re.compile(rb"\n(?i:call-id|i)[ \t]*:([^\n]*)\n")
# RFC 3261 §7.3.1: a continuation line starts with SP/HT; an empty line (LF or CRLF)
# before the first CRLF CRLF ends the header block earlier. Either: unsure.
_UNUSUAL = re.compile(rb"\n[ \t\r\n]")
# RFC 3261 §25.1: Request-Line = Method SP Request-URI SP SIP-Version; a method is a
# token. Enough of it to tell a request from junk.
_REQUEST_START = re.compile(rb"([A-Za-z0-9.!%*_+`'~-]{1,32}) [^ \r\n]")
# RFC 5626 §4.4.1 keep-alives (CRLF CRLF) and stray padding.
_BLANK = re.compile(rb"[\r\n\t \x00]*")
_MAX_CSEQ = _abnf.MAX_CSEQ
_T = TypeVar("_T")


def _head_end(payload: bytes) -> int:
    """Where the header block's CRLF CRLF starts, or -1 for an unusual layout (hot path).

    A message without a body (REGISTER, its responses) ends with CRLF CRLF: one search
    then says both that no line is unusual and that no CRLF CRLF comes earlier (an
    earlier one holds a LF followed by CR), sparing the search for the first CRLF CRLF.
    Whatever that search finds (a body, a LF right before the last CRLF CRLF), the
    general way decides, so both ways answer alike.
    """
    size = len(payload)
    if payload[size - 4 :] == b"\r\n\r\n" and _UNUSUAL.search(payload, 0, size - 2) is None:
        return size - 4
    end = payload.find(b"\r\n\r\n")
    if end < 0 or _UNUSUAL.search(payload, 0, end) is not None:
        return -1
    return end


def _fields(payload: bytes, first: _T) -> tuple[_T, str, int, str] | None:
    """(first, Call-ID, CSeq number, CSeq method) of a usual layout, else None (hot path)."""
    end = _head_end(payload)
    if end < 0:
        return None
    m = _CSEQ.search(payload, 0, end + 2)
    if m is None or m.group(1) is None:
        return None
    number = int(m.group(1))
    if number > _MAX_CSEQ:  # RFC 3261 §8.1.1.5: less than 2**31
        return None
    c = _CALL_ID.search(payload, 0, end + 2)
    if c is None:
        return None
    value = c.group(1).strip(b" \t\r")
    if not value:
        return None
    return first, value.decode("utf-8", "replace"), number, m.group(2).decode("ascii")


def peek_cseq(payload: bytes) -> tuple[int, str] | None:
    """(sequence number, method) of the CSeq header (RFC 3261 §20.16), or None if unsure."""
    end = _head_end(payload)
    if end < 0:
        return None
    m = _CSEQ.search(payload, 0, end + 2)
    if m is None or m.group(1) is None or int(m.group(1)) > _MAX_CSEQ:
        return None
    return int(m.group(1)), m.group(2).decode("ascii")


def peek_request(payload: bytes) -> tuple[str, str, int, str] | None:
    """(method, Call-ID, CSeq number, CSeq method) of a request, or None if unsure.

    The method is the Request-Line's first token (RFC 3261 §7.1, §25.1); Call-ID
    (§20.8) and CSeq (§20.16) come from the first header of each name.
    """
    if payload[:9] == b"REGISTER ":  # the one the sniffer asks about, at no regex cost
        method = "REGISTER"
    else:
        m = _REQUEST_START.match(payload)
        if m is None:
            return None
        method = m.group(1).decode("ascii")
    return _fields(payload, method)


def peek_response(payload: bytes) -> tuple[int, str, int, str] | None:
    """(status code, Call-ID, CSeq number, CSeq method) of a response, or None if unsure.

    RFC 3261 §7.2, §25.1: Status-Line = SIP-Version SP Status-Code SP Reason-Phrase.
    """
    if payload[:8] != b"SIP/2.0 " or payload[11:12] != b" ":
        return None
    code = payload[8:11]
    if not code.isdigit() or not b"1" <= code[:1] <= b"6":  # as _abnf.STATUS_CODE_RE
        return None
    return _fields(payload, int(code))


def looks_like_request_or_keepalive(payload: bytes) -> bool:
    """True for what starts like a Request-Line (RFC 3261 §25.1) or is only blanks.

    Blanks: RFC 5626 §4.4.1 CRLF keep-alives and padding, which are not malformed.
    """
    return _REQUEST_START.match(payload) is not None or _BLANK.fullmatch(payload) is not None
