"""A throwaway stand-in for the sidecar, to prove the Kamailio push role on its own.

It speaks what `janssonrpcc` speaks (JSON-RPC 2.0 in netstrings over TCP) and takes
the HEP copies siptrace sends, with no parsing beyond what the checks need. The
real sidecar is pusher_trio; this stub only lets the Kamailio side be tested (and
debugged) without it.

Per AOR, `script[aor]` says how to answer `push`:
* ``"registered"`` (default): wait for a mirrored ``200`` to a REGISTER of that user
  that arrives after the push, then answer ``{"status": "registered", ...}``;
* an int: answer that JSON-RPC error code at once;
* ``"hang"``: never answer (Kamailio's own timeout fires).
`on_push(params)` runs when a push arrives (the e2e harness starts a phone from it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import trio
import trio.lowlevel

MAX_FRAME = 65536

ERROR_NAMES = {
    -32001: "NoPushTarget",
    -32002: "Timeout",
    -32003: "PushRejected",
    -32004: "Overloaded",
    -32005: "ShuttingDown",
    -32006: "Cancelled",
}


def netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


class NetstringReader:
    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while True:
            colon = self._buf.find(b":")
            if colon < 0:
                return out
            length = int(self._buf[:colon])
            if length > MAX_FRAME:
                raise ValueError("frame too large")
            end = colon + 1 + length
            if len(self._buf) < end + 1:
                return out
            if self._buf[end : end + 1] != b",":
                raise ValueError("bad netstring")
            out.append(bytes(self._buf[colon + 1 : end]))
            del self._buf[: end + 1]


_CSEQ_REGISTER = re.compile(rb"^CSeq:\s*\d+\s+REGISTER", re.I | re.M)
_TO_USER = re.compile(rb"^(?:To|t):[^\r\n]*?sips?:([^@;>\s]+)@", re.I | re.M)


class StubSidecar:
    def __init__(self, on_push: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.script: dict[str, str | int] = {}
        self.on_push = on_push
        self.requests: list[dict[str, Any]] = []
        self.notifications: list[dict[str, Any]] = []
        self.hep: list[bytes] = []
        self.answers: list[dict[str, Any]] = []
        self.connected = trio.Event()
        self.answered = trio.Event()
        self._registered = trio.Event()
        self._cancelled: dict[str, trio.Event] = {}

    # ----- HEP -----
    async def serve_hep(
        self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with sock:
            await sock.bind(("127.0.0.1", 0))
            task_status.started(sock.getsockname()[1])
            while True:
                data = await sock.recv(65535)
                self.hep.append(data)
                if data.find(b"SIP/2.0 200") >= 0 and _CSEQ_REGISTER.search(data):
                    self._registered.set()
                    self._registered = trio.Event()

    def registered_users(self) -> list[str]:
        """Users whose REGISTER got a mirrored 200 (in arrival order)."""
        users = []
        for data in self.hep:
            if data.find(b"SIP/2.0 200") >= 0 and _CSEQ_REGISTER.search(data):
                m = _TO_USER.search(data)
                if m:
                    users.append(m.group(1).decode())
        return users

    # ----- JSON-RPC -----
    async def serve_rpc(
        self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            await self._converse(stream)
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # Kamailio went away

    async def _converse(self, stream: trio.SocketStream) -> None:
        self.connected.set()
        reader = NetstringReader()
        lock = trio.Lock()
        async with stream, trio.open_nursery() as nursery:
            while True:
                data = await stream.receive_some()
                if not data:
                    nursery.cancel_scope.cancel()
                    return
                for frame in reader.feed(data):
                    msg = json.loads(frame)
                    if "id" not in msg:
                        self.notifications.append(msg)
                        if msg.get("method") == "cancel":
                            ev = self._cancelled.get(msg.get("params", {}).get("call_id", ""))
                            if ev is not None:
                                ev.set()
                        continue
                    self.requests.append(msg)
                    nursery.start_soon(self._answer, stream, lock, msg)

    async def _answer(
        self, stream: trio.SocketStream, lock: trio.Lock, msg: dict[str, Any]
    ) -> None:
        params = msg.get("params") or {}
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": msg["id"]}
        if msg.get("method") != "push":
            reply["error"] = {"code": -32601, "message": "Method not found"}
        else:
            aor = params.get("aor", "")
            how = self.script.get(aor, "registered")
            user = aor.split("@", 1)[0]
            seen = len(self.hep)
            cancelled = self._cancelled.setdefault(params.get("call_id", ""), trio.Event())
            if self.on_push is not None:
                self.on_push(params)
            if how == "hang":
                await trio.sleep_forever()
            if isinstance(how, int):
                reply["error"] = {"code": how, "message": ERROR_NAMES.get(how, "error")}
            else:
                outcome = "timeout"
                with trio.move_on_after(float(params.get("timeout", 20))):
                    async with trio.open_nursery() as waiters:

                        async def cancel_wait() -> None:
                            nonlocal outcome
                            await cancelled.wait()
                            outcome = "cancelled"
                            waiters.cancel_scope.cancel()

                        async def register_wait() -> None:
                            nonlocal outcome
                            while True:
                                await self._registered.wait()
                                fresh = self.hep[seen:]
                                if any(
                                    d.find(b"SIP/2.0 200") >= 0
                                    and _CSEQ_REGISTER.search(d)
                                    and (m := _TO_USER.search(d))
                                    and m.group(1).decode() == user
                                    for d in fresh
                                ):
                                    outcome = "registered"
                                    waiters.cancel_scope.cancel()
                                    return
                                await trio.lowlevel.checkpoint()

                        waiters.start_soon(cancel_wait)
                        waiters.start_soon(register_wait)
                if outcome == "registered":
                    reply["result"] = {
                        "status": "registered",
                        "aor": aor,
                        "contact": "",
                        "waited_ms": 0,
                        "pushes": [],
                    }
                elif outcome == "cancelled":
                    reply["error"] = {"code": -32006, "message": "Cancelled"}
                else:
                    reply["error"] = {"code": -32002, "message": "Timeout"}
        self.answers.append(reply)
        self.answered.set()
        async with lock:
            await stream.send_all(netstring(json.dumps(reply).encode()))
