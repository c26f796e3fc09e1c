"""The trio client for the control protocol: the CLI, the demo, tests, anything async.

    async with open_control("/run/pusher-trio/control.sock") as control:   # or "127.0.0.1:5290"
        result = await control.call("push", {"aor": "alice@example.com"})

`call` returns the result or raises the `ControlError` subclass of the error
reply (`NoPushTarget`, `Timeout`, ..., with `code`, `message`, `data`).
Several calls may run at once on one client (from several tasks): replies are
matched by id. A lost connection fails every pending call with
`ControlConnectionLost` (a `ConnectionError`).

Connecting: no socket file, or nothing listening there, raises `DaemonUnavailable`
(a `ConnectionError`; the cause is the `FileNotFoundError` / `ConnectionRefusedError`);
no connection within `connect_timeout` raises `trio.TooSlowError`. Other OS errors
(permission denied, ...) pass through. `control_client(stream)` runs a client on a
stream that is already open (tests that write raw bytes first).
"""

from __future__ import annotations

import itertools
import os
import socket as stdlib_socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import outcome
import trio

from . import jsonrpc
from .jsonrpc import ControlError, NetstringDecoder

# Replies may be large (devices.list of a big installation); requests stay under 64 KiB.
MAX_REPLY = 64 * 1024 * 1024


class ControlConnectionLost(ConnectionError):
    """The connection closed (or broke) before the reply arrived."""


class DaemonUnavailable(ConnectionError):
    """Nothing listens at the control target: no socket file, or the connection is refused."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"no daemon answers at {target}: {reason}")
        self.target = target
        self.reason = reason


def parse_target(target: str | os.PathLike[str]) -> tuple[str, int] | str:
    """'host:port' / '[::1]:port' / 'tcp:host:port' -> (host, port); anything else is a
    UNIX socket path."""
    text = os.fspath(target)
    if text.startswith("tcp:"):
        text = text[4:]
    if "/" not in text:
        host, sep, port = text.rpartition(":")
        if sep and host and port.isdigit():
            return host.strip("[]"), int(port)
    return text


class ControlClient:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._send_lock = trio.Lock()
        self._ids = itertools.count(1)
        self._results: dict[int, outcome.Outcome[Any]] = {}
        self._waiting: dict[int, trio.Event] = {}
        self._closed: BaseException | None = None

    async def call(self, method: str, params: Any = None) -> Any:
        """Send a request and wait for its reply; raises the ControlError of an error reply."""
        if self._closed is not None:
            raise ControlConnectionLost(str(self._closed))
        request_id = next(self._ids)
        done = trio.Event()
        self._waiting[request_id] = done
        try:
            await self._send(jsonrpc.encode_request(method, params, id=request_id))
            await done.wait()
            return self._results.pop(request_id).unwrap()
        finally:
            self._waiting.pop(request_id, None)
            self._results.pop(request_id, None)

    async def notify(self, method: str, params: Any = None) -> None:
        """A notification: no id, no reply (e.g. `cancel` as Kamailio sends it)."""
        await self._send(jsonrpc.encode_request(method, params))

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (tests of broken framing)."""
        await self._send(data)

    async def _send(self, data: bytes) -> None:
        try:
            async with self._send_lock:
                await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ControlConnectionLost("the control connection is closed") from exc

    def _deliver(self, request_id: Any, result: outcome.Outcome[Any]) -> None:
        event = self._waiting.get(request_id) if isinstance(request_id, int) else None
        if event is not None:
            self._results[request_id] = result
            event.set()

    def _fail_all(self, error: BaseException) -> None:
        for request_id, event in list(self._waiting.items()):
            if request_id not in self._results:
                self._results[request_id] = outcome.Error(error)
                event.set()

    async def _reader(self) -> None:
        decoder = NetstringDecoder(MAX_REPLY)
        lost: BaseException = ControlConnectionLost("the daemon closed the connection")
        try:
            while True:
                try:
                    data = await self._stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    break
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not None:
                    response = jsonrpc.parse_response(frame)
                    if response.error is not None:
                        if response.id is None:
                            # A framing error: the server closes; every pending call failed.
                            lost = response.error
                            self._fail_all(response.error)
                        else:
                            self._deliver(response.id, outcome.Error(response.error))
                    else:
                        self._deliver(response.id, outcome.Value(response.result))
        except ControlError as exc:
            lost = ControlConnectionLost(f"unreadable reply: {exc.message}")
        finally:
            self._closed = lost
            self._fail_all(lost)


async def _connect(address: tuple[str, int] | str) -> trio.abc.Stream:
    if isinstance(address, tuple):
        return await trio.open_tcp_stream(*address)
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        await sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


@asynccontextmanager
async def control_client(stream: trio.abc.Stream) -> AsyncIterator[ControlClient]:
    """A client on an open stream; the stream is closed on exit.

    An exception of the caller's block comes out as itself, not wrapped in the
    ExceptionGroup of the reader's nursery.
    """
    async with stream:
        try:
            async with trio.open_nursery() as nursery:
                client = ControlClient(stream)
                nursery.start_soon(client._reader)
                try:
                    yield client
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1 and not isinstance(
                group.exceptions[0], BaseExceptionGroup
            ):
                raise group.exceptions[0] from group.exceptions[0].__cause__
            raise


@asynccontextmanager
async def open_control(
    target: str | os.PathLike[str], *, connect_timeout: float = 5.0
) -> AsyncIterator[ControlClient]:
    """Connect to the control socket (UNIX path, or "host:port" for TCP)."""
    address = parse_target(target)
    shown = os.fspath(target)
    try:
        with trio.fail_after(connect_timeout):
            stream = await _connect(address)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise DaemonUnavailable(shown, exc.strerror or str(exc)) from exc
    except OSError as exc:
        # trio.open_tcp_stream reports every failed attempt in one OSError
        causes = [exc, exc.__cause__, *getattr(exc.__cause__, "exceptions", ())]
        if any(isinstance(c, ConnectionRefusedError) for c in causes):
            raise DaemonUnavailable(shown, "connection refused") from exc
        raise
    async with control_client(stream) as client:
        yield client


__all__ = [
    "ControlClient",
    "ControlConnectionLost",
    "ControlError",
    "DaemonUnavailable",
    "control_client",
    "open_control",
    "parse_target",
]
