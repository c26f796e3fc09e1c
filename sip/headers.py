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
    "header_key",
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

# Name as written on the wire -> index key (lowercased full name). Filled with the
# usual spellings and learned from traffic up to a bound; a hit means the name is a
# valid token, so the parser's hot loop is one dict lookup per header.
_KEYS: dict[str, str] = {}
_KEYS_LIMIT = 2048  # names learned from traffic beyond the seeds; then validate each time


def _seed_keys() -> None:
    full_names = [
        *COMPACT_FORMS.values(),
        *"""CSeq Max-Forwards Expires User-Agent Authorization Allow Accept Server Date Path
        Route Record-Route Min-Expires WWW-Authenticate Proxy-Authorization Proxy-Authenticate
        Require Proxy-Require Unsupported Accept-Encoding Accept-Language P-Asserted-Identity
        Organization Priority Timestamp Warning Retry-After Reason Service-Route Contact
        Call-Info Alert-Info In-Reply-To MIME-Version Reply-To Error-Info""".split(),
    ]
    for full in full_names:
        key = full.lower()
        for spelling in (full, key, full.upper(), full.title()):
            _KEYS[spelling] = key
    for compact, full in COMPACT_FORMS.items():
        _KEYS[compact] = _KEYS[compact.upper()] = full.lower()


_seed_keys()
_SEEDED = len(_KEYS)


def canonical_name(name: str) -> str:
    """The index key of a header name: lowercased, compact form expanded (``m`` -> ``contact``).

    Does not validate; use it to look headers up.
    """
    lname = name.lower()
    return _KEYS.get(lname, lname)


def header_key(name: str) -> str:
    """The index key of a header name as written before the colon (trailing blanks allowed).

    Raises :class:`SipParseError` when the name is not a token.
    """
    key = _KEYS.get(name)
    if key is not None:
        return key
    stripped = name.rstrip(" \t")
    if _abnf.HEADER_NAME_RE.fullmatch(stripped) is None:
        raise SipParseError(f"bad header name {name[:40]!r}")
    lname = stripped.lower()
    key = _KEYS.get(lname, lname)
    if len(_KEYS) < _SEEDED + _KEYS_LIMIT:
        _KEYS[name] = key
    return key


class Headers:
    """Headers in wire order; lookups by any case and by compact form.

    ``get(name)`` is the first value, ``get_all(name)`` every value (one per header
    line, not split at commas; :meth:`sip.Request.contacts` splits Contact).
    Iterating yields ``(name as written, value)`` pairs; unknown headers are kept
    verbatim. Values have surrounding blanks and line folding removed.
    """

    __slots__ = ("_index", "_lines", "_more")

    # Most headers come once: the index holds the first value of each key, and only
    # keys on several lines (Via, Accept, ...) get a list of every value in _more.
    _index: dict[str, str]
    _more: dict[str, list[str]] | None
    _lines: list[str]  # raw header lines, [0] is the start line (or empty)

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._lines = [""]
        self._index = {}
        self._more = None
        for name, value in pairs:
            key = header_key(name)
            if key in self._index:
                self._more = _add_more(self._more, self._index, key, value)
            else:
                self._index[key] = value
            self._lines.append(f"{name}: {value}")

    def get(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        return self._index.get(_KEYS.get(lname, lname), default)

    def get_all(self, name: str) -> list[str]:
        lname = name.lower()
        return list(self._values(_KEYS.get(lname, lname)))

    def _values(self, key: str) -> list[str]:
        # every value of an index key, not a copy when it comes from _more
        more = self._more
        if more is not None:
            values = more.get(key)
            if values is not None:
                return values
        value = self._index.get(key)
        return [] if value is None else [value]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        lname = name.lower()
        return _KEYS.get(lname, lname) in self._index

    def items(self) -> list[tuple[str, str]]:
        """``(name as written, value)`` for every header line, in order."""
        out = []
        for line in self._lines[1:]:
            name, _, value = line.partition(":")
            out.append((name.rstrip(" \t"), value.strip(" \t\r")))
        return out

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items())

    def __len__(self) -> int:
        return len(self._lines) - 1

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


def _add_more(
    more: dict[str, list[str]] | None, index: dict[str, str], key: str, value: str
) -> dict[str, list[str]]:
    """Another value for a key already in ``index``: the list of every value in ``more``."""
    if more is None:
        more = {}
    values = more.get(key)
    if values is None:
        more[key] = [index[key], value]
    else:
        values.append(value)
    return more


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
_CONTACTS_FAST = _abnf.CONTACTS_RE.findall
_new = object.__new__
_MAX_DELTA = 2**32 - 1  # RFC 3261 §20.19: larger values are taken as 2**32-1


def _unquote(quoted: str) -> str:
    inner = quoted[1:-1]
    if "\\" in inner:
        inner = _abnf.QUOTED_PAIR_RE.sub(r"\1", inner)
    return inner


def _parse_params(text: str, pos: int, end: int) -> tuple[Params, int]:
    """Header params from ``pos``: ``*( SEMI generic-param )``; returns them and where they stop.

    Stops before a top-level comma, at ``end``, or at anything that is not a param
    (the caller decides whether that is an error). A fast path splits on ``"``,
    ``;`` and ``=`` when there are no blanks outside quotes and no backslashes
    inside them; the regular expression handles the rest (the tests check both agree).
    """
    if pos == end:
        return {}, pos
    fast = _params_split(text, pos, end)
    if fast is not None:
        return fast
    return _params_re(text, pos, end)


def _params_split(text: str, pos: int, end: int) -> tuple[Params, int] | None:
    # Walk from quote to quote: text outside quotes is split on ";" and "=", a quoted
    # string is the value of the "name=" just before it. None: use the regex.
    params: Params = {}
    while True:
        quote = text.find('"', pos, end)
        stop = end if quote < 0 else quote
        comma = text.find(",", pos, stop)
        if comma >= 0:
            stop = quote = comma
        seg = text[pos:stop]
        if " " in seg or "\t" in seg or "\r" in seg or "\n" in seg:
            return None
        parts = seg.split(";")
        if parts[0]:
            return None  # junk where a ";" should be
        k = len(parts) - 1
        for j in range(1, k):
            name, eq, value = parts[j].partition("=")
            if not name:
                return None
            params[name.lower()] = value if eq else None
        if quote < 0 or comma >= 0:
            # the last param of the section
            if k:
                name, eq, value = parts[k].partition("=")
                if not name:
                    return None
                params[name.lower()] = value if eq else None
            return params, stop
        # name="quoted value"
        close = text.find('"', quote + 1, end)
        if not k or close < 0:
            return None
        name, eq, value = parts[k].partition("=")
        value = text[quote + 1 : close]
        if not name or not eq or parts[k][-1] != "=" or "\\" in value:
            return None  # not name="...", or a quoted-pair to resolve
        params[name.lower()] = value
        pos = close + 1


def _params_re(text: str, pos: int, end: int) -> tuple[Params, int]:
    params: Params = {}
    while True:
        m = _PARAM(text, pos, end)
        if m is None:
            return params, pos
        pos = m.end()
        name, value = m.groups()
        if value is not None and value[:1] == '"':
            value = _unquote(value)
        params[name.lower()] = value


def _delta_seconds(value: str) -> int:
    # delta-seconds = 1*DIGIT (RFC 3261 §20.19, §20.10 expires param)
    if not (value.isascii() and value.isdigit()):
        raise SipParseError(f"bad expires value {value[:20]!r}")
    return min(int(value), _MAX_DELTA)


def _parse_one(text: str, pos: int, end: int) -> tuple[str | None, SipUri, Params, int]:
    display: str | None = None
    if text[pos : pos + 1] == "<":
        # Fast path: <uri> with no display name, the usual REGISTER Contact.
        close = text.find(">", pos, end)
        if close < 0:
            raise SipParseError(f"unclosed '<' in {text[:80]!r}")
        uri_text = text[pos + 1 : close]
        if "<" in uri_text:
            raise SipParseError(f"'<' inside <...> in {text[:80]!r}")
        pos = close + 1
    else:
        m = _NAME_ADDR(text, pos, end)
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
            uri_text = m.group(1)
        pos = m.end()
    uri = parse_uri(uri_text)
    if pos == end:
        return display, uri, {}, pos
    params, pos = _parse_params(text, pos, end)
    return display, uri, params, pos


def _skip_ws(text: str, pos: int, end: int) -> int:
    if pos < end and text[pos] in " \t":
        rest = text[pos:end]
        pos += len(rest) - len(rest.lstrip(" \t"))
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
    # The fast path never takes "*" (its items start with "<" or a display name).
    return _contacts_split(value) or _parse_contacts(value, False)


def _parse_contacts(value: str, fast: bool) -> list[Contact]:
    if fast:
        contacts = _contacts_split(value)
        if contacts is not None:
            return contacts
    end = len(value)
    pos = _skip_ws(value, 0, end)
    if value.startswith("*", pos) and value[pos + 1 :].lstrip(" \t")[:1] in ("", ";"):
        # STAR (params after it are tolerated); "* <sip:...>" is a display name "*".
        params, pos = _parse_params(value, pos + 1, end)
        if _skip_ws(value, pos, end) != end:
            raise SipParseError("junk after Contact: *")
        return [Contact(None, SipUri("", None, "", raw="*"), params, None, True)]
    contacts = []
    while True:
        display, uri, params, pos = _parse_one(value, pos, end)
        expires = params.get("expires")
        contacts.append(
            Contact(display, uri, params, None if expires is None else _delta_seconds(expires))
        )
        if pos == end:
            return contacts
        if value[pos] != ",":
            pos = _skip_ws(value, pos, end)
            if pos == end:
                return contacts
            if value[pos] != ",":
                raise SipParseError(f"expected ',' between contacts in {value[:80]!r}")
        pos = _skip_ws(value, pos + 1, end)


def _contacts_split(value: str) -> list[Contact] | None:
    """The usual Contact header, or None: let the general parser decide.

    Quoted strings are cut out first (``value.split('"')``), each leaving one ``"``
    behind, so commas, semicolons and ``<>`` inside them need no care; then one
    ``findall`` of ``CONTACTS_RE`` (sip._abnf) splits the rest into contacts. A
    ``"`` left in the text must be a whole display name before ``<`` or a whole
    param value after ``=``, and every one must be used, else None. No backslash
    (quoted-pair), CR, LF, tab or "?" anywhere. Never raises; the tests check that
    whatever it returns, the general parser returns too.
    """
    if "\\" in value or "\r" in value or "\n" in value or "\t" in value or "?" in value:
        return None
    quoted: Iterator[str] = iter(())
    if '"' in value:
        segs = value.split('"')
        if not len(segs) & 1:
            return None  # an unclosed quote
        quoted = iter(segs[1::2])
        value = '"'.join(segs[0::2])
    contacts: list[Contact] = []
    for display, uri_text, scheme, user, host, port, ptext, section, junk in _CONTACTS_FAST(value):
        if junk:
            return None
        uparams: Params = {}
        if ptext:
            if " " in ptext or "<" in ptext:
                return None
            for part in ptext.split(";"):
                name, eq, pvalue = part.partition("=")
                uparams[name.lower()] = pvalue if eq else None
            if "" in uparams:
                return None
        uri = _new(SipUri)
        uri.scheme = scheme
        uri.user = user or None
        uri.host = host
        uri.port = nport = int(port) if port else None
        if nport is not None and nport > 65535:
            return None
        uri.params = uparams
        uri.password = uri.headers = None
        uri.raw = uri_text
        # Contact(display_name, uri, params, expires) without the dataclass __init__
        contact = _new(Contact)
        contact.display_name = next(quoted) if display else None
        contact.uri = uri
        params: Params = {}
        contact.params = params
        contact.expires = None
        contact.is_wildcard = False
        contacts.append(contact)
        if section:
            if " " in section:
                return None  # blanks: the general parser knows where they may be
            for part in section[1:].split(";"):
                name, eq, pvalue = part.partition("=")
                if pvalue == '"':
                    pvalue = next(quoted)
                params[name.lower()] = pvalue if eq else None
            if "" in params:
                return None
            text = params.get("expires")
            if text is not None:
                if not (text.isascii() and text.isdigit()):
                    return None
                expires = int(text)
                contact.expires = expires if expires < _MAX_DELTA else _MAX_DELTA
    for _ in quoted:
        return None  # a '"' inside a URI, a name or a value
    return contacts or None
