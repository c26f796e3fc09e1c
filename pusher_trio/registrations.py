"""REGISTER correlation and push-target extraction (pure: no trio, no I/O, explicit `now`).

`RegistrationTable.apply(message, now, user_agents)` takes every SIP message the
sniffer sees and returns what changed, as events named as past facts:

* `Registered(aor, contact, devices, at)`: a REGISTER was answered 2xx (or, with
  `require_2xx=False`, a REGISTER copy was seen). `devices` are the push targets
  found in its Contacts; `contact` is the URI text of its first bound Contact.
* `Unregistered(aor, device_ids, at)`: the same, for `expires=0` Contacts
  (`device_ids`), or `Contact: *` (`device_ids=None`: every device of the AOR).

DESIGN §1: only a registration that succeeded counts. A REGISTER answered 401/403,
never answered, or a 2xx whose Call-ID + CSeq we never saw in a REGISTER, changes
nothing. Pending REGISTERs live in a table bounded by count and by bytes, oldest
evicted first, each for at most `ttl` seconds (Timer F: a transaction lasts 32 s).

`apply` may raise `sip.SipParseError` for a malformed message (the sip parser
parses headers lazily); the table is unchanged then.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import unquote

import attrs

import sip

from .model import Device, PushType, TokenType

__all__ = [
    "Event",
    "Registered",
    "RegistrationTable",
    "Unregistered",
    "aor_of",
    "extract_target",
    "summary_key",
    "target_from_params",
]

# RFC 3261 §17.1.2.2: Timer F = 64*T1 = 32 s bounds a non-INVITE transaction.
DEFAULT_TTL = 32.0
# ~13.8k REGISTER/s (the Kamailio ceiling measured here) answered within a second need
# a few thousand entries; 100k holds 7 s of a full-rate flood nobody answers.
DEFAULT_MAX_ENTRIES = 100_000
# Contacts are the part an attacker controls; bound the table by bytes too. A typical
# REGISTER costs ~2 KB here, so with both defaults the byte cap binds first (~32k).
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# More Contacts than this in one REGISTER are ignored (a phone binds one or two).
MAX_CONTACTS = 32
# Neither the Contact nor the request says: the registrar picks its default (RFC 3261
# §10.3, step 7); an hour is the common one. Only "bound or not" matters here.
DEFAULT_EXPIRES = 3600
# Summaries of answered REGISTERs kept for their refreshes (see summary_key): a bounded
# cache, by count and by estimated bytes, so it costs the same whatever the number of
# devices. An entry is keyed by a 16-byte digest of the key, and the common REGISTER (one
# Contact, one RFC 8599 or legacy push target) is kept as the device it gave, which the
# store holds anyway: ~250 bytes an entry, so the byte cap holds ~260k phones refreshing
# (a full summary, ~2 KB, is kept for any other shape).
DEFAULT_SUMMARY_CACHE = 262_144
DEFAULT_SUMMARY_CACHE_BYTES = 64 * 1024 * 1024
# The key costs about a quarter of a parse. When fewer than 1 in 10 of the last
# SUMMARY_PROBE lookups hit (a storm of new phones, or phones seen for the first time),
# only 1 answered REGISTER in SUMMARY_SAMPLE is looked up and cached, picked at random so
# that the sample is not aligned with the order the phones come in: when they refresh,
# the sample hits and every REGISTER is looked up again.
SUMMARY_PROBE = 1024
SUMMARY_SAMPLE = 4
# A compact entry: digest bytes, dict slot, _Single and its new Device (strings shared)
_SINGLE_OVERHEAD = 250
# Keyed per process: nobody outside can pick two REGISTERs whose digests collide.
_DIGEST_KEY = os.urandom(16)
# a keyed hasher copied per key: cheaper than building one from the key each time
_DIGEST = hashlib.blake2b(digest_size=16, key=_DIGEST_KEY).copy
_ENTRY_OVERHEAD = 550  # dict slot, tuples, objects: measured ~2.1 KB per bench REGISTER in all
_RAW_OVERHEAD = 250  # a REGISTER kept as bytes: key tuple, dict slot, bytes header


# --- events ----------------------------------------------------------------------


@attrs.frozen
class Registered:
    """A registration of `aor` succeeded; `devices` are its Contacts' push targets."""

    aor: str
    contact: str
    devices: list[Device]
    at: float
    # Which binding this is, so that Kamailio relays to it alone after a wake-up (DESIGN §12):
    # usrloc keeps the Call-ID and CSeq of the REGISTER that last wrote a binding.
    instance: str | None = None
    call_id: str = ""
    cseq: int = 0
    # RFC 8599 sip.pnsreg in that Contact, and its expires: when a refresh push is due
    expires: int = 0
    pnsreg: bool = False


@attrs.frozen
class Unregistered:
    """Contacts of `aor` were unbound (`device_ids`; None: all of them, `Contact: *`)."""

    aor: str
    device_ids: list[str] | None
    at: float


Event = Registered | Unregistered


# --- params ----------------------------------------------------------------------


_QUOTED_PAIR = re.compile(r"\\(.)")


def _unquote_value(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1]
        if "\\" in value:  # a quoted-pair (RFC 3261 §25.1): rare, and a regex is not free
            value = _QUOTED_PAIR.sub(r"\1", value)
    return unquote(value) if "%" in value else value


def _merged_params(
    uri_params: Mapping[str, str | None], header_params: Mapping[str, str | None]
) -> dict[str, str]:
    """Contact header params overlaid with URI params (RFC 8599 puts them in the URI).

    Names lowercased (sip already does; kept for other callers); values unquoted and
    percent-decoded; flag params dropped.
    """
    merged: dict[str, str] = {}
    for params in (header_params, uri_params):
        for name, value in params.items():
            if value is not None:
                if "%" in value or value[:1] == '"':
                    value = _unquote_value(value)
                merged[name if name.islower() else name.lower()] = value
    return merged


def _instance_id(header_params: Mapping[str, str | None]) -> str | None:
    """RFC 5626 §4.1: +sip.instance="<urn:uuid:...>"; quotes and <> stripped."""
    value = header_params.get("+sip.instance")
    if value is None:
        for name, v in header_params.items():
            if name.lower() == "+sip.instance":
                value = v
                break
    if not value:
        return None
    v = _unquote_value(value).strip()
    if v.startswith("<") and v.endswith(">"):
        v = v[1:-1]
    return v or None


_TOKEN_TYPES: dict[str, TokenType] = {
    "apns": "apple",
    "apple": "apple",
    "fcm": "firebase",
    "firebase": "firebase",
    "google": "firebase",
    "android": "firebase",
}


def _app_and_sandbox(app_id: str) -> tuple[str, bool]:
    """Legacy `app-id`/Token-App: `.dev` selects the sandbox, `.prod` production."""
    if app_id.endswith(".dev"):
        return app_id[:-4], True
    if app_id.endswith(".prod"):
        return app_id[:-5], False
    return app_id, False


# --- the User-Agents mapping (Kazoo's JSON, as is) -----------------------------------


@attrs.frozen
class _Rule:
    name: str
    regex: re.Pattern[str]
    token_app: str
    token_type: str
    token_id: str


_RulesKey = tuple[tuple[str, str, str, str, str], ...]
_RULES_CACHE: dict[_RulesKey, list[_Rule]] = {}
_RULES_CACHE_SIZE = 16


def _mapping_rules(mapping: Mapping[str, Any]) -> list[_Rule]:
    """Compiled rules of a User-Agents mapping, compiled once per distinct mapping.

    Entries that are not Kazoo-shaped (no regex, a missing property, a regex that does
    not compile) are skipped: one bad entry must not stop the others.
    """
    key_items = []
    for name, entry in mapping.items():
        if not isinstance(entry, Mapping):
            continue
        regex, props = entry.get("regex"), entry.get("properties")
        if not isinstance(regex, str) or not isinstance(props, Mapping):
            continue
        names = [props.get("Token-App"), props.get("Token-Type"), props.get("Token-ID")]
        if not all(isinstance(n, str) and n for n in names):
            continue
        key_items.append((str(name), regex, *(str(n).lower() for n in names)))
    key: _RulesKey = tuple(key_items)  # type: ignore[arg-type]
    rules = _RULES_CACHE.get(key)
    if rules is None:
        rules = []
        for name, regex, app_p, type_p, id_p in key:
            try:
                compiled = re.compile(regex)
            except re.error:
                continue
            rules.append(_Rule(name, compiled, app_p, type_p, id_p))
        if len(_RULES_CACHE) >= _RULES_CACHE_SIZE:
            _RULES_CACHE.clear()
        _RULES_CACHE[key] = rules
    return rules


# --- target extraction -------------------------------------------------------------


_LINPHONE_SERVICES = frozenset({"voip", "remote", "apns"})


def _split_prid(prid: str, services: Sequence[str]) -> str:
    """Linphone sends `pn-prid=tok1:voip&tok2:remote`; take the token of our service.

    Only a known service name after the last `:` splits a part (APNs tokens are hex).
    """
    if ":" not in prid:
        return prid
    pairs: dict[str, str] = {}
    for part in prid.split("&"):
        token, colon, service = part.rpartition(":")
        if colon and token and service in _LINPHONE_SERVICES:
            pairs.setdefault(service, token)
        else:
            pairs.setdefault("", part)
    for service in services:
        if pairs.get(service):
            return pairs[service]
    return next(iter(pairs.values()))


def _rfc8599(params: Mapping[str, str]) -> tuple[Any, ...] | None:
    """RFC 8599: pn-provider, pn-prid, pn-param. None when not (fully) present."""
    provider = params.get("pn-provider", "").lower()
    prid = params.get("pn-prid", "")
    if not provider or not prid:
        return None
    sandbox = False
    if provider.endswith(".dev"):  # Linphone/Flexisip: pn-provider=apns.dev
        provider, sandbox = provider[:-4], True
    pn_param = params.get("pn-param", "")
    if provider == "apns":
        # RFC 8599 (APNs): pn-param = TeamID.BundleID.service; the first dot ends the team
        # id, the last one starts the service ("voip", or Linphone's "voip&remote").
        team, _, rest = pn_param.partition(".")
        bundle, dot, service = rest.rpartition(".")
        if not team or not dot or not bundle:
            return None
        services = service.split("&")
        push_type: PushType = "voip" if "voip" in services else "alert"
        token = _split_prid(prid, ["voip", "remote"] if push_type == "voip" else services)
        extra = {"source": "rfc8599", "team_id": team}
        if push_type == "voip" and "remote" in services:
            # Linphone's voip&remote: the remote (alert) token takes the missed-call
            # alert; a PushKit token cannot (DESIGN §12).
            alert_token = _split_prid(prid, ["remote"])
            if alert_token and alert_token != token:
                extra["alert_token"] = alert_token
        return ("apple", bundle, token, sandbox, push_type, extra)
    if provider == "fcm":
        # RFC 8599 (FCM): pn-param is the project (Linphone sends the project number);
        # the service resolves it to a firebase app (DESIGN §11).
        extra = {"source": "rfc8599"}
        if pn_param:
            extra["project"] = pn_param
        return ("firebase", pn_param, prid, False, None, extra)
    if provider == "webpush":
        # RFC 8599 registers `webpush` (RFC 8030): pn-prid is the push resource URL of the
        # browser's subscription. RFC 8599 says nothing of its keys; a client that wants
        # an encrypted payload (RFC 8291) puts PushSubscription's keys in pn-param as
        # `<p256dh>.<auth>` (base64url has no dot). Without them the push carries no
        # payload (RFC 8030 §5 allows that): the service worker wakes and registers.
        extra = {"source": "rfc8599"}
        p256dh, dot, auth = pn_param.partition(".")
        if dot and p256dh and auth:
            extra.update(p256dh=p256dh, auth=auth)
        return ("webpush", "", prid, False, None, extra)
    return None


def _by_names(
    params: Mapping[str, str], app_p: str, type_p: str, id_p: str, extra: dict[str, str]
) -> tuple[Any, ...] | None:
    type_ = _TOKEN_TYPES.get(params.get(type_p, "").lower())
    token = params.get(id_p, "")
    if type_ is None or not token:
        return None
    app, sandbox = _app_and_sandbox(params.get(app_p, ""))
    return (type_, app, token, sandbox, None, extra)


# Equal extras of APNs/FCM devices ({"source": "rfc8599", "team_id": ...}: a few
# distinct ones) share one read-only mapping instead of a ~230-byte dict per record,
# as the store's load does. Web Push extras carry per-browser keys: not shared.
_EXTRAS: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
_EXTRAS_MAX = 10_000


def _shared_extra(extra: dict[str, str]) -> dict[str, str]:
    key = tuple(extra.items())
    shared = _EXTRAS.get(key)
    if shared is None:
        if len(_EXTRAS) >= _EXTRAS_MAX:
            _EXTRAS.clear()
        shared = _EXTRAS[key] = extra
    return shared


def target_from_params(
    params: Mapping[str, str],
    instance: str | None,
    *,
    aor: str,
    contact: str,
    user_agent: str,
    user_agents: Mapping[str, Any],
    now: float,
) -> Device | None:
    """The push target of one Contact, from its merged params; None when it has none.

    First match wins (DESIGN §8): RFC 8599, legacy pn-type/pn-tok/app-id, the
    User-Agents mapping. The device is identified by `+sip.instance`, else the token.
    """
    return _target(params, instance, aor, contact, user_agent, user_agents, now)


def _target(
    params: Mapping[str, str],
    instance: str | None,
    aor: str,
    contact: str,
    user_agent: str,
    user_agents: Mapping[str, Any],
    now: float,
) -> Device | None:
    """target_from_params, called positionally (once per Contact of a new phone)."""
    found = _rfc8599(params)
    if found is None:
        found = _by_names(params, "app-id", "pn-type", "pn-tok", {"source": "legacy"})
    if found is None and user_agent and user_agents:
        for rule in _mapping_rules(user_agents):
            if rule.regex.search(user_agent):
                extra = {"source": "mapping", "mapping": rule.name}
                found = _by_names(params, rule.token_app, rule.token_type, rule.token_id, extra)
                break  # Kazoo: the first matching entry decides
    if found is None:
        return None
    type_, app, token, sandbox, push_type, extra = found
    # positional, in Device's field order: keywords cost ~0.5 us more per device here
    return Device(
        aor,
        instance or token,  # device_id
        type_,
        sys.intern(app),  # a few apps, a million records: one string each
        token,
        sandbox,
        push_type,
        extra if type_ == "webpush" else _shared_extra(extra),
        user_agent,
        contact,
        True,  # bound
        now,  # last_registered
    )


def extract_target(
    contact: sip.Contact,
    user_agent: str,
    user_agents_mapping: Mapping[str, Any],
    aor: str,
    now: float,
) -> Device | None:
    """The push target of a parsed Contact (see target_from_params)."""
    return target_from_params(
        _merged_params(contact.uri.params, contact.params),
        _instance_id(contact.params),
        aor=aor,
        contact=_uri_text(contact.uri),
        user_agent=user_agent,
        user_agents=user_agents_mapping,
        now=now,
    )


def _uri_text(uri: sip.SipUri) -> str:
    return str(uri)


# --- what a REGISTER asks for ------------------------------------------------------


class _Binding(NamedTuple):
    uri: str
    params: dict[str, str]
    instance: str | None
    expires: int
    pnsreg: bool = False  # RFC 8599: the UA asks for binding-refresh pushes


class _Request(NamedTuple):
    """The parts of a REGISTER the outcome needs: small, so the table stays small."""

    aor: str
    user_agent: str
    wildcard: bool
    bindings: tuple[_Binding, ...]
    size: int


class _Single:
    """A cached REGISTER of the common shape: one bound Contact, one push target.

    Its target came from RFC 8599 or legacy params (never the User-Agents mapping), so
    it does not depend on anything but the REGISTER: a refresh reuses the device with
    a new `last_registered` instead of running the extraction again.
    """

    __slots__ = ("device", "expires", "instance", "pnsreg", "uri")

    def __init__(self, event: Registered) -> None:
        self.uri = event.contact
        self.instance = event.instance
        self.expires = event.expires
        self.pnsreg = event.pnsreg
        self.device = event.devices[0]

    def events(self, now: float, call_id: str, cseq: int) -> list[Event]:
        # the newest device: the one the store keeps, so the cache holds no copy
        device = self.device = self.device.refreshed(now)
        event = Registered(device.aor, self.uri, [device], now, self.instance, call_id, cseq,
                           self.expires, self.pnsreg)  # fmt: skip
        return [event]


def _entry_size(entry: _Request | _Single) -> int:
    """The estimated bytes of one summary cache entry, digest and dict slot included."""
    return _SINGLE_OVERHEAD if type(entry) is _Single else entry.size + _RAW_OVERHEAD  # type: ignore[union-attr]


def _single(summary: _Request, events: list[Event]) -> _Single | None:
    """The compact form of `summary` when its events allow it (see _Single)."""
    if len(summary.bindings) != 1 or len(events) != 1:
        return None
    event = events[0]
    if not isinstance(event, Registered) or len(event.devices) != 1:
        return None
    if event.devices[0].extra.get("source") not in ("rfc8599", "legacy"):
        return None
    return _Single(event)


# Kazoo's User-Agents mapping, or what returns it: the sniffer passes its getter, so a
# REGISTER answered from the summary cache (or a failure) never looks the mapping up.
UserAgents = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


def _user_agents(value: UserAgents) -> Mapping[str, Any]:
    return value() if callable(value) else value


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() and len(text) < 11 else None


# The usual To value, `["Name"] <sip:user@host[:port][;params]>[;tag=...]`, read without
# the full name-addr parser; anything else goes to sip.parse_name_addr.
_SIMPLE_TO = re.compile(
    r'(?:"[^"\\]*"[ \t]*|[A-Za-z0-9 .\-]*)<sips?:([A-Za-z0-9\-_.!~*\'()&=+$,%]+)@'
    r"([A-Za-z0-9.\-]+)(?::[0-9]{1,5})?[;>]"
)


def aor_of(message: sip.Request | sip.Response) -> str:
    """`user@host` of the To URI (host lowercased; user percent-decoded)."""
    to = message.headers.get("To")
    if to is None:
        raise sip.SipParseError("no To header")
    m = _SIMPLE_TO.match(to)
    if m is not None:
        user, host = m.group(1), m.group(2).lower()
    else:
        uri = sip.parse_name_addr(to).uri
        user, host = uri.user or "", (uri.host or "").lower()
    if "%" in user:
        user = unquote(user)
    return f"{user}@{host}" if user else host


def _summarize(request: sip.Request) -> _Request:
    aor = aor_of(request)
    # shared by every record with this User-Agent (the store holds a million of them)
    user_agent = sys.intern(request.headers.get("User-Agent") or "")
    default_expires = _int_or_none(request.headers.get("Expires"))
    if default_expires is None:
        default_expires = DEFAULT_EXPIRES
    bindings = []
    wildcard = False
    size = _ENTRY_OVERHEAD + len(aor) + len(user_agent)
    for contact in request.contacts()[:MAX_CONTACTS]:
        if contact.is_wildcard:
            wildcard = True
            continue
        expires = contact.expires if contact.expires is not None else default_expires
        uri = _uri_text(contact.uri)
        params = _merged_params(contact.uri.params, contact.params)
        instance = _instance_id(contact.params)
        # values + per-param dict/str overhead; hostile Contacts can be 64 KiB each
        size += len(uri) + sum(map(len, params.values())) + 150 * len(params) + 250
        pnsreg = "+sip.pnsreg" in contact.params  # sip lowercases param names
        bindings.append(_Binding(uri, params, instance, expires, pnsreg))
    # RFC 3261 §10.2.2: "*" only with Expires: 0 (and alone); otherwise ignore it.
    wildcard = wildcard and default_expires == 0 and not bindings
    return _Request(aor, user_agent, wildcard, tuple(bindings), size)


# --- refreshes without the parser ------------------------------------------------------

# Header lines that change between two refreshes of one binding (RFC 3261 §10.2.4: the
# same Call-ID, a higher CSeq; a new Via branch; a new digest response; after a restart
# a new Call-ID and From tag) and that _summarize never reads. Only this exact spelling is left out of the key: any other
# spelling (compact `v:`, `call-id:`) stays in it, which costs a cache miss, not a
# wrong answer. `\n` anchors each to a line start, so the start line always stays.
_VOLATILE = re.compile(
    rb"\n(?:Via|From|Call-ID|CSeq|Authorization|Proxy-Authorization|Date):[^\n]*"
)
# ... of which the parser checks these two; the key's check must refuse what it refuses.
_CHECKED = re.compile(rb"\n(Call-ID|CSeq):([^\n]*)")
_CSEQ_VALUE = re.compile(rb"[ \t]*([0-9]{1,10}) REGISTER[ \t\r]*")
# as sip.peek: a continuation line or an empty line (LF, CRLF) inside the header block
_UNUSUAL = re.compile(rb"\n[ \t\r\n]")
_MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: less than 2**31


def summary_key(payload: bytes) -> bytes | None:
    """What `_summarize(parse_message(payload))` depends on, as bytes; None if unsure.

    The REGISTER without its volatile lines (Via, From, Call-ID, CSeq, Authorization,
    Proxy-Authorization, Date): two REGISTERs with the same key parse alike and give the
    same summary, or both fail to parse (the left-out lines are checked here as the
    parser checks them). None for any layout the parser would read differently
    (folded lines, LF-only empty lines, oversized messages): those take the parser.
    """
    size = len(payload)
    if size > sip.MAX_DATAGRAM:
        return None
    # Without a body the payload ends with the CRLF CRLF: one search then also says that
    # no CRLF CRLF comes earlier (it would hold a LF followed by CR), sparing the find.
    if payload[size - 4 :] == b"\r\n\r\n" and _UNUSUAL.search(payload, 0, size - 2) is None:
        end = size - 4
    else:
        end = payload.find(b"\r\n\r\n")
        # end + 1: a LF right before the CRLF CRLF is an empty line for the parser
        if end < 0 or _UNUSUAL.search(payload, 0, end + 1):
            return None
    if end > sip.MAX_HEADER_SIZE:
        return None
    if payload.count(b"\n", 0, end) > sip.MAX_HEADERS:
        return None
    head = payload[:end]
    for name, value in _CHECKED.findall(head):
        if name == b"CSeq":
            m = _CSEQ_VALUE.fullmatch(value)
            if m is None or int(m.group(1)) > _MAX_CSEQ:
                return None
        elif not value.strip(b" \t\r"):
            return None  # an empty Call-ID fails the parser
    return _VOLATILE.sub(b"", head) + payload[end:]


def _events(
    req: _Request,
    now: float,
    user_agents: Mapping[str, Any],
    call_id: str = "",
    cseq: int = 0,
) -> list[Event]:
    if req.wildcard:
        return [Unregistered(req.aor, None, now)]
    bound_uri: str | None = None
    bound_instance: str | None = None
    bound_expires, bound_pnsreg = 0, False
    devices: dict[str, Device] = {}
    gone: list[str] = []
    for b in req.bindings:
        device = _target(b.params, b.instance, req.aor, b.uri, req.user_agent, user_agents, now)
        if b.expires > 0:
            if bound_uri is None:
                bound_uri, bound_instance = b.uri, b.instance
                bound_expires, bound_pnsreg = b.expires, b.pnsreg
            if device is not None:
                devices[device.device_id] = device
        else:
            device_id = device.device_id if device is not None else b.instance
            if device_id is not None and device_id not in gone:
                gone.append(device_id)
    events: list[Event] = []
    if gone:
        events.append(Unregistered(req.aor, gone, now))
    if bound_uri is not None:
        events.append(
            Registered(
                req.aor,
                bound_uri,
                list(devices.values()),
                now,
                bound_instance,
                call_id,
                cseq,
                bound_expires,
                bound_pnsreg,
            )
        )
    return events


# --- the table -----------------------------------------------------------------------

_Key = tuple[str, int]  # (Call-ID, CSeq number)


class RegistrationTable:
    """REGISTERs waiting for their final response, keyed by Call-ID + CSeq number.

    Bounded: entries older than `ttl` seconds are dropped; beyond `max_entries`
    entries or `max_bytes` (estimated) the oldest are evicted, so a flood of
    unanswered REGISTERs costs a fixed amount of memory.

    Two ways in: `apply(message)` with a parsed message, or the sniffer's lazy path,
    `apply_register(payload, call_id, cseq)` / `apply_response(call_id, cseq, status)`,
    where a REGISTER is kept as its bytes and parsed only if a 2xx answers it (a
    REGISTER challenged with 401, or never answered, is never parsed at all). The
    summary of an answered REGISTER is cached by `summary_key` (at most `summary_cache`
    entries and ~`summary_cache_bytes`; 0 turns it off): a refresh whose Contact, To,
    Expires and User-Agent did not change is not parsed again. While answered
    REGISTERs are nearly all new (fewer than 1 in 10 refreshes), only a random sample
    is looked up, so that a storm of new phones does not pay for the keys.
    """

    def __init__(
        self,
        require_2xx: bool = True,
        ttl: float = DEFAULT_TTL,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        summary_cache: int = DEFAULT_SUMMARY_CACHE,
        summary_cache_bytes: int = DEFAULT_SUMMARY_CACHE_BYTES,
    ) -> None:
        if max_entries < 1 or max_bytes < 1 or ttl <= 0:
            raise ValueError("ttl, max_entries and max_bytes must be positive")
        if summary_cache < 0 or summary_cache_bytes < 0:
            raise ValueError("summary_cache and summary_cache_bytes must not be negative")
        self.require_2xx = require_2xx
        self.ttl = ttl
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # key -> (arrival time, summary or raw REGISTER bytes, estimated size)
        # item None: two different REGISTERs came with this key (see _remember)
        self._pending: OrderedDict[_Key, tuple[float, _Request | bytes | None, int]] = OrderedDict()
        self._bytes = 0
        self._oldest_at = 0.0  # at most the arrival time of the oldest pending entry
        # summary_key(REGISTER) -> (its summary, estimated size); oldest first
        # (an OrderedDict: popping a plain dict's oldest key again and again makes
        # next(iter()) walk the deleted slots; popitem(last=False) does not)
        self._summaries: OrderedDict[bytes, _Request | _Single] = OrderedDict()
        self._summary_max = summary_cache
        self._summary_max_bytes = summary_cache_bytes
        self._summary_bytes = 0
        self._summary_lookups = 0  # in the current probe window
        self._summary_window_hits = 0
        self._summary_sampling = False  # few hits lately: look up a random sample only
        self._random = random.Random().random  # not for secrets: which REGISTERs to sample
        self._stats = {
            "registers": 0,
            "answered_2xx": 0,
            "answered_failure": 0,
            "provisional": 0,
            "unmatched_responses": 0,
            "malformed_registers": 0,
            "conflicts": 0,
            "expired": 0,
            "evicted": 0,
            "registered_events": 0,
            "unregistered_events": 0,
            "summary_hits": 0,  # answered REGISTERs summarized from the cache, not parsed
        }

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        """The estimated memory held by pending REGISTERs (bounded by max_bytes)."""
        return self._bytes

    def statistics(self) -> dict[str, int]:
        return {
            "pending": len(self._pending),
            "pending_bytes": self._bytes,
            "summaries": len(self._summaries),
            "summaries_bytes": self._summary_bytes,
            **self._stats,
        }

    def apply(
        self, message: sip.Request | sip.Response, now: float, user_agents: Mapping[str, Any]
    ) -> list[Event]:
        """Feed one message; returns the registrations it completes (usually none)."""
        if isinstance(message, sip.Request):
            self.expire(now)
            if message.method != "REGISTER":
                return []
            req = _summarize(message)
            self._stats["registers"] += 1
            number, _ = message.cseq
            if not self.require_2xx:
                return self._count(_events(req, now, user_agents, message.call_id, number))
            self._remember((message.call_id, number), now, req, req.size)
            return []
        number, method = message.cseq
        if method != "REGISTER":
            return []
        return self.apply_response(message.call_id, number, message.status_code, now, user_agents)

    def apply_register(
        self, payload: bytes, call_id: str, cseq: int, now: float, user_agents: Mapping[str, Any]
    ) -> list[Event]:
        """A REGISTER given as its bytes plus its key (read by the caller as the parser would).

        With require_2xx the bytes are kept and parsed when a 2xx arrives; without it
        they are parsed now (`sip.SipParseError` may escape then).
        """
        if not self.require_2xx:
            return self.apply(sip.parse_message(payload), now, user_agents)
        self.expire(now)
        self._stats["registers"] += 1
        self._remember((call_id, cseq), now, payload, len(payload) + _RAW_OVERHEAD)
        return []

    def apply_response(
        self, call_id: str, cseq: int, status: int, now: float, user_agents: UserAgents
    ) -> list[Event]:
        """A response to REGISTER, given by its key fields (the sniffer's fast path).

        The caller has checked that the CSeq method is REGISTER. `user_agents` may be the
        mapping's getter: it is called only when the extraction needs it.
        """
        if not self.require_2xx:
            return []
        self.expire(now)
        if status < 200:
            self._stats["provisional"] += 1
            return []
        entry = self._pending.pop((call_id, cseq), None)
        if entry is None:
            self._stats["unmatched_responses"] += 1
            return []
        _, item, size = entry
        self._bytes -= size
        if item is None:  # two REGISTERs shared this key: trust neither
            return []
        if status >= 300:
            self._stats["answered_failure"] += 1
            return []
        self._stats["answered_2xx"] += 1
        if isinstance(item, bytes):
            return self._answer(item, now, user_agents, call_id, cseq)
        return self._count(_events(item, now, _user_agents(user_agents), call_id, cseq))

    def _answer(
        self, payload: bytes, now: float, user_agents: UserAgents, call_id: str, cseq: int
    ) -> list[Event]:
        """The events of an answered REGISTER kept as bytes; its summary cached for refreshes.

        A phone refreshes with the same Contact, To, Expires and User-Agent every few
        minutes; the cache spares the parse and the Contact/param extraction then.
        """
        digest = None
        if self._summary_max and (
            not self._summary_sampling or self._random() * SUMMARY_SAMPLE < 1.0
        ):
            key = summary_key(payload)
            self._summary_lookups += 1
            if self._summary_lookups >= SUMMARY_PROBE:
                self._summary_sampling = self._summary_window_hits * 10 < self._summary_lookups
                self._summary_lookups = self._summary_window_hits = 0
            if key is not None:
                hasher = _DIGEST()
                hasher.update(key)
                digest = hasher.digest()
                cached = self._summaries.get(digest)
                if cached is not None:
                    self._stats["summary_hits"] += 1
                    self._summary_window_hits += 1
                    if type(cached) is _Single:
                        return self._count(cached.events(now, call_id, cseq))
                    agents = _user_agents(user_agents)
                    return self._count(_events(cached, now, agents, call_id, cseq))  # type: ignore[arg-type]
        try:
            message = sip.parse_message(payload)
            if not isinstance(message, sip.Request) or message.method != "REGISTER":
                raise sip.SipParseError("not a REGISTER")
            summary = _summarize(message)
        except sip.SipParseError:
            self._stats["malformed_registers"] += 1
            return []
        events = _events(summary, now, _user_agents(user_agents), call_id, cseq)
        if digest is not None:
            entry = _single(summary, events) or summary
            summaries = self._summaries
            summaries[digest] = entry
            self._summary_bytes += _entry_size(entry)
            while summaries and (
                len(summaries) > self._summary_max or self._summary_bytes > self._summary_max_bytes
            ):
                self._summary_bytes -= _entry_size(summaries.popitem(last=False)[1])
        return self._count(events)

    def expire(self, now: float) -> None:
        """Drop REGISTERs older than ttl (insertion order is arrival order)."""
        pending = self._pending
        limit = now - self.ttl
        # _oldest_at is at most the first entry's time: one compare per message when
        # nothing is due (the loop below would stop at the first entry).
        if not pending or self._oldest_at > limit:
            return
        while pending:
            key, (at, _, size) = next(iter(pending.items()))
            if at > limit:
                self._oldest_at = at
                break
            del pending[key]
            self._bytes -= size
            self._stats["expired"] += 1

    def _remember(self, key: _Key, now: float, item: _Request | bytes, size: int) -> None:
        stored: _Request | bytes | None = item
        old = self._pending.pop(key, None)
        if old is not None:
            self._bytes -= old[2]
            if old[1] != item:
                # A retransmission is the same request; a new one takes a new CSeq (RFC
                # 3261 §8.1.1.5, §10.2.4). Another REGISTER with this Call-ID and CSeq is
                # forged: a user reusing his own dialog's key for someone else's AOR would
                # have his own 2xx complete it. Keep a marker until the key expires, so
                # neither request (nor a later copy of one) is completed.
                if old[1] is not None:
                    self._stats["conflicts"] += 1
                stored, size = None, _RAW_OVERHEAD
        if not self._pending:
            self._oldest_at = now
        self._pending[key] = (now, stored, size)
        self._bytes += size
        while len(self._pending) > self.max_entries or (
            self._bytes > self.max_bytes and len(self._pending) > 1
        ):
            _, (_, _, gone) = self._pending.popitem(last=False)
            self._bytes -= gone
            self._stats["evicted"] += 1
        if self._bytes > self.max_bytes:  # one REGISTER bigger than the whole budget
            self._pending.clear()
            self._bytes = 0
            self._stats["evicted"] += 1

    def _count(self, events: list[Event]) -> list[Event]:
        for e in events:
            key = "registered_events" if isinstance(e, Registered) else "unregistered_events"
            self._stats[key] += 1
        return events
