"""The control server: JSON-RPC 2.0 in netstrings on a UNIX socket and optional TCP (DESIGN §7).

The I/O shell around `jsonrpc` (pure). One reader task per connection feeds
a `NetstringDecoder`; each request runs in its own task in the connection's
nursery, so one connection carries many requests at once and replies go out
in any order, each written whole. Replies that are ready together go out in one
write: the first task to reply writes what has queued up by then (`_send`), the
others wait until their reply is written, so a client that stops reading still
holds its requests (and stops being read) instead of growing a queue.

The exception is the most common request under load, a `push` with `wait: false`
to a provider connection that is already open: the service's `start_push` sends it
from this reader and answers through `_Reply` from whichever task finishes it, with
no task of its own (the task, its cancel scope and the coroutine chain it resumed
cost about a third of the sidecar's CPU per push, `load.bench_service`). Its reply
holds its slot until a writer task has written it, so the same bound on a
connection's requests holds.

Failure is per connection: broken framing or a message over 64 KiB gets one
error reply with `id: null` and that connection is closed; a peer that goes
away (EOF, reset) cancels its own requests; nothing reaches the listener or
the other connections.

Shutdown (`stop_accepting()` then `shutdown()`, or `shutdown()` alone):
stop accepting, end every waiting `push` with ShuttingDown (the service does
it), let the replies be written for `grace` seconds, then close the
connections; `serve` returns.
"""

from __future__ import annotations

import errno
import logging
import os
import socket as stdlib_socket
import stat
import time
from collections.abc import Awaitable
from typing import Any, Protocol

import trio

from . import jsonrpc
from .jsonrpc import ControlError, InternalError, NetstringDecoder

log = logging.getLogger("pusher_trio.control")

READ_SIZE = 65536
# A connection whose requests are all still running stops being read at this
# many: Kamailio's janssonrpcc uses one connection for every waiting call, so
# it must hold max_waiting and more; a runaway client cannot hold unbounded tasks.
MAX_IN_FLIGHT_PER_CONNECTION = 20_000
SHUTDOWN_GRACE = 1.0  # seconds to write the ShuttingDown replies before closing
# accept() errors that mean "out of resources, try again soon" (as trio's serve_listeners).
_ACCEPT_CAPACITY_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class Dispatcher(Protocol):
    """What the server needs of the push service (pusher_trio.service.Service)."""

    def call(
        self, method: str, params: Any = None, *, received: float | None = None
    ) -> Awaitable[Any]: ...

    def shutdown(self) -> int: ...


def parse_tcp(tcp: str | tuple[str, int]) -> tuple[str, int]:
    """'127.0.0.1:5290' / '[::1]:0' / ('127.0.0.1', 0) -> (host, port)."""
    if isinstance(tcp, tuple):
        return tcp[0], int(tcp[1])
    host, sep, port = tcp.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {tcp!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Connection:
    __slots__ = (
        "batch_written",
        "closing",
        "held",
        "nursery",
        "outbox",
        "slots",
        "stream",
        "writing",
    )

    def __init__(self, stream: trio.abc.Stream, nursery: trio.Nursery, slots: int) -> None:
        self.stream = stream
        self.nursery = nursery
        self.closing = False
        self.outbox: list[bytes] = []  # replies not yet taken by a write
        self.batch_written = trio.Event()  # set when the outbox's current batch is written
        self.writing = False
        self.slots = trio.Semaphore(slots)  # requests running or with a reply unwritten
        self.held = 0  # slots held by task-less replies in the outbox (the writer frees them)


class ControlServer:
    def __init__(
        self,
        service: Dispatcher,
        unix_socket: str | os.PathLike[str] | None = None,
        unix_mode: int = 0o660,
        tcp: str | tuple[str, int] | None = None,
        *,
        grace: float = SHUTDOWN_GRACE,
        max_in_flight: int = MAX_IN_FLIGHT_PER_CONNECTION,
    ) -> None:
        if unix_socket is None and tcp is None:
            raise ValueError("the control server needs a UNIX socket path or a TCP address")
        self.service = service
        self.unix_socket = os.fspath(unix_socket) if unix_socket is not None else None
        self.unix_mode = unix_mode
        self.tcp = parse_tcp(tcp) if tcp is not None else None
        self.grace = grace
        self.max_in_flight = max_in_flight
        self._accept_scope: trio.CancelScope | None = None
        self._bound_unix: tuple[int, str] | None = None
        self._connections: set[_Connection] = set()
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()
        self._stopping = False
        self._stats = {
            "connections_accepted": 0,
            "requests": 0,
            "notifications": 0,
            "replies": 0,
            "errors": 0,
            "framing_errors": 0,
            "dropped_mid_message": 0,
            "write_failures": 0,
        }
        add_source = getattr(service, "add_stats_source", None)
        if add_source is not None:
            add_source("control", self.statistics)

    # --- observability ------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Requests being handled (the app waits for 0 before closing connections)."""
        return self._in_flight

    def statistics(self) -> dict[str, int]:
        return {"connections": len(self._connections), "in_flight": self._in_flight, **self._stats}

    # --- lifecycle ------------------------------------------------------------------------
    def stop_accepting(self) -> None:
        """Close the listeners; open connections stay to carry their answers."""
        self._stopping = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()

    def shutdown(self) -> None:
        """Graceful stop: stop accepting, answer waiting pushes ShuttingDown, close after grace.

        `serve` returns once the replies are written (at most `grace` seconds).
        """
        self.stop_accepting()
        self.service.shutdown()

    async def serve(
        self, *, task_status: trio.TaskStatus[list[Any]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind, report `[path and/or (host, port)]`, serve until shutdown() or cancelled."""
        listeners: list[trio.SocketListener] = []
        bound: list[Any] = []
        try:
            if self.unix_socket is not None:
                listeners.append(await self._bind_unix(self.unix_socket))
                bound.append(self.unix_socket)
            if self.tcp is not None:
                tcp_listeners = await trio.open_tcp_listeners(self.tcp[1], host=self.tcp[0])
                listeners.extend(tcp_listeners)
                for listener in tcp_listeners:
                    host, port = listener.socket.getsockname()[:2]
                    bound.append((host, port))
            async with trio.open_nursery() as outer:
                if not getattr(self.service, "running", True):
                    # The service hosts shared pushes in its own nursery; run it here
                    # when the application did not start it.
                    await outer.start(self.service.run)  # type: ignore[attr-defined]
                async with trio.open_nursery() as connections:
                    with trio.CancelScope() as accept_scope:
                        self._accept_scope = accept_scope
                        if self._stopping:
                            accept_scope.cancel()
                        async with trio.open_nursery() as accepting:
                            for listener in listeners:
                                accepting.start_soon(self._accept_loop, listener, connections)
                            task_status.started(bound)
                    # Not accepting any more: free the addresses, answer, then close.
                    for listener in listeners:
                        await listener.aclose()
                    self._remove_unix_socket()
                    self.service.shutdown()
                    with trio.move_on_after(self.grace):
                        await self._wait_idle()
                    connections.cancel_scope.cancel()
                outer.cancel_scope.cancel()
        finally:
            for listener in listeners:
                with trio.CancelScope(shield=True):
                    await listener.aclose()
            self._remove_unix_socket()

    async def _wait_idle(self) -> None:
        while self._in_flight:
            self._idle = trio.Event()
            await self._idle.wait()

    # --- binding -----------------------------------------------------------------------------
    async def _bind_unix(self, path: str) -> trio.SocketListener:
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        await self._remove_stale_socket(path)
        sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        try:
            await sock.bind(path)
            os.chmod(path, self.unix_mode)
            sock.listen(stdlib_socket.SOMAXCONN)
        except BaseException:
            sock.close()
            raise
        self._bound_unix = (os.stat(path).st_ino, path)
        return trio.SocketListener(sock)

    @staticmethod
    async def _remove_stale_socket(path: str) -> None:
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise FileExistsError(errno.EEXIST, "exists and is not a socket", path)
        probe = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        try:
            with trio.move_on_after(1):
                await probe.connect(path)
                raise OSError(errno.EADDRINUSE, "another process serves this socket", path)
        except (ConnectionRefusedError, FileNotFoundError):
            pass
        finally:
            probe.close()
        try:
            os.unlink(path)  # stale: left by a process that died
        except FileNotFoundError:
            pass

    def _remove_unix_socket(self) -> None:
        bound = self._bound_unix
        if bound is None:
            return
        inode, path = bound
        self._bound_unix = None
        try:
            if os.stat(path).st_ino == inode:  # ours, not a successor's
                os.unlink(path)
        except OSError:
            pass

    # --- connections ----------------------------------------------------------------------------
    async def _accept_loop(self, listener: trio.SocketListener, connections: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_CAPACITY_ERRORS:
                    log.error("accept failed: %s; retrying", os.strerror(exc.errno or 0))
                    await trio.sleep(0.1)
                    continue
                raise
            self._stats["connections_accepted"] += 1
            connections.start_soon(self._handle_connection, stream)

    async def _handle_connection(self, stream: trio.SocketStream) -> None:
        async with stream, trio.open_nursery() as nursery:
            conn = _Connection(stream, nursery, self.max_in_flight)
            self._connections.add(conn)
            try:
                await self._read_loop(conn)
            finally:
                # EOF, framing error or a dead peer: its requests have nobody to answer.
                self._connections.discard(conn)
                conn.closing = True
                self._free_held(conn)
                nursery.cancel_scope.cancel()

    async def _read_loop(self, conn: _Connection) -> None:
        decoder = NetstringDecoder()
        slots = conn.slots
        start_push = getattr(self.service, "start_push", None)
        while not conn.closing:
            try:
                data = await conn.stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                if decoder.in_frame:
                    self._stats["dropped_mid_message"] += 1
                return
            decoder.feed(data)
            while True:
                try:
                    frame = decoder.next_frame()
                except jsonrpc.FramingError as exc:
                    self._stats["framing_errors"] += 1
                    log.info("closing a control connection: %s", exc.message)
                    await self._send(conn, jsonrpc.encode_error(None, exc))
                    return
                if frame is None:
                    break
                received = time.perf_counter()
                try:
                    request = jsonrpc.parse_request(frame)
                except ControlError as exc:
                    self._stats["errors"] += 1
                    await self._send(conn, jsonrpc.encode_error(exc.id, exc))
                    continue
                try:
                    # No scheduler round per request: the requests of one read start
                    # together and share the provider write (one read is <= READ_SIZE).
                    slots.acquire_nowait()
                except trio.WouldBlock:
                    await slots.acquire()  # backpressure: stop reading at max_in_flight
                self._in_flight += 1
                if (
                    start_push is not None
                    and request.method == "push"
                    and not request.is_notification
                    and type(request.params) is dict
                ):
                    self._stats["requests"] += 1
                    reply = _Reply(self, conn, request.id)
                    try:
                        started = start_push(request.params, received, reply)
                    except Exception:  # a bug there: the usual path answers
                        log.exception("control method push: the task-less start failed")
                        started = False
                    if started:
                        continue
                    self._stats["requests"] -= 1  # counted again where it runs
                conn.nursery.start_soon(self._run_request, conn, request, received, slots)

    async def _run_request(
        self,
        conn: _Connection,
        request: jsonrpc.Request,
        received: float,
        slots: trio.Semaphore,
    ) -> None:
        try:
            if request.is_notification:
                self._stats["notifications"] += 1
            else:
                self._stats["requests"] += 1
            try:
                result = await self.service.call(request.method, request.params, received=received)
            except ControlError as exc:
                self._stats["errors"] += 1
                reply = jsonrpc.encode_error(request.id, exc)
            except Exception:
                self._stats["errors"] += 1
                log.exception("control method %s failed", request.method)
                reply = jsonrpc.encode_error(request.id, InternalError("internal error"))
            else:
                try:
                    reply = jsonrpc.encode_result(request.id, result)
                except (ValueError, TypeError, RecursionError):  # a result JSON cannot carry
                    self._stats["errors"] += 1
                    log.exception("control method %s: the result cannot be encoded", request.method)
                    reply = jsonrpc.encode_error(request.id, InternalError("internal error"))
            if not request.is_notification:
                await self._send(conn, reply)
                self._stats["replies"] += 1
        finally:
            slots.release()
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _send(self, conn: _Connection, data: bytes) -> None:
        """Queue `data` and return once it is written (or the connection is gone).

        With no write under way, this task becomes the writer: it lets the other
        ready tasks queue their replies (one checkpoint), then writes batches until
        the outbox is empty. A reply costs one `send` system call per batch, not one each.
        """
        if conn.closing:
            return
        conn.outbox.append(data)
        if conn.writing:
            await conn.batch_written.wait()
            return
        await self._write_out(conn)

    def _queue(self, conn: _Connection, data: bytes) -> None:
        """A task-less request's reply: queue it, holding its slot until it is written."""
        if conn.closing:
            self._release(conn.slots)
            return
        conn.outbox.append(data)
        conn.held += 1
        if not conn.writing:
            conn.writing = True  # the writer task to come
            conn.nursery.start_soon(self._write_out, conn)

    async def _write_out(self, conn: _Connection) -> None:
        conn.writing = True
        try:
            await trio.lowlevel.checkpoint()  # replies ready in this same tick join the batch
            while conn.outbox and not conn.closing:
                batch, conn.outbox = conn.outbox, []
                held, conn.held = conn.held, 0
                written, conn.batch_written = conn.batch_written, trio.Event()
                try:
                    await conn.stream.send_all(batch[0] if len(batch) == 1 else b"".join(batch))
                finally:
                    written.set()
                    for _ in range(held):
                        self._release(conn.slots)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._stats["write_failures"] += 1
            conn.closing = True
            conn.nursery.cancel_scope.cancel()
        finally:
            conn.writing = False
            self._free_held(conn)
            conn.batch_written.set()  # nobody waits for ever on a batch no one will write
            conn.batch_written = trio.Event()

    def _free_held(self, conn: _Connection) -> None:
        """The slots of task-less replies that will never be written (connection gone)."""
        if conn.closing and conn.held:
            conn.outbox.clear()
            held, conn.held = conn.held, 0
            for _ in range(held):
                self._release(conn.slots)

    def _release(self, slots: trio.Semaphore) -> None:
        slots.release()
        self._in_flight -= 1
        if not self._in_flight:
            self._idle.set()


class _Reply:
    """How a task-less `push` (the service's `start_push`) answers: call it once."""

    __slots__ = ("_conn", "_id", "_server")

    def __init__(self, server: ControlServer, conn: _Connection, request_id: Any) -> None:
        self._server = server
        self._conn = conn
        self._id = request_id

    def __call__(self, answer: Any) -> None:
        server = self._server
        stats = server._stats
        if isinstance(answer, ControlError):
            stats["errors"] += 1
            reply = jsonrpc.encode_error(self._id, answer)
        else:
            try:
                reply = jsonrpc.encode_result(self._id, answer)
            except (ValueError, TypeError, RecursionError):
                stats["errors"] += 1
                log.exception("control method push: the result cannot be encoded")
                reply = jsonrpc.encode_error(self._id, InternalError("internal error"))
        stats["replies"] += 1
        server._queue(self._conn, reply)
