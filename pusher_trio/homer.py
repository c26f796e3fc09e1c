"""Push events to Homer (DESIGN §13, `[hep] capture`): HEPv3 log packets, payload type 100.

Kamailio traces the call's SIP to Homer; the sidecar sends what it decided for that
call, so Homer shows "push sent / provider answered / REGISTER seen / answered" inside
the call's flow. Homer links a log packet to the SIP whose Call-ID equals the packet's
correlation id (HEP chunk 17), as it does for Kamailio's own `hlog()` (siptrace).

Pure: `event_body` and `log_packet` (encoded with the project's `sip.encode_hep`).
Shell: `HepCapture`, an events.PushObserver owning one connected, non-blocking UDP
socket: the push path never waits for Homer; a datagram the kernel will not take at
once is dropped and counted. Tokens are masked in every event (DESIGN §11).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

import trio

import sip

from .model import Device, mask_token

log = logging.getLogger("pusher_trio.homer")

PAYLOAD_LOG = 100  # HEP payload type of a log line (Homer; Kamailio siptrace's hlog())
ERROR_LOG_INTERVAL = 60.0  # a capture server that is down is logged once a minute, not per push


def event_body(event: str, call_id: str, fields: Mapping[str, Any]) -> bytes:
    """One event as compact JSON: `event`, `call_id`, then `fields` (already masked)."""
    body = {"event": event, "call_id": call_id, **fields}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def log_packet(
    body: bytes,
    *,
    call_id: str,
    src: tuple[str, int],
    dst: tuple[str, int],
    timestamp: float,
    capture_id: int,
) -> bytes:
    """The HEPv3 log packet for `body`; correlation id = the call's Call-ID (if it has one)."""
    return sip.encode_hep(
        body,
        src=src,
        dst=dst,
        timestamp=timestamp,
        capture_id=capture_id,
        payload_type=PAYLOAD_LOG,
        protocol=socket.IPPROTO_UDP,
        correlation_id=call_id.encode("utf-8") if call_id else None,
    )


def _device(device: Device) -> dict[str, Any]:
    return {"provider": device.type, "app": device.app, "token": mask_token(device.token)}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


class HepCapture:
    """Sends each push event to `[hep] capture` (open() first, close() at the end)."""

    def __init__(self, address: tuple[str, int], capture_id: int) -> None:
        self.address = address
        self.capture_id = capture_id
        self._sock: socket.socket | None = None
        self._src: tuple[str, int] = ("0.0.0.0", 0)
        self._dst: tuple[str, int] = ("0.0.0.0", 0)
        self._last_error_log = -ERROR_LOG_INTERVAL
        self._stats = {"sent": 0, "dropped": 0, "errors": 0}

    async def open(self) -> None:
        """Resolve the capture host (a name is fine) and connect the UDP socket."""
        host, port = self.address
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.connect(sockaddr)  # UDP: no packet sent; fixes the route and the source
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._src = sock.getsockname()[:2]
        self._dst = (str(sockaddr[0]), int(sockaddr[1]))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def statistics(self) -> dict[str, Any]:
        return {"capture": f"{self.address[0]}:{self.address[1]}", **self._stats}

    # --- events.PushObserver --------------------------------------------------------------
    def push_started(self, call_id: str, aor: str, devices: Sequence[Device]) -> None:
        self._send("push", call_id, {"aor": aor, "devices": [_device(d) for d in devices]})

    def push_answered(
        self, call_id: str, device: Device, outcome: str, reason: str | None, seconds: float
    ) -> None:
        fields = {"aor": device.aor, **_device(device), "outcome": outcome, "reason": reason}
        self._send("provider_answer", call_id, {**fields, "latency_ms": _ms(seconds)})

    def registered(self, call_id: str, aor: str, contact: str, wake_seconds: float | None) -> None:
        # `contact` comes masked from the service (DESIGN §11)
        self._send(
            "registered", call_id, {"aor": aor, "contact": contact, "wake_ms": _ms(wake_seconds)}
        )

    def request_ended(self, call_id: str, aor: str, result: str, seconds: float) -> None:
        self._send("result", call_id, {"aor": aor, "result": result, "waited_ms": _ms(seconds)})

    # --- the socket -------------------------------------------------------------------------
    def _send(self, event: str, call_id: str, fields: Mapping[str, Any]) -> None:
        if self._sock is None:
            return
        try:
            packet = log_packet(
                event_body(event, call_id, fields),
                call_id=call_id,
                src=self._src,
                dst=self._dst,
                timestamp=time.time(),
                capture_id=self.capture_id,
            )
        except ValueError:  # over HEP's 64 KiB (an AOR with very many devices)
            self._stats["errors"] += 1
            return
        try:
            self._sock.send(packet)
            self._stats["sent"] += 1
        except BlockingIOError:
            self._stats["dropped"] += 1
        except OSError as exc:  # e.g. ECONNREFUSED: the ICMP of an earlier packet
            self._stats["errors"] += 1
            now = time.monotonic()
            if now - self._last_error_log >= ERROR_LOG_INTERVAL:
                self._last_error_log = now
                log.warning(
                    "HEP capture %s:%s unreachable (%s); events are dropped and counted",
                    *self.address,
                    exc.strerror or exc,
                )


__all__ = ["PAYLOAD_LOG", "HepCapture", "event_body", "log_packet"]
