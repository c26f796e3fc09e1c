"""Sans-IO SIP: message parser, header/URI/param grammar, HEPv3 codec (stdlib only).

Entry points: :func:`parse_message` (bytes -> :class:`Request` | :class:`Response`),
:func:`parse_uri`, :func:`parse_name_addr`, :func:`parse_contacts`,
:func:`decode_hep` / :func:`encode_hep`; :func:`peek_request` / :func:`peek_response`
/ :func:`peek_cseq` read Call-ID and CSeq without the parser (None when unsure).
No I/O, no clock, no threads.

Errors. Parsers raise :class:`SipParseError` (``HepParseError`` for HEP) and nothing
else; ``load/fuzz.py`` checks that promise. ``parse_message`` checks the start line,
the header block (limits: 65535 bytes, 256 header lines, 8 KiB per header), Call-ID,
CSeq and Content-Length; everything else is parsed on first use (``contacts()``,
``to``, ``from_``, ``expires``, ``uri``) and raises ``SipParseError`` then.

Values. Header values are kept verbatim (blanks around them and line folding
removed). Parameter names are lowercased; unquoted values are kept as written, *not*
percent-decoded (``%3A`` stays); a quoted value (``+sip.instance="<urn:uuid:...>"``)
loses its quotes and backslash escapes; a flag (``;lr``) is ``None``; when a name
repeats, the last one wins. ``SipUri.user`` is as written too. Call
:func:`percent_decode` / :func:`unquote_param` for the meaning of a value.

Note: this top-level package shadows the unrelated ``sip`` module of PyQt when
both are installed in one environment.
"""

from .errors import HepParseError, SipParseError
from .headers import (
    COMPACT_FORMS,
    Contact,
    Headers,
    NameAddr,
    canonical_name,
    header_key,
    parse_contacts,
    parse_name_addr,
)
from .hep import HepPacket, decode_hep, encode_hep, hep_sip_fields
from .message import (
    MAX_DATAGRAM,
    MAX_HEADER_SIZE,
    MAX_HEADERS,
    Request,
    Response,
    parse_message,
)
from .peek import looks_like_request_or_keepalive, peek_cseq, peek_request, peek_response
from .uri import SipUri, parse_uri, percent_decode, unquote_param

__all__ = [
    "COMPACT_FORMS",
    "MAX_DATAGRAM",
    "MAX_HEADERS",
    "MAX_HEADER_SIZE",
    "Contact",
    "Headers",
    "HepPacket",
    "HepParseError",
    "NameAddr",
    "Request",
    "Response",
    "SipParseError",
    "SipUri",
    "canonical_name",
    "decode_hep",
    "encode_hep",
    "header_key",
    "hep_sip_fields",
    "looks_like_request_or_keepalive",
    "parse_contacts",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "peek_cseq",
    "peek_request",
    "peek_response",
    "percent_decode",
    "unquote_param",
]
