"""The SIP grammar as regular expressions, each under the ABNF it implements.

RFC 3261 §25.1 is the source unless a line says otherwise. Where real phones
break the grammar in harmless ways (``:`` or ``=`` inside a Contact param value,
``_`` in a host name) the expressions are a little wider than the RFC and say so.
The hot paths in :mod:`sip.message` and :mod:`sip.headers` split on delimiters
with ``str`` methods and use these expressions to validate or for the rare cases;
a usual Contact header is one ``findall`` of ``CONTACTS_RE``. Speed note: ``re``
scans a single-character negation (``[^>]*``) several times faster than any other
class, so the long runs of the hot expressions are written that way.
"""

from __future__ import annotations

import re

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
TOKEN_RE = re.compile(TOKEN)

# Method = INVITEm / ACKm / OPTIONSm / BYEm / CANCELm / REGISTERm / extension-method
# extension-method = token
METHOD_RE = TOKEN_RE

# header-name = token
HEADER_NAME_RE = TOKEN_RE

# Status-Code = 3DIGIT   (extension-code = 3DIGIT)
STATUS_CODE_RE = re.compile(r"[1-6][0-9][0-9]")

# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT   (only 2.0 exists)
SIP_VERSION = "SIP/2.0"

# quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
# qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
# quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
QUOTED_STRING = r'"(?:[^"\\\r\n]|\\[^\r\n])*"'
QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)

# CSeq = "CSeq" HCOLON 1*DIGIT LWS Method
# RFC 3261 §8.1.1.5: the sequence number MUST be less than 2**31.
CSEQ_RE = re.compile(r"([0-9]{1,10})[ \t]+(" + TOKEN + r")")
MAX_CSEQ = 2**31 - 1

# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )   (RFC 3986 §3.1)
SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")

# host = hostname / IPv4address / IPv6reference
# hostname = *( domainlabel "." ) toplabel [ "." ]
# domainlabel = alphanum / alphanum *( alphanum / "-" ) alphanum
# IPv6reference = "[" IPv6address "]"
# Wider than the RFC: "_" is accepted in labels (seen in SRV-style names).
HOSTNAME_RE = re.compile(r"[A-Za-z0-9_\-.]+")
IPV6_REFERENCE_RE = re.compile(r"\[[0-9A-Fa-f:.]{2,45}\]")

# SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]   (and "sips:")
# The usual shape only: user without password, host, optional port, ";params",
# "?headers"; no blanks, quotes or angle brackets. sip.uri.parse_uri falls back to
# a general parser for anything this does not match, and tests check they agree.
_SIP_URI_FAST = (
    r"(sips?):(?:([^@: \t\r\n\"<>]+)@)?"
    r"(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9_\-.]+)"
    r"(?::([0-9]{1,5}))?"
    r"(?:;([^? \t\r\n\"<>]*))?"
    r"(?:\?([^ \t\r\n\"<>]*))?"
)
SIP_URI_FAST_RE = re.compile(_SIP_URI_FAST, re.IGNORECASE)

# generic-param = token [ EQUAL gen-value ]
# gen-value = token / host / quoted-string
# Wider than the RFC: an unquoted value is anything up to ; , a blank or a quote
# (phones put ":" "/" "=" and "[...]" there). Blanks are SP HTAB CR LF only, as in
# the split fast path of sip.headers.
GENERIC_PARAM_RE = re.compile(
    r'[ \t]*;[ \t]*([^ \t\r\n;,="]+)(?:[ \t]*=[ \t]*(' + QUOTED_STRING + r'|[^ \t\r\n;,"]*))?'
)

# contact-param = (name-addr / addr-spec) *( SEMI contact-params )
# name-addr = [ display-name ] LAQUOT addr-spec RAQUOT
# display-name = *(token LWS)/ quoted-string
# addr-spec without <> cannot hold ; , ? (RFC 3261 §20.10: such URIs MUST be in <>),
# so its ;params belong to the header. An unquoted display name is wider than
# *(token LWS) (UTF-8 names are common) but never holds < > " , ; or ":", so a bare
# URI before a comma is never taken for one.
NAME_ADDR_RE = re.compile(r"[ \t]*(?:(" + QUOTED_STRING + r')|([^<>",;:]*?))[ \t]*<([^<>]*)>')
ADDR_SPEC_RE = re.compile(r'[ \t]*([^ \t\r\n;,<>"]+)')

# The usual Contact header in one findall, for sip.headers._contacts_split, which
# first cuts out every quoted-string and leaves a single '"' in its place:
#   contact-param = (name-addr / addr-spec) *( SEMI contact-params )
#   name-addr = [ display-name ] LAQUOT addr-spec RAQUOT
#   SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]
# Narrower than the grammar: a quoted display name or none; a lowercase "sip" or
# "sips" scheme; a user without password (as in sip.uri._parse_sip the first "@"
# ends it, so it may hold ";"; without a user the params hold no "@"); blanks only
# around the comma and before "<". An item starts at the start or after a comma
# and ends at a comma (not a last one) or the end; anything else is taken by the
# last group, so a match of it means "not this shape". The long runs (URI params,
# header params) are single-character negations, which re scans several times
# faster than a class; the caller checks them for blanks and "<". Groups: display
# '"', URI text, scheme, user, host, port, uri-params, header params (from their
# first ";"), junk.
CONTACTS_RE = re.compile(
    r'(?:^|(?<=,))[ ]*("?)[ ]*<('
    r"(sips?):(?:([^@:<> ]+)@)?"
    r"(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9_\-.]+)"
    r"(?::([0-9]{1,5}))?"
    r"(?:;((?(4)[^>]*|[^@>]*)))?"
    r")>((?:;[^,]*)?)(?:,(?![ ]*\Z)|\Z)"
    r"|([^,]+,?|,)"
)
