"""Headers: the ordered, case-insensitive header list, and the name-addr grammar
of Contact, To and From (RFC 3261 §20.10, §20.20, §20.39, §25.1).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from . import _abnf
from .errors import SipParseError
from .uri import Params, SipUri, parse_uri

__all__ = [
    "COMPACT_FORMS",
    "Contact",
    "Headers",
    "NameAddr",
    "canonical_name",
    "parse_contacts",
    "parse_name_addr",
]

# RFC 3261 §7.3.3 and the IANA "Header Fields" registry: compact form -> full name.
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",  # RFC 3841
    "b": "Referred-By",  # RFC 3892
    "c": "Content-Type",
    "d": "Request-Disposition",  # RFC 3841
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",  # RFC 3841
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",  # RFC 4474
    "o": "Event",  # RFC 6665
    "r": "Refer-To",  # RFC 3515
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",  # RFC 6665
    "v": "Via",
    "x": "Session-Expires",  # RFC 4028
    "y": "Identity",  # RFC 8224
}

# lowercased name as it may appear on the wire -> lowercased full name (the index key).
# Doubles as a cache of names already known to be valid tokens.
_KEYS: dict[str, str] = {k: v.lower() for k, v in COMPACT_FORMS.items()}
_KEYS.update({v.lower(): v.lower() for v in COMPACT_FORMS.values()})
for _name in (
    "cseq", "max-forwards", "expires", "user-agent", "authorization", "allow", "accept",
    "server", "date", "path", "route", "record-route", "min-expires", "www-authenticate",
    "proxy-authorization", "proxy-authenticate", "require", "proxy-require", "unsupported",
    "accept-encoding", "accept-language", "p-asserted-identity", "organization", "priority",
    "timestamp", "warning", "retry-after", "reason", "x-push-token",
):  # fmt: skip
    _KEYS[_name] = _name
_KEYS_LIMIT = 1024  # bound on names learned from traffic; beyond it, validate each time


def canonical_name(name: str) -> str:
    """The index key of a header name: lowercased, compact form expanded.

    Raises :class:`SipParseError` when ``name`` is not a token.
    """
    lname = name.lower()
    key = _KEYS.get(lname)
    if key is None:
        if _abnf.HEADER_NAME_RE.fullmatch(name) is None:
            raise SipParseError(f"bad header name {name[:40]!r}")
        key = lname
        if len(_KEYS) < _KEYS_LIMIT:
            _KEYS[lname] = key
    return key


class Headers:
    """Headers in wire order; lookups by any case and by compact form.

    ``get(name)`` is the first value, ``get_all(name)`` every value (one per header
    line, not split at commas; :meth:`sip.Request.contacts` splits Contact).
    Iterating yields ``(name as written, value)`` pairs; unknown headers are kept
    verbatim. Values have surrounding whitespace and line folding removed.
    """

    __slots__ = ("_index", "_items")

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        self._index: dict[str, list[str]] = {}
        for name, value in pairs:
            self._add(canonical_name(name), name, value)

    def _add(self, key: str, name: str, value: str) -> None:
        self._items.append((name, value))
        values = self._index.get(key)
        if values is None:
            self._index[key] = [value]
        else:
            values.append(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        values = self._index.get(_KEYS.get(lname, lname))
        return default if values is None else values[0]

    def get_all(self, name: str) -> list[str]:
        lname = name.lower()
        return list(self._index.get(_KEYS.get(lname, lname), ()))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        lname = name.lower()
        return _KEYS.get(lname, lname) in self._index

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(slots=True)
class NameAddr:
    """``[display-name] <uri>;params`` or ``uri;params`` (From, To, Contact, ...).

    ``display_name`` is ``None`` when absent, otherwise unquoted (``\\"`` -> ``"``).
    ``params`` are the header parameters: names lowercased, unquoted values as written,
    quoted values without their quotes, ``None`` for a flag.
    """

    display_name: str | None
    uri: SipUri
    params: Params = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


@dataclass(slots=True)
class Contact(NameAddr):
    """One Contact value. ``expires`` is the ``expires`` param as an int, or None.

    ``Contact: *`` gives one Contact with ``is_wildcard`` true, a URI whose scheme and
    host are empty and whose raw text is ``*``, and the header's params.
    """

    expires: int | None = None
    is_wildcard: bool = False


_NAME_ADDR = _abnf.NAME_ADDR_RE.match
_ADDR_SPEC = _abnf.ADDR_SPEC_RE.match
_PARAM = _abnf.GENERIC_PARAM_RE.match
_MAX_DELTA = 2**32 - 1  # RFC 3261 §20.19: larger values are taken as 2**32-1


def _unquote(quoted: str) -> str:
    inner = quoted[1:-1]
    if "\\" in inner:
        inner = _abnf.QUOTED_PAIR_RE.sub(r"\1", inner)
    return inner


def _parse_params(text: str, pos: int, end: int) -> tuple[Params, int]:
    params: Params = {}
    while True:
        m = _PARAM(text, pos, end)
        if m is None:
            return params, pos
        pos = m.end()
        name = m.group(1).lower()
        value = m.group(2)
        if value is not None and value.startswith('"'):
            value = _unquote(value)
        if name not in params:
            params[name] = value


def _delta_seconds(value: str | None) -> int | None:
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        raise SipParseError(f"bad expires value {value[:20]!r}")
    return min(int(value), _MAX_DELTA)


def _parse_one(text: str, pos: int, end: int) -> tuple[str | None, SipUri, Params, int]:
    m = _NAME_ADDR(text, pos, end)
    display: str | None
    if m is not None:
        quoted, token, uri_text = m.groups()
        if quoted is not None:
            display = _unquote(quoted)
        else:
            display = token.strip(" \t") or None
    else:
        m = _ADDR_SPEC(text, pos, end)
        if m is None:
            raise SipParseError(f"expected a name-addr or addr-spec in {text[:80]!r}")
        display = None
        uri_text = m.group(1)
    uri = parse_uri(uri_text)
    params, pos = _parse_params(text, m.end(), end)
    return display, uri, params, pos


def _skip_ws(text: str, pos: int, end: int) -> int:
    while pos < end and text[pos] in " \t":
        pos += 1
    return pos


def parse_name_addr(text: str) -> NameAddr:
    """Parse a From/To style value: ``"Name" <sip:u@h>;tag=x`` or ``sip:u@h;tag=x``.

    Raises :class:`SipParseError` on anything malformed or left over.
    """
    end = len(text)
    display, uri, params, pos = _parse_one(text, 0, end)
    if _skip_ws(text, pos, end) != end:
        raise SipParseError(f"junk after name-addr in {text[:80]!r}")
    return NameAddr(display, uri, params)


def parse_contacts(value: str) -> list[Contact]:
    """Every Contact in one Contact header value (split at top-level commas).

    Contact = ("Contact" / "m" ) HCOLON ( STAR / (contact-param *(COMMA contact-param)))
    Commas inside quotes and inside ``<...>`` do not split.
    """
    end = len(value)
    pos = _skip_ws(value, 0, end)
    if value.startswith("*", pos):
        params, pos = _parse_params(value, pos + 1, end)
        if _skip_ws(value, pos, end) != end:
            raise SipParseError("junk after Contact: *")
        return [
            Contact(None, SipUri("", None, "", raw="*"), params, _delta_seconds(params.get("expires")), True)
        ]
    contacts: list[Contact] = []
    while True:
        display, uri, params, pos = _parse_one(value, pos, end)
        contacts.append(Contact(display, uri, params, _delta_seconds(params.get("expires"))))
        pos = _skip_ws(value, pos, end)
        if pos == end:
            return contacts
        if value[pos] != ",":
            raise SipParseError(f"expected ',' between contacts in {value[:80]!r}")
        pos += 1
