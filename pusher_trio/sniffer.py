"""The sniffer: UDP listeners that learn registrations from Kamailio's copies (DESIGN §8).

Usage::

    table = RegistrationTable(require_2xx=config.sniffer.require_2xx)
    sniffer = Sniffer(
        listen=["udp:127.0.0.1:9060"], allow_from=["127.0.0.0/8", "::1/128"],
        hep_auth_key="", table=table, store=store,
        on_registered=waiters_notify,            # called with every Registered event
    )
    addresses = await nursery.start(sniffer.serve)   # [(host, port), ...] once bound

Each datagram is HEPv3 (starts with ``HEP3``) or raw SIP text, told apart per
datagram. It is dropped, and counted by reason, when its UDP source is outside
`allow_from`, when `hep_auth_key` is set and it is not a HEP packet carrying
that key, when it is malformed, or when it is neither a REGISTER nor a response
whose CSeq method is REGISTER (a cheap look at the first bytes and the CSeq line
spares the full parse for other traffic). Parsing is lazy: a REGISTER is kept
as bytes (keyed by the Call-ID and CSeq read off its header lines) and parsed by
the table only when its 2xx arrives; a response is classified from its status
line, Call-ID and CSeq without the parser (`sip.peek_request`, `sip.peek_response`,
`sip.peek_cseq`). Unusual layouts (LF-only line ends, folded lines) take the full
parser instead. The table's events update the store (in memory at once, on disk
in batches by the store's writer thread) and are handed to the callbacks.

`statistics()` keys: the COUNTERS below (datagrams by outcome: every datagram read
ends in exactly one of dropped_not_allowed, dropped_auth, dropped_malformed,
ignored_not_sip, ignored_not_register, registers, responses, errors), the table's
counters prefixed `table_` (pending, pending_bytes, registers, answered_2xx,
answered_failure, provisional, unmatched_responses, malformed_registers, expired,
evicted, conflicts, registered_events, unregistered_events, summaries,
summaries_bytes, summary_hits) and `rcvbuf_bytes` (what
getsockopt(SO_RCVBUF) reports; Linux doubles the value it was given).

The reader drains its socket with non-blocking `recvfrom` until EAGAIN, reading the
clock once per drain, so a burst costs one scheduler round, not one per datagram (it
yields every DRAIN_MAX datagrams to stay fair to the control server); while busy it
sleeps COALESCE_DELAY between drains instead of waking per datagram. A HEP packet is
read by `sip.hep_sip_fields` (one match for the usual chunk layout), `sip.decode_hep`
when that is unsure. Nothing a datagram contains can stop a listener.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import trio

import sip

from .model import Device, mask_token
from .registrations import Registered, RegistrationTable, Unregistered
from .store import Store

__all__ = ["Sniffer", "parse_listen"]

log = logging.getLogger(__name__)

MAX_DATAGRAM = 65535  # UDP's 16-bit length field
# 32 MiB holds ~1 s of Kamailio's 27.7k datagrams/s at ~1 KiB each: time for a GC
# pause or a store flush without kernel drops. The kernel may grant less
# (net.core.rmem_max) unless we may use SO_RCVBUFFORCE; statistics() says what it gave.
RCVBUF = 32 * 1024 * 1024
# Yield to the scheduler after this many datagrams in one drain, so a flood cannot
# starve the control socket.
DRAIN_MAX = 512
# Under load (a drain found at least COALESCE_MIN datagrams) the reader sleeps
# COALESCE_DELAY before draining again rather than waking per datagram; a lone
# datagram on a quiet socket is still handled at once. 0.5 ms is 14 datagrams at
# Kamailio's 27.7k/s ceiling, and a tenth of the wake-up latency budget (p99 5 ms).
COALESCE_MIN = 4
COALESCE_DELAY = 0.0005
HEP_PAYLOAD_SIP = 1  # HEPv3 chunk 11 value for SIP
_ALLOW_CACHE_MAX = 4096
_LOG_INTERVAL = 10.0  # seconds between two logs of unexpected errors

_NO_MAPPING: Mapping[str, Any] = {}
# module globals: one lookup per datagram instead of two
_hep_sip_fields = sip.hep_sip_fields
_peek_request = sip.peek_request
_peek_response = sip.peek_response
SipParseError = sip.SipParseError


COUNTERS = (
    "received",  # every datagram read
    "hep",  # ... of which HEPv3
    "raw",  # ... of which raw SIP text
    "parsed",  # messages given to the full SIP parser
    "registrations",  # Registered events (successful registrations)
    "unregistrations",  # Unregistered events
    "devices_changed",  # device records created or changed by registrations
    "dropped_not_allowed",  # UDP source outside allow_from
    "dropped_auth",  # hep_auth_key set: wrong/missing key, or raw SIP
    "dropped_malformed",  # bad HEP or SIP
    "ignored_not_sip",  # HEP payload type other than SIP
    "ignored_not_register",  # other requests, responses to other methods, keep-alives
    "registers",  # REGISTER requests handed to the table (lazily or parsed)
    "responses",  # responses to REGISTER handed to the table
    "registers_lazy",  # REGISTERs kept as bytes until a 2xx (parsed by the table then)
    "responses_fast",  # responses to REGISTER classified without the full parser
    "errors",  # unexpected exceptions (bugs) while handling a datagram; logged
)


def parse_listen(spec: str) -> tuple[str, int]:
    """`udp:HOST:PORT` (HOST may be `[v6]`; `udp:` may be left out) -> (host, port)."""
    text = spec
    scheme, sep, rest = text.partition(":")
    if sep and scheme.lower() in ("udp", "hep"):
        text = rest
    elif sep and scheme.lower() in ("tcp", "tls", "sctp"):
        raise ValueError(f"sniffer listens on UDP only: {spec!r}")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"bad sniffer listen address {spec!r} (want udp:HOST:PORT)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"sniffer listen host must be an IP address: {spec!r}") from None
    if int(port) > 65535:
        raise ValueError(f"bad port in {spec!r}")
    return host, int(port)


def _default_user_agents(store: Store) -> Callable[[], Mapping[str, Any]]:
    def user_agents() -> Mapping[str, Any]:
        tree = store.get_config()  # no dotted-key walk, no KeyError per datagram
        value = tree.get("User-Agents") if isinstance(tree, Mapping) else None
        return value if isinstance(value, Mapping) else _NO_MAPPING

    return user_agents


class Sniffer:
    """UDP listeners feeding a RegistrationTable; see the module docstring.

    `on_registered(event)` / `on_unregistered(event)` run synchronously in the
    reader task after the store was updated; they must not block (the waiters'
    notify is a dict lookup). `user_agents()` returns Kazoo's User-Agents mapping
    (default: the store's `User-Agents` config). `clock` gives UNIX seconds.
    """

    def __init__(
        self,
        listen: Sequence[str],
        allow_from: Sequence[str],
        hep_auth_key: str,
        table: RegistrationTable,
        store: Store,
        on_registered: Callable[[Registered], None],
        on_unregistered: Callable[[Unregistered], None] | None = None,
        user_agents: Callable[[], Mapping[str, Any]] | None = None,
        *,
        rcvbuf: int = RCVBUF,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._listen = [parse_listen(s) for s in listen]
        self._allow = [ipaddress.ip_network(n, strict=False) for n in allow_from]
        self._allow_cache: dict[str, bool] = {}
        key = hep_auth_key.encode() if hep_auth_key else b""
        self._auth_key = key or None
        self.table = table
        self.store = store
        self._on_registered = on_registered
        self._on_unregistered = on_unregistered
        self._user_agents = user_agents or _default_user_agents(store)
        self._rcvbuf = rcvbuf
        self._clock = clock
        self._stats = dict.fromkeys(COUNTERS, 0)
        self._rcvbuf_granted: list[int] = []
        self._last_error_log = 0.0
        self.addresses: list[tuple[str, int]] = []

    # --- the shell -------------------------------------------------------------------
    async def serve(
        self,
        *,
        task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Bind every listener, report [(host, port), ...], then read until cancelled."""
        socks: list[socket.socket] = []
        try:
            for host, port in self._listen:
                socks.append(self._open(host, port))
            self.addresses = [s.getsockname()[:2] for s in socks]
            async with trio.open_nursery() as nursery:
                for s in socks:
                    nursery.start_soon(self._reader, s)
                log.info(
                    "sniffer listening on %s (SO_RCVBUF granted %s bytes)",
                    ", ".join(f"udp:{h}:{p}" for h, p in self.addresses),
                    self._rcvbuf_granted,
                )
                task_status.started(list(self.addresses))
                await trio.sleep_forever()
        finally:
            for s in socks:
                s.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _open(self, host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
                if option is None:
                    continue
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, self._rcvbuf)
                    break
                except OSError:  # SO_RCVBUFFORCE needs CAP_NET_ADMIN
                    continue
            # Linux reports twice what it books for the payload (bookkeeping overhead).
            granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            self._rcvbuf_granted.append(granted)
            if granted < self._rcvbuf:
                log.warning(
                    "sniffer: kernel granted SO_RCVBUF %d of %d bytes; raise "
                    "net.core.rmem_max to absorb bursts",
                    granted,
                    self._rcvbuf,
                )
            sock.bind((host, port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _reader(self, sock: socket.socket) -> None:
        # recvfrom(65535) measured faster here than recvfrom_into + a copy of the slice
        recv = sock.recvfrom
        handle = self.handle_datagram
        clock = self._clock
        while True:
            await trio.lowlevel.wait_readable(sock)
            while True:
                now = clock()  # one clock read per drain: the batch arrived "now"
                n = 0
                while n < DRAIN_MAX:
                    try:
                        data, addr = recv(MAX_DATAGRAM)
                    except BlockingIOError:
                        break
                    except OSError as exc:  # e.g. ICMP errors queued on the socket
                        self._log_error("sniffer: recvfrom failed: %s", exc)
                        break
                    n += 1
                    handle(data, addr[0], now)
                if n == DRAIN_MAX:
                    await trio.lowlevel.checkpoint()  # a full drain: let others run
                elif n >= COALESCE_MIN:
                    # Busy: wait a moment for a batch instead of a wake-up per datagram
                    # (a scheduler round costs as much as handling several datagrams).
                    await trio.sleep(COALESCE_DELAY)
                else:
                    break  # quiet: the next datagram is handled as soon as it comes

    # --- the per-datagram path (synchronous; tests call it directly) ------------------
    def handle_datagram(self, data: bytes, source: str, now: float) -> None:
        """Classify one datagram from UDP source address `source` and apply it."""
        stats = self._stats
        stats["received"] += 1
        allowed = self._allow_cache.get(source)
        if allowed is None:
            allowed = self._allowed(source)
        if not allowed:
            stats["dropped_not_allowed"] += 1
            return
        if data[:4] == b"HEP3":
            stats["hep"] += 1
            # the three fields we need in one C-level match; decode_hep for odd packets
            fields = _hep_sip_fields(data)
            if fields is None:
                try:
                    packet = sip.decode_hep(data)
                except SipParseError:
                    stats["dropped_malformed"] += 1
                    return
                fields = (packet.payload_type, packet.auth_key, packet.payload)
            payload_type, auth_key, payload = fields
            if self._auth_key is not None and not _same_key(auth_key, self._auth_key):
                stats["dropped_auth"] += 1
                return
            if payload_type != HEP_PAYLOAD_SIP:
                stats["ignored_not_sip"] += 1
                return
        else:
            stats["raw"] += 1
            if self._auth_key is not None:
                stats["dropped_auth"] += 1
                return
            payload = data
        try:
            # The usual REGISTER, kept as bytes until its 2xx: no events now, nothing else
            # to do (the rest of the lazy path is in _handle_sip).
            if payload[:9] == b"REGISTER " and self.table.require_2xx:
                peek = _peek_request(payload)
                if peek is not None and peek[3] == "REGISTER":
                    self.table.apply_register(payload, peek[1], peek[2], now, _NO_MAPPING)
                    stats["registers_lazy"] += 1
                    stats["registers"] += 1
                    return
            self._handle_sip(payload, now)
        except SipParseError:
            stats["dropped_malformed"] += 1
        except Exception:
            stats["errors"] += 1
            self._log_error("sniffer: unexpected error on a datagram", exc_info=True)

    def _handle_sip(self, payload: bytes, now: float) -> None:
        stats = self._stats
        table = self.table
        # Pre-filter: the first bytes say request or response, the CSeq line the method.
        if payload[:9] == b"REGISTER ":
            # not the lazy path (handle_datagram takes that): an unusual layout, or
            # require_2xx off (a REGISTER copy counts at once)
            message = sip.parse_message(payload)
            stats["parsed"] += 1
            user_agents = _NO_MAPPING if table.require_2xx else self._user_agents()
            events = table.apply(message, now, user_agents)
            stats["registers"] += 1
        elif payload[:8] == b"SIP/2.0 ":
            peek_response = _peek_response(payload)
            if peek_response is not None:
                status, call_id, number, method = peek_response
                if method != "REGISTER":
                    stats["ignored_not_register"] += 1
                    return
                stats["responses_fast"] += 1
            else:
                cseq = sip.peek_cseq(payload)
                if cseq is not None and cseq[1] != "REGISTER":
                    stats["ignored_not_register"] += 1
                    return
                # unusual layout: let the real parser decide
                response = sip.parse_message(payload)
                stats["parsed"] += 1
                if not isinstance(response, sip.Response) or response.cseq[1] != "REGISTER":
                    stats["ignored_not_register"] += 1
                    return
                call_id, (number, _), status = response.call_id, response.cseq, response.status_code
            # the mapping is looked up only if the REGISTER's extraction needs it
            events = table.apply_response(call_id, number, status, now, self._user_agents)
            stats["responses"] += 1
            if not events:
                return
        elif sip.looks_like_request_or_keepalive(payload):
            stats["ignored_not_register"] += 1
            return
        else:
            raise sip.SipParseError("neither a SIP request nor a SIP response")
        for event in events:
            if isinstance(event, Registered):
                stats["registrations"] += 1
                if event.devices:
                    changed = self.store.put_devices(event.devices)
                    if changed:
                        stats["devices_changed"] += len(changed)
                        if log.isEnabledFor(logging.DEBUG):
                            self._log_learned(changed)
                self._on_registered(event)
            else:
                stats["unregistrations"] += 1
                self.store.unbind(event.aor, event.device_ids)
                if self._on_unregistered is not None:
                    self._on_unregistered(event)

    def _log_learned(self, changed: list[Device]) -> None:
        # the masked tokens cost more than the rest of a device's write path
        for d in changed:
            log.debug(
                "token learned: aor=%s device=%s type=%s app=%s token=%s",
                d.aor,
                mask_token(d.device_id) if d.device_id == d.token else d.device_id,
                d.type,
                d.app,
                mask_token(d.token),
            )

    def _allowed(self, source: str) -> bool:
        try:
            address = ipaddress.ip_address(source.partition("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        allowed = any(address in net for net in self._allow)
        if len(self._allow_cache) >= _ALLOW_CACHE_MAX:
            self._allow_cache.clear()
        self._allow_cache[source] = allowed
        return allowed

    def _log_error(self, msg: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= _LOG_INTERVAL:
            self._last_error_log = now
            log.error(msg, *args, exc_info=exc_info)

    def statistics(self) -> dict[str, int]:
        """Datagram counters by outcome, the table's counters (`table_*`), SO_RCVBUF."""
        stats = dict(self._stats)
        for key, value in self.table.statistics().items():
            stats[f"table_{key}"] = value
        stats["rcvbuf_bytes"] = min(self._rcvbuf_granted, default=0)
        return stats


def _same_key(got: bytes | str | None, want: bytes) -> bool:
    if got is None:
        return False
    if isinstance(got, str):
        got = got.encode()
    return hmac.compare_digest(got.rstrip(b"\0"), want)
