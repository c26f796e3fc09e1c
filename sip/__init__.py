"""Sans-IO SIP: message parser, header/URI/param grammar, HEPv3 codec (stdlib only).

Entry points: :func:`parse_message` (bytes -> :class:`Request` | :class:`Response`,
raising only :class:`SipParseError`), :func:`parse_uri`, :func:`parse_name_addr`,
:func:`decode_hep` / :func:`encode_hep`. Parameter names are lowercased and
values kept as written (quoted values lose their quotes); use
:func:`percent_decode` / :func:`unquote_param` for their meaning.

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
from .hep import HepPacket, decode_hep, encode_hep
from .message import (
    MAX_DATAGRAM,
    MAX_HEADER_SIZE,
    MAX_HEADERS,
    Request,
    Response,
    parse_message,
)
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
    "parse_contacts",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "percent_decode",
    "unquote_param",
]
