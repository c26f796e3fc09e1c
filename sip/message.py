"""SIP messages: split once, parse typed headers when asked (as Kamailio does).

:func:`parse_message` finds the end of the header block, splits the header lines
and indexes them by name; Contact, To, From and Expires are parsed on first use
and cached. Only Call-ID and CSeq are checked up front, because every consumer
needs them and a message without them cannot be correlated.
"""

from __future__ import annotations

from . import _abnf
from .errors import SipParseError
from .headers import (
    _KEYS,
    Contact,
    Headers,
    NameAddr,
    _contacts_split,
    _delta_seconds,
    header_key,
    parse_contacts,
)
from .headers import parse_name_addr as _parse_name_addr
from .uri import SipUri, parse_uri

__all__ = ["MAX_DATAGRAM", "MAX_HEADERS", "MAX_HEADER_SIZE", "Request", "Response", "parse_message"]

MAX_DATAGRAM = 65535  # the largest UDP payload; a bigger "message" is not one datagram
MAX_HEADERS = 256  # Kamailio-like bound: more is an attack or a loop, not a phone
MAX_HEADER_SIZE = 8192  # one header line (after unfolding), name and value included

_new = object.__new__


class _Message:
    __slots__ = ("_contacts", "_from", "_to", "body", "call_id", "cseq", "headers")

    headers: Headers
    body: bytes
    call_id: str
    cseq: tuple[int, str]
    _contacts: list[Contact] | None
    _to: NameAddr | None
    _from: NameAddr | None

    def _init(self, headers: Headers, body: bytes) -> None:
        self.headers = headers
        self.body = body
        self._contacts = self._to = self._from = None
        index = headers._index
        call_id = index.get("call-id")
        if not call_id:
            raise SipParseError("no Call-ID")
        self.call_id = call_id
        cseq = index.get("cseq")
        if cseq is None:
            raise SipParseError("no CSeq")
        self.cseq = _parse_cseq(cseq)

    def contacts(self) -> list[Contact]:
        """Every Contact of every Contact header, in order (parsed once, then cached).

        Raises :class:`SipParseError` when a Contact header is malformed.
        """
        contacts = self._contacts
        if contacts is None:
            headers = self.headers
            value = headers._index.get("contact")
            if value is None:
                contacts = []
            elif headers._more is None or "contact" not in headers._more:
                contacts = _contacts_split(value) or parse_contacts(value)
            else:
                contacts = []
                for value in headers._more["contact"]:
                    contacts.extend(parse_contacts(value))
            self._contacts = contacts
        return list(contacts)

    def _name_addr(self, key: str) -> NameAddr:
        value = self.headers._index.get(key)
        if value is None:
            raise SipParseError(f"no {key} header")
        return _parse_name_addr(value)

    @property
    def to(self) -> NameAddr:
        """The parsed To header (:class:`SipParseError` if missing or malformed)."""
        if self._to is None:
            self._to = self._name_addr("to")
        return self._to

    @property
    def from_(self) -> NameAddr:
        """The parsed From header (:class:`SipParseError` if missing or malformed)."""
        if self._from is None:
            self._from = self._name_addr("from")
        return self._from

    @property
    def expires(self) -> int | None:
        """The Expires header as an int, or None (:class:`SipParseError` if malformed)."""
        value = self.headers._index.get("expires")
        if value is None:
            return None
        return _delta_seconds(value)

    @property
    def user_agent(self) -> str | None:
        """The User-Agent header, or None."""
        return self.headers._index.get("user-agent")


class Request(_Message):
    """A SIP request. ``uri`` is parsed on first use; ``uri_text`` is as written.

    Built by :func:`parse_message`; building one by hand checks Call-ID and CSeq too.
    """

    __slots__ = ("_uri", "method", "uri_text")

    _uri: SipUri | None

    def __init__(self, method: str, uri_text: str, headers: Headers, body: bytes = b"") -> None:
        self.method = method
        self.uri_text = uri_text
        self._uri = None
        self._init(headers, body)

    @property
    def uri(self) -> SipUri:
        """The Request-URI (:class:`SipParseError` if malformed)."""
        if self._uri is None:
            self._uri = parse_uri(self.uri_text)
        return self._uri

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri_text} call_id={self.call_id!r}>"


class Response(_Message):
    """A SIP response."""

    __slots__ = ("reason", "status_code")

    def __init__(self, status_code: int, reason: str, headers: Headers, body: bytes = b"") -> None:
        self.status_code = status_code
        self.reason = reason
        self._init(headers, body)

    def __repr__(self) -> str:
        return f"<Response {self.status_code} {self.reason} call_id={self.call_id!r}>"


# Methods seen every day; anything else is checked against the token grammar.
_KNOWN_METHODS = frozenset(
    "REGISTER INVITE ACK BYE CANCEL OPTIONS SUBSCRIBE NOTIFY PUBLISH MESSAGE INFO PRACK "
    "UPDATE REFER".split()
)


def _method_ok(method: str) -> bool:
    return method in _KNOWN_METHODS or _abnf.METHOD_RE.fullmatch(method) is not None


def _parse_cseq(value: str) -> tuple[int, str]:
    # CSeq = "CSeq" HCOLON 1*DIGIT LWS Method
    number, _, method = value.partition(" ")
    method = method.strip(" \t")
    if not (
        number.isascii()
        and number.isdigit()
        and len(number) <= 10
        and (method in _KNOWN_METHODS or _method_ok(method))
    ):
        m = _abnf.CSEQ_RE.fullmatch(value)  # tabs or several spaces
        if m is None:
            raise SipParseError(f"bad CSeq {value[:40]!r}")
        number, method = m.groups()
    n = int(number)
    if n > _abnf.MAX_CSEQ:
        raise SipParseError("CSeq number out of range")
    return n, method


class _Folded(Exception):
    """Internal: a continuation line was met; unfold and index again."""


def _find_head(data: bytes) -> tuple[int, int]:
    """Where the header block ends and the body starts, for any mix of CRLF and LF."""
    ends = [i for i in (data.find(b"\n\n"), data.find(b"\n\r\n")) if i >= 0]
    if not ends:
        raise SipParseError("no empty line after the headers")
    end = min(ends)
    return end, end + (2 if data[end + 1] == 10 else 3)


def parse_message(data: bytes) -> Request | Response:
    """Parse one SIP message (one UDP datagram).

    Only :class:`sip.SipParseError` is raised, for any malformed input; anything
    else escaping is a bug. Accepts CRLF or LF line ends, obsolete line folding,
    header names in any case and compact forms. The body is ``Content-Length``
    bytes after the blank line (bytes after it are ignored), or, without that
    header, the rest of the datagram.
    """
    if len(data) > MAX_DATAGRAM:
        raise SipParseError(f"message of {len(data)} bytes is over {MAX_DATAGRAM}")
    # The header block ends at the first empty line. Lines are split at LF and the CR
    # of CRLF is stripped with the value, so LF-only senders cost nothing extra.
    end = len(data) - 4
    if end > 0 and data[end:] == b"\r\n\r\n":
        # No body (a REGISTER, its 2xx): try the last empty line first, saving a
        # search; an empty line before it shows up in the lines and is searched for.
        body_start = end + 4
        lines = data[:end].decode("utf-8", "replace").split("\n")
        if "" in lines or "\r" in lines:
            end = -1
    else:
        end = -1
    if end < 0:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            end, body_start = _find_head(data)
        else:
            body_start = end + 4
        lines = data[:end].decode("utf-8", "replace").split("\n")
        if "" in lines or "\r" in lines:
            # an LF-only empty line came before the CRLF one
            end, body_start = _find_head(data)
            lines = data[:end].decode("utf-8", "replace").split("\n")
    if len(lines) > MAX_HEADERS + 1:
        raise SipParseError(f"more than {MAX_HEADERS} header lines")
    try:
        index, more = _index(lines)
    except _Folded:
        lines = _unfold(lines)
        index, more = _index(lines)
    if end > MAX_HEADER_SIZE:  # else no line can be that long
        for line in lines:
            if len(line) > MAX_HEADER_SIZE:
                raise SipParseError(f"a header is over {MAX_HEADER_SIZE} bytes")
    headers = _new(Headers)
    headers._index = index
    headers._more = more
    headers._lines = lines

    text = index.get("content-length")
    if text is None:
        body = data[body_start:]
    else:
        if not (text.isascii() and text.isdigit()) or len(text) > 5:
            raise SipParseError(f"bad Content-Length {text[:20]!r}")
        length = int(text)
        if body_start + length > len(data):
            raise SipParseError("body shorter than Content-Length")
        body = data[body_start : body_start + length]

    first = lines[0].rstrip("\r")
    if first.startswith("SIP/"):
        version, _, rest = first.partition(" ")
        code, _, reason = rest.partition(" ")
        if version != _abnf.SIP_VERSION or _abnf.STATUS_CODE_RE.fullmatch(code) is None:
            raise SipParseError(f"bad status line {first[:60]!r}")
        response = _new(Response)  # Response(int(code), reason, headers, body), two calls less
        response.status_code = int(code)
        response.reason = reason
        msg: Request | Response = response
    else:
        parts = first.split(" ")
        if len(parts) != 3 or parts[2] != _abnf.SIP_VERSION or not parts[1]:
            raise SipParseError(f"bad request line {first[:60]!r}")
        method = parts[0]
        if not _method_ok(method):
            raise SipParseError(f"bad method {method[:20]!r}")
        request = _new(Request)  # Request(method, parts[1], headers, body), two calls less
        request.method = method
        request.uri_text = parts[1]
        request._uri = None
        msg = request
    # _Message._init inlined
    msg.headers = headers
    msg.body = body
    msg._contacts = msg._to = msg._from = None
    call_id = index.get("call-id")
    if not call_id:
        raise SipParseError("no Call-ID")
    msg.call_id = call_id
    cseq = index.get("cseq")
    if cseq is None:
        raise SipParseError("no CSeq")
    msg.cseq = _parse_cseq(cseq)
    return msg


def _index(lines: list[str]) -> tuple[dict[str, str], dict[str, list[str]] | None]:
    """Index header lines (``lines[0]`` is the start line) by header key (see Headers)."""
    index: dict[str, str] = {}
    more = None
    keys_get = _KEYS.get
    it = iter(lines)
    next(it)
    for line in it:
        name, colon, value = line.partition(":")
        key = keys_get(name)
        if key is None or not colon:
            if name[:1] in (" ", "\t"):
                raise _Folded
            if not colon:
                raise SipParseError(f"header line without a colon: {name[:40]!r}")
            key = header_key(name)
        if key not in index:
            index[key] = value.strip(" \t\r")
        elif more is None:
            more = {key: [index[key], value.strip(" \t\r")]}
        elif key in more:
            more[key].append(value.strip(" \t\r"))
        else:
            more[key] = [index[key], value.strip(" \t\r")]
    return index, more


def _unfold(lines: list[str]) -> list[str]:
    """Join obsolete continuation lines (RFC 3261 §7.3.1) onto their header with one SP."""
    out: list[str] = [lines[0]]
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            previous = out[-1].rstrip(" \t\r")
            if len(out) == 1 or not previous:
                raise SipParseError("continuation line without a header before it")
            out[-1] = previous + " " + line.strip(" \t\r")
        else:
            out.append(line)
    return out
