"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), with their parameters.

Parameter names are lowercased; values are kept exactly as written (not
percent-decoded); a flag parameter (``;lr``) has the value ``None``. The user
part is kept as written too: use :func:`percent_decode` where the meaning of the
value matters (RFC 8599 push params, legacy ``pn-tok``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

from . import _abnf
from .errors import SipParseError

__all__ = ["SipUri", "parse_uri", "percent_decode", "unquote_param"]

Params = dict[str, str | None]

_HOST_OK = _abnf.HOSTNAME_RE.fullmatch
_SIP_FAST = _abnf.SIP_URI_FAST_RE.fullmatch
_IPV6_OK = _abnf.IPV6_REFERENCE_RE.fullmatch


@dataclass(slots=True)
class SipUri:
    """A parsed URI.

    ``scheme`` is lowercased (``sip``, ``sips``, ``tel``, or another scheme of an
    absoluteURI, kept opaque). For ``tel:`` the number is in ``user`` and ``host``
    is empty. ``host`` keeps IPv6 brackets (``[2001:db8::1]``). ``str(uri)`` gives
    the text as written.
    """

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    params: Params = field(default_factory=dict)
    password: str | None = None
    headers: str | None = None
    raw: str = ""

    def __str__(self) -> str:
        return self.raw

    @property
    def hostport(self) -> str:
        """``host[:port]`` as a string."""
        return self.host if self.port is None else f"{self.host}:{self.port}"


def percent_decode(value: str) -> str:
    """Decode ``%XX`` escapes (RFC 3261 ``escaped``) as UTF-8; bad escapes stay as written."""
    if "%" not in value:
        return value
    return unquote(value, errors="replace")


def unquote_param(value: str | None) -> str | None:
    """The meaning of a parameter value as :mod:`sip` returns it: percent-decoded, ``None`` kept."""
    if value is None:
        return None
    return percent_decode(value)


def parse_params(text: str) -> Params:
    """``name[=value];name[=value]...`` (the part after the first ``;``) of a URI.

    uri-parameters = *( ";" uri-parameter ); other-param = pname [ "=" pvalue ].
    The last occurrence of a name wins; empty segments (``;;``, a trailing ``;``)
    are skipped, as Kamailio does.
    """
    params: Params = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        params[name.lower()] = value if eq else None
    if "" in params:
        _drop_empty(params, text)
    return params


def _drop_empty(params: Params, text: str) -> None:
    # ";;" and a trailing ";" are tolerated (Kamailio does); ";=value" is not.
    del params[""]
    if text.startswith("=") or ";=" in text:
        raise SipParseError("URI parameter without a name")


def parse_uri(text: str) -> SipUri:
    """Parse a SIP, SIPS or tel URI (any other absoluteURI is kept opaque).

    Raises :class:`SipParseError` on anything malformed.
    """
    m = _SIP_FAST(text)
    if m is not None:
        # The common shape in one C-level match; anything unusual (a password, a
        # port over 5 digits, odd characters) takes the general path below.
        scheme, user, host, port, ptext, headers = m.groups()
        params: Params = {}
        if ptext is not None:
            for part in ptext.split(";"):
                name, eq, value = part.partition("=")
                params[name.lower()] = value if eq else None
            if "" in params:
                _drop_empty(params, ptext)
        if port is None:
            return SipUri(scheme.lower(), user, host, None, params, None, headers, text)
        nport = int(port)
        if nport <= 65535:
            return SipUri(scheme.lower(), user, host, nport, params, None, headers, text)
    return _parse_uri(text)


def _parse_uri(text: str) -> SipUri:
    # Blanks, quotes and angle brackets end a URI in every context it appears in
    # (RFC 3261 §25.1: only "escaped" may carry them). Other control characters are
    # let through.
    if (
        " " in text
        or '"' in text
        or "<" in text
        or ">" in text
        or "\t" in text
        or "\r" in text
        or "\n" in text
    ):
        raise SipParseError(f"forbidden character in URI {text[:80]!r}")
    scheme, colon, rest = text.partition(":")
    if not colon or not rest:
        raise SipParseError(f"not a URI: {text[:80]!r}")
    lscheme = scheme.lower()
    if lscheme == "sip" or lscheme == "sips":
        return _parse_sip(lscheme, rest, text)
    if _abnf.SCHEME_RE.fullmatch(scheme) is None:
        raise SipParseError(f"bad URI scheme {scheme[:40]!r}")
    if lscheme == "tel":
        # telephone-uri = "tel:" telephone-subscriber; par = parameter / extension / isdn-subaddress
        number, semi, ptext = rest.partition(";")
        if not number:
            raise SipParseError("tel URI without a number")
        return SipUri("tel", number, "", None, parse_params(ptext) if semi else {}, raw=text)
    return SipUri(lscheme, None, "", None, {}, raw=text)


def _parse_sip(scheme: str, rest: str, text: str) -> SipUri:
    # SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]
    # userinfo = ( user / telephone-subscriber ) [ ":" password ] "@"
    # "@" cannot appear unescaped after the userinfo, so the first one ends it.
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        user = rest[:at]
        rest = rest[at + 1 :]
        if ":" in user:
            user, _, password = user.partition(":")
        if not user:
            raise SipParseError("SIP URI with an empty user part")
    headers: str | None = None
    if "?" in rest:
        # headers = "?" header *( "&" header )
        rest, _, headers = rest.partition("?")
    hostport, semi, ptext = rest.partition(";")
    params: Params = {}
    if semi:
        # Inlined parse_params: this loop is the hot path of every Contact.
        for part in ptext.split(";"):
            name, eq, value = part.partition("=")
            params[name.lower()] = value if eq else None
        if "" in params:
            _drop_empty(params, ptext)
    port: int | None = None
    if hostport[:1] == "[":
        close = hostport.find("]") + 1
        host = hostport[:close]
        if not close or _IPV6_OK(host) is None:
            raise SipParseError(f"bad IPv6 reference in {text[:80]!r}")
        tail = hostport[close:]
        if tail:
            if tail[0] != ":":
                raise SipParseError(f"junk after IPv6 reference in {text[:80]!r}")
            port = _parse_port(tail[1:])
    else:
        host, colon, ptext = hostport.partition(":")
        if _HOST_OK(host) is None:
            raise SipParseError(f"bad host in URI {text[:80]!r}")
        if colon:
            port = _parse_port(ptext)
    return SipUri(scheme, user, host, port, params, password, headers, text)


def _parse_port(text: str) -> int:
    # port = 1*DIGIT (and a 16-bit number)
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        raise SipParseError(f"bad port {text[:20]!r}")
    port = int(text)
    if port > 65535:
        raise SipParseError(f"port {port} out of range")
    return port
