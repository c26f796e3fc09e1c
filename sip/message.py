"""SIP messages: split once, parse typed headers when asked (as Kamailio does).

:func:`parse_message` finds the end of the header block, splits the header lines
and indexes them by name; Contact, To, From and Expires are parsed on first use
and cached. Only Call-ID and CSeq are checked up front, because every consumer
needs them and a message without them cannot be correlated.
"""

from __future__ import annotations

from . import _abnf
from .errors import SipParseError
from .headers import _KEYS, Contact, Headers, NameAddr, canonical_name, parse_contacts
from .headers import parse_name_addr as _parse_name_addr
from .uri import SipUri, parse_uri

__all__ = ["MAX_DATAGRAM", "MAX_HEADERS", "MAX_HEADER_SIZE", "Request", "Response", "parse_message"]

MAX_DATAGRAM = 65535  # the largest UDP payload; a bigger "message" is not one datagram
MAX_HEADERS = 256  # Kamailio-like bound: more is an attack or a loop, not a phone
MAX_HEADER_SIZE = 8192  # one header line (after unfolding), name and value included

class _Message:
    __slots__ = ("_contacts", "_from", "_to", "body", "call_id", "cseq", "headers")

    headers: Headers
    body: bytes
    call_id: str
    cseq: tuple[int, str]

    def __init__(self, headers: Headers, body: bytes = b"") -> None:
        self.headers = headers
        self.body = body
        self._contacts: list[Contact] | None = None
        self._to: NameAddr | None = None
        self._from: NameAddr | None = None
        self._check_mandatory()

    def _check_mandatory(self) -> None:
        index = self.headers._index
        call_id = index.get("call-id")
        if not call_id or not call_id[0]:
            raise SipParseError("no Call-ID")
        self.call_id = call_id[0]
        cseq = index.get("cseq")
        if cseq is None:
            raise SipParseError("no CSeq")
        m = _abnf.CSEQ_RE.fullmatch(cseq[0])
        if m is None:
            raise SipParseError(f"bad CSeq {cseq[0][:40]!r}")
        number = int(m.group(1))
        if number > _abnf.MAX_CSEQ:
            raise SipParseError("CSeq number out of range")
        self.cseq = (number, m.group(2))

    def contacts(self) -> list[Contact]:
        """Every Contact of every Contact header, in order (cached).

        Raises :class:`SipParseError` when a Contact header is malformed.
        """
        contacts = self._contacts
        if contacts is None:
            contacts = []
            for value in self.headers._index.get("contact", ()):
                contacts.extend(parse_contacts(value))
            self._contacts = contacts
        return list(contacts)

    def _name_addr(self, key: str) -> NameAddr:
        values = self.headers._index.get(key)
        if values is None:
            raise SipParseError(f"no {key} header")
        return _parse_name_addr(values[0])

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
        values = self.headers._index.get("expires")
        if values is None:
            return None
        value = values[0]
        if not (value.isascii() and value.isdigit()):
            raise SipParseError(f"bad Expires {value[:20]!r}")
        return min(int(value), 2**32 - 1)

    @property
    def user_agent(self) -> str | None:
        values = self.headers._index.get("user-agent")
        return None if values is None else values[0]


class Request(_Message):
    """A SIP request. ``uri`` is parsed on first use; ``uri_text`` is as written."""

    __slots__ = ("_uri", "method", "uri_text")

    def __init__(self, method: str, uri_text: str, headers: Headers, body: bytes = b"") -> None:
        self.method = method
        self.uri_text = uri_text
        self._uri: SipUri | None = None
        super().__init__(headers, body)

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
        super().__init__(headers, body)

    def __repr__(self) -> str:
        return f"<Response {self.status_code} {self.reason} call_id={self.call_id!r}>"


def parse_message(data: bytes) -> Request | Response:
    """Parse one SIP message (one UDP datagram).

    Only :class:`sip.SipParseError` is raised, for any malformed input; anything
    else escaping is a bug. Accepts CRLF or LF line ends, obsolete line folding,
    header names in any case and compact forms. The body is ``Content-Length``
    bytes after the blank line (bytes after it are ignored), or, without that
    header, the rest of the datagram.
    """
    return _parse(data)


def _parse(data: bytes) -> Request | Response:
    if len(data) > MAX_DATAGRAM:
        raise SipParseError(f"message of {len(data)} bytes is over {MAX_DATAGRAM}")
    # The header block ends at the first empty line: CRLF CRLF, or LF LF for LF-only senders.
    end = data.find(b"\n\r\n")
    lf = data.find(b"\n\n", 0, end if end >= 0 else len(data))
    if lf >= 0:
        end, body_start = lf, lf + 2
    elif end >= 0:
        body_start = end + 3
    else:
        raise SipParseError("no empty line after the headers")
    head = data[:end].decode("utf-8", "replace")
    if head.count("\n") != head.count("\r\n"):
        head = head.replace("\r\n", "\n")
        lines = head.rstrip("\r").split("\n")
    else:
        lines = head.rstrip("\r").split("\r\n")
    if len(lines) > MAX_HEADERS + 1:
        raise SipParseError(f"more than {MAX_HEADERS} header lines")
    first = lines[0]
    if "\n " in head or "\n\t" in head:
        lines = _unfold(lines)
    if len(head) > MAX_HEADER_SIZE:
        for line in lines:
            if len(line) > MAX_HEADER_SIZE:
                raise SipParseError(f"a header line is over {MAX_HEADER_SIZE} bytes")

    headers = Headers()
    items = headers._items
    index = headers._index
    keys = _KEYS
    for i in range(1, len(lines)):
        line = lines[i]
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"header line without a colon: {line[:40]!r}")
        name = name.rstrip(" \t")
        key = keys.get(name.lower())
        if key is None:
            key = canonical_name(name)
        value = value.strip(" \t")
        items.append((name, value))
        values = index.get(key)
        if values is None:
            index[key] = [value]
        else:
            values.append(value)

    clen = index.get("content-length")
    if clen is None:
        body = data[body_start:]
    else:
        text = clen[0]
        if not (text.isascii() and text.isdigit()) or len(text) > 5:
            raise SipParseError(f"bad Content-Length {text[:20]!r}")
        length = int(text)
        if body_start + length > len(data):
            raise SipParseError("body shorter than Content-Length")
        body = data[body_start : body_start + length]

    if first.startswith("SIP/"):
        version, _, rest = first.partition(" ")
        code, _, reason = rest.partition(" ")
        if version != _abnf.SIP_VERSION or _abnf.STATUS_CODE_RE.fullmatch(code) is None:
            raise SipParseError(f"bad status line {first[:60]!r}")
        return Response(int(code), reason, headers, body)
    parts = first.split(" ")
    if len(parts) != 3 or parts[2] != _abnf.SIP_VERSION or not parts[1]:
        raise SipParseError(f"bad request line {first[:60]!r}")
    method = parts[0]
    if _abnf.METHOD_RE.fullmatch(method) is None:
        raise SipParseError(f"bad method {method[:20]!r}")
    return Request(method, parts[1], headers, body)


def _unfold(lines: list[str]) -> list[str]:
    """Join obsolete continuation lines (RFC 3261 §7.3.1) onto their header with one SP."""
    out: list[str] = [lines[0]]
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and line:
            if len(out) == 1:
                raise SipParseError("continuation line before any header")
            out[-1] = out[-1].rstrip(" \t") + " " + line.lstrip(" \t")
        else:
            out.append(line)
    return out
