"""The only HTTP/2 I/O of pusher-trio: persistent TLS connections to APNs and FCM.

Why not httpcore: its pool costs ~10 scheduler rounds and ~27 lock operations per
request. Measured on one connection with 100 streams in flight against a local nginx:
httpcore + trio 1.2k pushes/s, aioapns (asyncio) 3.4-3.8k/s, a lean trio client on
`h2` 4.3k/s, and 7.0k/s once it decrypts every TLS record already buffered per
wake-up. trio's `SSLStream.receive_some` returns one TLS record per call (one scheduler
round each), so TLS is done here with `ssl.MemoryBIO` + `SSLObject` over a plain trio
TCP stream: one `receive_some` of raw bytes, then every complete record is decrypted
and parsed at once. The framing is `h2wire.py` (our sans-IO client side of RFC 9113),
which replaced `h2.connection.H2Connection` when h2's per-stream state machines and
per-frame objects were 30 % of the sidecar's CPU per push through the service
(`load.bench_service`); h2 remains the strict peer its tests talk to. HPACK is
`_hpack.py`: a stateless encoder whose field encodings are cached, and our own
response decoder (`_hpack.CachingDecoder`). httpcore is still used for the low-rate
OAuth token exchange (`oauth.py`).

Shape (trio-websocket / hypercorn style): per connection one reader task (the only
one that receives), one writer task (the only one that sends: requests only change
the framing state and wake it, so a caller's cancellation can never tear a TLS record
half-written; this is the "writes under a lock" rule with the lock held by one task)
and a pinger. `Pool` keeps one connection per origin and credential and opens another
only when every open one has reached the server's SETTINGS_MAX_CONCURRENT_STREAMS
(and a new one had time to warm up: APNs allows one stream per token-auth connection
until a request with a valid token succeeded).

Failure rules: GOAWAY stops new streams on that connection; streams above its
`last_stream_id` were not processed and are replayed on a new connection, the
others finish; Apple's JSON reason in the debug data is logged. RST_STREAM fails that
one request (REFUSED_STREAM is replayed: the server did not process it). A request
cancelled by its caller resets only its stream. A broken connection fails its open
requests with `ConnectionLost`; new connections follow a capped exponential backoff,
which also counts connections that closed without answering anything (a flapping
server), and requests that waited for a connect that failed fail with its error at once.
A peer silent for SILENCE_PROBE while streams wait (or that sent nothing back to a
stream its caller gave up on) is PINGed and takes no new stream until it answers.
A connection unused for `idle_timeout` (DESIGN §9, `[push] idle_timeout`) closes with
GOAWAY (NO_ERROR); the next request opens a new one.

`Pool.start` is `Pool.request` without a task, for a connection that is open and has
a free stream (else it returns None and sends nothing): the answer, or the error
`Pool.request` would raise or replay, is handed to a callback from the reader task.

Exceptions that escape `Pool.request`: `ConnectError`, `ConnectionLost`, `StreamReset`
(all `TransportError`, with the underlying error as `__cause__`) and trio.Cancelled.
"""

from __future__ import annotations

import json
import logging
import os
import random
import ssl
import tempfile
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import attrs
import trio

from . import h2wire
from ._hpack import CachingDecoder, StatelessEncoder
from .http import HttpRequest, HttpResponse
from .proxy import Proxy, Tunnel, TunnelError

log = logging.getLogger("pusher_trio.providers.transport")

RECV_SIZE = 65536  # one socket read; CPython allocates this much per recv
TLS_READ_SIZE = 16384 + 256  # one TLS record of plaintext at most
MAX_REPLAYS = 5  # a request not processed by the server is resent at most this often
OWN_STREAM_LIMIT = 1000  # never more streams per connection than this, whatever the server allows
# APNs allows one stream on a token-auth connection until a request with a valid token
# succeeds, then raises the limit: while a new connection has not answered yet (up to
# this long), wait for it rather than opening more connections.
WARMUP = 1.0
# A peer that owes us answers and has said nothing for this long is PINGed at once, and
# the connection takes no new streams until it answers: a dead peer (TCP still up,
# nothing comes back) would otherwise swallow every push until the idle PING, a minute
# later (measured by load/faults_providers.py: no recovery within 20 s before this).
SILENCE_PROBE = 2.0
PROBE_TIMEOUT = 3.0  # a probed peer that does not answer its PING this fast is dead
# Connections that connect and then close without answering (a flapping server) are
# backed off at most this long: few enough connections, and a quick recovery.
BARREN_BACKOFF_CAP = 4.0
# Failed connects are retried at most this far apart. One attempt per 5 s and pool is no
# load on a provider; with 30 s, pushes still failed "backing off" up to 30 s after the
# provider came back from an outage (load/faults_providers.py, outage-apple).
CONNECT_BACKOFF_CAP = 5.0
# A backoff that ends less than this before the caller's deadline leaves no time for a
# TCP + TLS handshake and one request: fail at once (RetryLater) instead of sleeping
# until the deadline cuts the attempt short ("the push did not complete").
CONNECT_ATTEMPT_MARGIN = 0.5


class TransportError(Exception):
    """The request could not be completed; the cause is chained."""


class ConnectError(TransportError):
    """No connection (DNS, TCP, TLS, ALPN or the HTTP/2 preface failed).

    `retry_after`: seconds until the pool's backoff allows the next attempt.
    """

    retry_after: float | None = None
    tls_refused = False  # a certificate was refused (ours or theirs): retrying will not help
    proxy_refused = False  # the outbound proxy refused us (407, 403...): retrying will not help
    no_h2 = False  # TLS worked but the server does not speak HTTP/2 (ALPN): use HTTP/1.1


class ConnectionLost(TransportError):
    """The connection broke while the request was open (the server may have processed it)."""


class StreamReset(TransportError):
    """This one stream was reset (RST_STREAM): by the server, or by us over its answer."""

    def __init__(self, error_code: int, by_peer: bool = True) -> None:
        self.error_code = error_code
        name = h2wire.error_name(error_code)
        if by_peer:
            super().__init__(f"stream reset by the server: {name}")
        else:
            super().__init__(f"stream reset: the server's answer broke HTTP/2 ({name})")


# OpenSSL reasons that mean "this certificate is not acceptable", not a network hiccup.
_CERTIFICATE_REASONS = ("CERTIFICATE", "UNKNOWN_CA", "VERIFY_FAILED", "ACCESS_DENIED")


def tls_refused(error: BaseException) -> bool:
    """True when TLS failed on a certificate (our client certificate or the server's)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        if isinstance(cause, ssl.SSLError) and any(
            word in str(cause.reason or "") for word in _CERTIFICATE_REASONS
        ):
            return True
        cause = cause.__cause__
    return False


def _socket_reason(error: OSError) -> str:
    """trio says "all attempts to connect ... failed"; the first attempt's errno says why."""
    cause: BaseException | None = error.__cause__
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    if isinstance(cause, OSError) and cause.strerror:
        return f"cannot connect: {cause.strerror.rsplit(': ', 1)[-1]}"
    return f"cannot connect: {error.strerror or error}"


class _Replay(Exception):
    """Not processed by the server (above a GOAWAY's last_stream_id, or REFUSED_STREAM)."""


Replay = _Replay  # what a started request's stream error says when it should be sent again


@attrs.frozen
class Origin:
    host: str
    port: int

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 443 else f"{host}:{self.port}"


def make_ssl_context(ca_file: str | None = None, client_pem: str | None = None) -> ssl.SSLContext:
    """TLS 1.2+ with ALPN h2; `ca_file` is trusted in addition to the system store.

    `client_pem` is an APNs certificate + unencrypted key (certificate auth); the ssl
    module only loads it from a file, so it goes through a private temporary file.
    """
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    if client_pem:
        with tempfile.TemporaryDirectory(prefix="pusher-trio-") as folder:
            path = os.path.join(folder, "client.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(client_pem)
            context.load_cert_chain(path)
    context.set_alpn_protocols(["h2"])
    return context


class _Stream:
    """One request's answer as it arrives, and who waits for it.

    `finish()` / `wait()` are a one-shot event without `trio.Event`'s parking lot
    (an object and a dict per request): the waiters are the requesting task and, at
    most, `aclose`. A request started without a task (`Pool.start`) has a `callback`
    instead, run by `finish()` in the task that finished the stream.
    """

    __slots__ = (
        "_waiters",
        "body",
        "callback",
        "error",
        "finished",
        "headers",
        "sent_at",
        "status",
    )

    def __init__(self, sent_at: float) -> None:
        self.sent_at = sent_at
        self.status = 0
        self.headers: tuple[tuple[str, str], ...] = ()
        self.body = bytearray()
        self.error: BaseException | None = None
        self.finished = False
        self.callback: Callable[[_Stream], None] | None = None
        self._waiters: list[trio.lowlevel.Task] = []

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        waiters, self._waiters = self._waiters, []
        for task in waiters:
            trio.lowlevel.reschedule(task)
        callback, self.callback = self.callback, None
        if callback is not None:
            callback(self)

    def response(self) -> HttpResponse:
        return HttpResponse(self.status, self.headers, bytes(self.body))

    async def wait(self) -> None:
        if self.finished:
            await trio.lowlevel.checkpoint()
            return
        task = trio.lowlevel.current_task()
        self._waiters.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            self._waiters.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


class Started:
    """A request that `Pool.start` sent without a task: `cancel()` gives it up.

    Its callback runs once, with the finished `_Stream` (`status`, `headers`, `body`,
    or `error`: `ConnectionLost`, `StreamReset`, or `Replay`, meaning the server did
    not process it and `Pool.request` should send it again), unless cancelled first.
    """

    __slots__ = ("_connection", "_stream", "_stream_id")

    def __init__(self, connection: Connection, stream_id: int, stream: _Stream) -> None:
        self._connection = connection
        self._stream_id = stream_id
        self._stream = stream

    def cancel(self) -> None:
        """Reset the stream (the connection stays) and drop the callback."""
        stream = self._stream
        if stream.finished:
            return
        stream.callback = None
        connection = self._connection
        connection._abandon(self._stream_id, stream)
        stream.finish()  # once: `aclose` waits for no stream given up
        connection._release()


def goaway_reason(debug_data: bytes | None) -> str:
    """Apple puts `{"reason": ...}` in the GOAWAY debug data; others put text or nothing."""
    if not debug_data:
        return ""
    try:
        data = json.loads(debug_data)
    except ValueError:
        return debug_data[:200].decode(errors="replace")
    if isinstance(data, dict) and "reason" in data:
        return str(data["reason"])
    return debug_data[:200].decode(errors="replace")


class Connection:
    """One HTTP/2 connection over TLS (MemoryBIO) over a trio TCP stream."""

    def __init__(
        self,
        origin: Origin,
        ssl_context: ssl.SSLContext,
        *,
        connect_timeout: float = 10.0,
        ping_interval: float = 60.0,
        ping_timeout: float = 10.0,
        idle_timeout: float = 0.0,
        proxy: Proxy | None = None,
        on_change: Any = None,
    ) -> None:
        self.origin = origin
        self._proxy = proxy
        self._ssl_context = ssl_context
        self._connect_timeout = connect_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._idle_timeout = idle_timeout
        self._on_change = on_change
        self._last_used = 0.0  # a request started or ended (idle closing counts from here)
        self._streams: dict[int, _Stream] = {}
        self._h2 = h2wire.ClientConnection(StatelessEncoder(), CachingDecoder())
        self._authority = origin.authority.encode()
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = ssl_context.wrap_bio(
            self._incoming, self._outgoing, server_side=False, server_hostname=origin.host
        )
        self._sock: trio.SocketStream | None = None
        self._write_wanted = trio.Event()
        self._write_pending = False
        self._window_changed = trio.Event()
        self._closed_sent = trio.Event()
        self._ping_acked = trio.Event()
        self._probe_wanted = trio.Event()
        self._scope: trio.CancelScope | None = None
        self._last_received = 0.0
        self._owed_since: float | None = None  # open streams, peer silent since then
        self._settings_seen = False
        self.active = 0  # requests holding a slot (the pool's bookkeeping)
        self.goaway = False
        self.closing = False
        self.dead = False
        self.suspect = False  # a liveness PING is unanswered: no new streams meanwhile
        self.error: BaseException | None = None
        self.requests = 0
        self.responses = 0
        self.pings = 0
        self.connected_at = 0.0
        self.idle_closed = False

    # --- state the pool reads -----------------------------------------------------

    @property
    def usable(self) -> bool:
        return not (self.goaway or self.closing or self.dead or self.suspect)

    @property
    def capacity(self) -> int:
        return min(self._h2.max_concurrent_streams, OWN_STREAM_LIMIT)

    # --- lifecycle -----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, report started, then serve the connection until it ends (never raises)."""
        try:
            with trio.fail_after(self._connect_timeout):
                await self._connect()
        except BaseException:
            self.dead = True
            if self._sock is not None:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(self._sock)
            raise
        self.connected_at = self._last_used = trio.current_time()
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._reader)
                nursery.start_soon(self._writer)
                if self._ping_interval > 0:
                    nursery.start_soon(self._pinger)
                if self._idle_timeout > 0:
                    nursery.start_soon(self._idle_closer)
        except Exception as error:  # everything a dead peer can raise: logged, never fatal
            cause: BaseException = error
            while isinstance(cause, BaseExceptionGroup) and len(cause.exceptions) == 1:
                cause = cause.exceptions[0]
            self.error = cause
            log.info("connection to %s ended: %s", self.origin.authority, cause)
        finally:
            self._finish()
            if self._sock is not None:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(self._sock)

    async def aclose(self) -> None:
        """Send GOAWAY once the open streams are done (the caller bounds the wait)."""
        if self.dead:
            return
        self.closing = True
        for stream in list(self._streams.values()):
            await stream.wait()
        if not self.dead:
            self._h2.close()
            self._kick()
            with trio.move_on_after(1.0):
                await self._closed_sent.wait()
        if self._scope is not None:
            self._scope.cancel()

    async def _wait_change(self) -> None:
        event = self._window_changed
        await event.wait()

    async def _connect(self) -> None:
        try:
            if self._proxy is None:
                self._sock = await trio.open_tcp_stream(self.origin.host, self.origin.port)
            else:
                await self._open_tunnel(self._proxy)
            await self._handshake()
            alpn = self._tls.selected_alpn_protocol()
            if alpn != "h2":
                failure = ConnectError(
                    f"{self.origin.authority} did not negotiate h2 (ALPN {alpn!r})"
                )
                failure.no_h2 = True
                raise failure
            self._h2.initiate()
            await self._send_pending()
            # Wait for the server's SETTINGS: its stream limit decides how many we may open.
            # (With TLS 1.3 a refused client certificate shows up here, as an alert.)
            while not self._settings_seen:
                if not await self._receive():
                    raise ConnectError(f"{self.origin.authority} closed before its SETTINGS")
                await self._send_pending()
        except ConnectError:
            raise
        except (OSError, ssl.SSLError, trio.BrokenResourceError, TransportError) as error:
            failure = ConnectError(f"{self.origin.authority}: {error}")
            failure.tls_refused = tls_refused(error)
            raise failure from error

    async def _open_tunnel(self, proxy: Proxy) -> None:
        """DESIGN §9 `[push] proxy`: TCP to the proxy, CONNECT, then TLS inside the tunnel."""
        tunnel = Tunnel(proxy, self.origin.host, self.origin.port)
        try:
            self._sock = await trio.open_tcp_stream(proxy.host, proxy.port)
        except OSError as error:
            raise ConnectError(f"proxy {proxy.address}: {_socket_reason(error)}") from error
        try:
            await self._sock.send_all(tunnel.request())
            while True:
                reply = tunnel.receive_data(await self._sock.receive_some(RECV_SIZE))
                if reply is not None:
                    break
        except TunnelError as error:
            raise ConnectError(str(error)) from error
        except (OSError, trio.BrokenResourceError) as error:
            raise ConnectError(f"proxy {proxy.address}: {error}") from error
        if not reply.established:
            failure = ConnectError(reply.describe(proxy, tunnel.target))
            failure.proxy_refused = reply.refused
            raise failure
        if tunnel.trailing:
            self._incoming.write(tunnel.trailing)

    async def _handshake(self) -> None:
        assert self._sock is not None
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            await self._send_pending()
            data = await self._sock.receive_some(RECV_SIZE)
            if not data:
                raise ConnectError(f"{self.origin.authority} closed during the TLS handshake")
            self._incoming.write(data)
        await self._send_pending()

    def _finish(self) -> None:
        self.dead = True
        error = self.error
        for stream in self._streams.values():
            if not stream.finished:
                lost = ConnectionLost(f"connection to {self.origin.authority} lost: {error}")
                lost.__cause__ = error
                stream.error = lost
                stream.finish()
        self._streams.clear()
        self._changed()

    def _changed(self) -> None:
        self._window_changed.set()
        self._window_changed = trio.Event()
        if self._on_change is not None:
            self._on_change()

    # --- requests ------------------------------------------------------------------

    async def request(self, request: HttpRequest) -> HttpResponse:
        """Send one request on this connection (the caller holds a slot: `active`)."""
        try:
            stream_id, stream = self._open(request)
            try:
                if request.body:
                    await self._send_body(stream_id, request.body)
                else:
                    self._kick()
                await stream.wait()
            except BaseException:
                self._abandon(stream_id, stream)
                raise
            if stream.error is not None:
                raise stream.error
            return stream.response()
        finally:
            self._release()

    def start(self, request: HttpRequest, callback: Callable[[_Stream], None]) -> Started | None:
        """`request` without a task: send it now, run `callback` when its stream ends.

        None (nothing sent) when it cannot go out whole at once here: no stream id
        left, or a body bigger than the send window. The caller then uses `request`.
        """
        h2 = self._h2
        body = request.body
        if body and len(body) > min(h2.send_window, h2.initial_window, h2.max_frame_size):
            return None
        self.active += 1
        try:
            stream_id, stream = self._open(request)
        except _Replay:
            self._release()
            return None
        if body:
            h2.send_data(stream_id, body, end_stream=True)
        self._kick()

        def finished(stream: _Stream) -> None:
            self._release()
            callback(stream)

        stream.callback = finished
        return Started(self, stream_id, stream)

    def _open(self, request: HttpRequest) -> tuple[int, _Stream]:
        if not self.usable:
            raise _Replay
        headers = [
            (b":method", request.method.encode()),
            (b":scheme", b"https"),
            (b":authority", self._authority),
            (b":path", request.path.encode()),
        ]
        headers += [(name.encode(), value.encode()) for name, value in request.headers]
        if request.body:
            headers.append((b"content-length", str(len(request.body)).encode()))
        try:
            stream_id = self._h2.send_headers(headers, end_stream=not request.body)
        except h2wire.NoStreamIds:
            # 2^31 streams used up (days at full rate): retire it, use a new one.
            self.goaway = True
            self._changed()
            raise _Replay from None
        except h2wire.TooManyStreams:
            raise _Replay from None
        stream = _Stream(trio.current_time())
        if self._owed_since is None:
            self._owed_since = stream.sent_at
        self._streams[stream_id] = stream  # after send_headers: h2 counts it from here
        self.requests += 1
        return stream_id, stream

    def _release(self) -> None:
        """A request gives its slot back."""
        self.active -= 1
        self._last_used = trio.current_time()
        if self._on_change is not None:
            self._on_change()

    async def _send_body(self, stream_id: int, body: bytes) -> None:
        sent = 0
        while sent < len(body):
            if self.dead:
                raise ConnectionLost(f"connection to {self.origin.authority} lost")
            try:
                size = min(self._h2.window(stream_id), len(body) - sent)
                if size > 0:
                    end = sent + size
                    self._h2.send_data(stream_id, body[sent:end], end_stream=end == len(body))
            except h2wire.StreamClosed:
                # The server reset or answered the stream meanwhile: its answer (if any) wins.
                return
            if size <= 0:
                self._kick()
                await self._wait_change()
                continue
            sent = end
        self._kick()

    def _abandon(self, stream_id: int, stream: _Stream) -> None:
        """The caller gave up (cancelled): reset only this stream; the connection stays."""
        self._streams.pop(stream_id, None)
        if stream.finished or self.dead:
            return
        if self._last_received < stream.sent_at and self._ping_interval > 0:
            # Nothing at all came back since this stream went out: is the peer alive?
            # No new stream here until it answers (the pinger PINGs it now).
            self.suspect = True
            self._probe_wanted.set()
            self._changed()
        try:
            self._h2.reset_stream(stream_id, h2wire.CANCEL)
        except h2wire.StreamClosed:
            return
        self._kick()

    # --- the three tasks ------------------------------------------------------------

    def _kick(self) -> None:
        if not self._write_pending:
            self._write_pending = True
            self._write_wanted.set()

    async def _send_pending(self) -> None:
        data = self._h2.data_to_send()
        if data:
            self._tls.write(data)
        out = self._outgoing.read()
        if out:
            assert self._sock is not None
            await self._sock.send_all(out)

    async def _writer(self) -> None:
        while True:
            await self._write_wanted.wait()
            # One more scheduler round: the requests that the tasks woken with us start
            # join this write (one TLS record and one send for all of them, not one each).
            await trio.lowlevel.checkpoint()
            self._write_wanted = trio.Event()
            self._write_pending = False
            try:
                await self._send_pending()
            except (OSError, ssl.SSLError, trio.BrokenResourceError) as error:
                raise ConnectionLost(f"sending to {self.origin.authority}: {error}") from error
            if self.closing and not self._write_pending:
                self._closed_sent.set()

    async def _reader(self) -> None:
        while True:
            try:
                alive = await self._receive()
            except (OSError, ssl.SSLError, trio.BrokenResourceError) as error:
                raise ConnectionLost(f"receiving from {self.origin.authority}: {error}") from error
            if not alive:
                raise ConnectionLost(f"{self.origin.authority} closed the connection")
            if self._h2.has_data_to_send or self._outgoing.pending:
                self._kick()
            if self.goaway and not self._streams:
                # Every stream the server kept has finished: nothing more will come.
                raise ConnectionLost(f"{self.origin.authority} sent GOAWAY")

    async def _pinger(self) -> None:
        """Apple asks providers to keep connections open and PING idle ones.

        Also a liveness probe: when streams wait and the peer has been silent for
        SILENCE_PROBE (or a caller gave up on a stream that got nothing back), PING now
        and open no new stream here until the answer; no answer: the connection is lost.
        """
        while True:
            now = trio.current_time()
            due = self._last_received + self._ping_interval
            owed = self._owed_since if self._streams else None
            probe = self._probe_wanted.is_set() or (
                owed is not None and now - owed >= SILENCE_PROBE
            )
            if now < due and not probe:
                # Streams started since the last look are checked at the next one.
                until = SILENCE_PROBE if owed is None else owed + SILENCE_PROBE - now
                with trio.move_on_after(min(due - now, until)):
                    await self._probe_wanted.wait()
                continue
            self._probe_wanted = trio.Event()
            if probe and not self.suspect:
                self.suspect = True
                self._changed()  # the pool may open another connection meanwhile
            self.pings += 1
            self._ping_acked = trio.Event()
            self._h2.ping(self.pings.to_bytes(8, "big"))
            self._kick()
            # Streams wait on a probed peer: give it less time than an idle one.
            timeout = min(self._ping_timeout, PROBE_TIMEOUT) if probe else self._ping_timeout
            with trio.move_on_after(timeout):
                await self._ping_acked.wait()
            if not self._ping_acked.is_set():
                raise ConnectionLost(f"{self.origin.authority} did not answer PING")
            if self.suspect:
                self.suspect = False
                self._changed()

    async def _idle_closer(self) -> None:
        """DESIGN §9: a connection unused for `idle_timeout` closes with GOAWAY (NO_ERROR).

        The pool opens a new one on the next push. Apple keeps idle connections alive
        with PING meanwhile (`_pinger`); this bounds how long an unused pool holds a
        connection (and a provider's server slot) at all. The check and `closing` are
        set without a checkpoint in between, so no request can take a slot meanwhile.
        """
        while True:
            await trio.sleep_until(self._last_used + self._idle_timeout)
            if self.active or self._streams or not self.usable:
                # Busy (`_last_used` moves when it ends) or probed: look again soon.
                await trio.sleep(min(self._idle_timeout, 1.0))
                continue
            if trio.current_time() < self._last_used + self._idle_timeout:
                continue
            self.idle_closed = True
            log.info(
                "closing %s: idle for %.0fs (reopened on the next push)",
                self.origin.authority,
                self._idle_timeout,
            )
            await self.aclose()
            return

    async def _receive(self) -> bool:
        """Read once from the socket, decrypt every complete TLS record, parse its frames."""
        assert self._sock is not None
        data = await self._sock.receive_some(RECV_SIZE)
        if not data:
            return False
        self._last_received = trio.current_time()
        self._incoming.write(data)
        chunks = []
        alive = True
        while True:
            try:
                chunk = self._tls.read(TLS_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify: what came before still counts
                alive = False
                break
            if not chunk:
                alive = False
                break
            chunks.append(chunk)
        if chunks:
            try:
                events = self._h2.receive(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            except h2wire.ProtocolError as error:
                # Tell the server why (the GOAWAY is queued; the writer sends it), then
                # drop the connection.
                with trio.move_on_after(1.0):
                    if self._scope is None:  # still connecting: no writer task yet
                        await self._send_pending()
                    else:
                        self.closing = True
                        self._changed()
                        self._kick()
                        await self._closed_sent.wait()
                raise ConnectionLost(
                    f"HTTP/2 error from {self.origin.authority}: {error}"
                ) from error
            self._handle(events)
        # The peer is alive now; what is still open is owed from now on.
        self._owed_since = self._last_received if self._streams else None
        return alive

    # Answer fields as text, by their bytes: answers repeat most of them (`server`,
    # `date`...). Shared by the connections (the mapping is pure), bounded.
    _texts: ClassVar[dict[tuple[bytes, bytes], tuple[str, str]]] = {}

    def _handle(self, events: Iterable[h2wire.Event]) -> None:
        streams = self._streams
        texts = self._texts
        for event in events:
            if isinstance(event, h2wire.ResponseReceived):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    status = 0
                    decoded = []
                    for field in event.headers:
                        text = texts.get(field)
                        if text is None:
                            name, value = field
                            if name == b":status":
                                status = int(value)
                                continue
                            text = (name.decode("latin-1"), value.decode("latin-1"))
                            if len(name) + len(value) <= 256:  # bounded in bytes too
                                if len(texts) >= 1024:
                                    texts.clear()
                                texts[field] = text
                        decoded.append(text)
                    stream.status = status
                    stream.headers = tuple(decoded)
            elif isinstance(event, h2wire.StreamEnded):
                self.responses += 1
                stream = streams.pop(event.stream_id, None)
                if stream is not None:
                    stream.finish()
            elif isinstance(event, h2wire.DataReceived):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.body += event.data
            elif isinstance(event, h2wire.StreamReset):
                stream = streams.pop(event.stream_id, None)
                if stream is not None:
                    if event.by_peer and event.error_code == h2wire.REFUSED_STREAM:
                        stream.error = _Replay()
                    else:
                        stream.error = StreamReset(event.error_code, event.by_peer)
                    stream.finish()
            elif isinstance(event, h2wire.GoAway):
                self._on_goaway(event)
            elif isinstance(event, h2wire.SettingsChanged):
                self._settings_seen = True
                self._changed()
            elif isinstance(event, h2wire.WindowUpdated):
                self._changed()
            elif isinstance(event, h2wire.PingAcknowledged):
                self._ping_acked.set()

    def _on_goaway(self, event: h2wire.GoAway) -> None:
        last = event.last_stream_id
        reason = goaway_reason(event.debug_data)
        log.warning(
            "GOAWAY from %s: code=%s last_stream_id=%s reason=%s open_streams=%d",
            self.origin.authority,
            h2wire.error_name(event.error_code),
            last,
            reason or "-",
            len(self._streams),
        )
        self.goaway = True
        for stream_id in [sid for sid in self._streams if sid > last]:
            stream = self._streams.pop(stream_id)
            stream.error = _Replay()
            stream.finish()
        # The streams at or below last_stream_id go on; none starts here any more
        # (`usable` is False from now on).
        self._changed()

    def statistics(self) -> dict[str, int]:
        return {"open_streams": len(self._streams), "requests": self.requests, "pings": self.pings}


class Pool:
    """Connections to one origin with one credential (one TLS context)."""

    def __init__(
        self,
        origin: Origin,
        ssl_context: ssl.SSLContext,
        nursery: trio.Nursery,
        *,
        max_connections: int = 4,
        connect_timeout: float = 10.0,
        ping_interval: float = 60.0,
        ping_timeout: float = 10.0,
        idle_timeout: float = 0.0,
        proxy: Proxy | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = CONNECT_BACKOFF_CAP,
    ) -> None:
        self.origin = origin
        self._ssl_context = ssl_context
        self._nursery = nursery
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._idle_timeout = idle_timeout
        self._proxy = proxy
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._connections: list[Connection] = []
        self._connecting = False
        self._failures = 0
        self._next_attempt = 0.0
        self._last_failure: ConnectError | None = None
        self._changed_event = trio.Event()
        self._waiting = 0
        self.closed = False
        self.connects = 0
        self.connect_failures = 0
        self.barren_connections = 0  # connected but closed without answering anything
        self.replays = 0
        self.goaways = 0
        self.idle_closes = 0

    @property
    def connections(self) -> list[Connection]:
        return [c for c in self._connections if not c.dead]

    async def request(self, request: HttpRequest) -> HttpResponse:
        for _ in range(MAX_REPLAYS):
            connection = await self._acquire()
            try:
                response = await connection.request(request)
            except _Replay:
                self.replays += 1
                continue
            self._failures = 0  # the server answers: connects are not backed off any more
            return response
        raise ConnectionLost(
            f"{self.origin.authority}: request not processed after {MAX_REPLAYS} tries"
        )

    def start(self, request: HttpRequest, callback: Callable[[_Stream], None]) -> Started | None:
        """`request` on an open connection with a free stream, without a task.

        None when there is none (connecting, all full, backing off): nothing was sent,
        the caller uses `request`. `callback` runs once with the finished stream.
        """
        if self.closed:
            return None
        self._prune()
        for connection in self._connections:
            if connection.usable and connection.active < connection.capacity:

                def finished(stream: _Stream) -> None:
                    if isinstance(stream.error, _Replay):
                        self.replays += 1
                    elif stream.error is None:
                        self._failures = 0
                    callback(stream)

                return connection.start(request, finished)
        return None

    def _on_change(self) -> None:
        if self._waiting:
            self._changed_event.set()
            self._changed_event = trio.Event()

    async def _wait_change(self) -> None:
        self._waiting += 1
        try:
            await self._changed_event.wait()
        finally:
            self._waiting -= 1

    async def _acquire(self) -> Connection:
        while True:
            if self.closed:
                raise ConnectError(f"{self.origin.authority}: pool closed")
            self._prune()
            for connection in self._connections:
                if connection.usable and connection.active < connection.capacity:
                    connection.active += 1
                    return connection
            now = trio.current_time()
            warming = [
                c.connected_at + WARMUP - now
                for c in self._connections
                if c.usable and c.responses == 0 and c.connected_at + WARMUP > now
            ]
            if self._connecting:
                failures = self.connect_failures
                await self._wait_change()
                if self.connect_failures > failures and not any(
                    c.usable for c in self._connections
                ):
                    # The connect we waited for failed: so does this request, at once
                    # (each waiter trying again in turn would take the whole backoff).
                    raise self._failed("connect failed")
            elif warming:
                with trio.move_on_after(max(warming)):
                    await self._wait_change()
            elif sum(1 for c in self._connections if c.usable) < self._max_connections:
                await self._connect()
            else:
                await self._wait_change()

    def _prune(self) -> None:
        if any(c.dead for c in self._connections):
            dead = [c for c in self._connections if c.dead]
            self.goaways += sum(1 for c in dead if c.goaway)
            self.idle_closes += sum(1 for c in dead if c.idle_closed)
            self._connections = [c for c in self._connections if not c.dead]
            barren = sum(1 for c in dead if c.requests and not c.responses)
            if barren:
                # Connected, carried requests, answered none (closed, GOAWAY or silent at
                # once): back off as for a failed connect, or a flapping server gets a new
                # connection per request (135 for 20 pushes in 4 s, measured).
                self._failures += barren
                self.barren_connections += barren
                self._last_failure = ConnectError(
                    f"{self.origin.authority}: the connection closed without answering"
                )
                backoff = self._backoff(trio.current_time(), BARREN_BACKOFF_CAP)
                log.warning(
                    "%s closed %d connection(s) without answering; next connect in %.1fs",
                    self.origin.authority,
                    barren,
                    backoff,
                )

    async def _connect(self) -> None:
        self._connecting = True
        try:
            now = trio.current_time()
            delay = self._next_attempt - now
            if delay > 0:
                if now + delay + CONNECT_ATTEMPT_MARGIN >= trio.current_effective_deadline():
                    raise self._failed(f"backing off after {self._failures} failed connects")
                await trio.sleep(delay)
            connection = Connection(
                self.origin,
                self._ssl_context,
                connect_timeout=self._connect_timeout,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_timeout,
                idle_timeout=self._idle_timeout,
                proxy=self._proxy,
                on_change=self._on_change,
            )
            try:
                await self._nursery.start(connection.run)
            except (TransportError, trio.TooSlowError) as error:
                self._failures += 1
                self.connect_failures += 1
                backoff = self._backoff(trio.current_time())
                log.warning(
                    "cannot connect to %s (%s); next attempt in %.1fs",
                    self.origin.authority,
                    error,
                    backoff,
                )
                failure = (
                    error
                    if isinstance(error, ConnectError)
                    else ConnectError(f"{self.origin.authority}: {error or 'connect timed out'}")
                )
                failure.retry_after = self._next_attempt - trio.current_time()
                self._last_failure = failure
                if failure is error:
                    raise
                raise failure from error
            self._last_failure = None  # _failures is reset by the first answer
            self.connects += 1
            self._connections.append(connection)
        finally:
            self._connecting = False
            self._on_change()

    def _backoff(self, now: float, cap: float | None = None) -> float:
        """Schedule the next connect after `_failures` failures; returns the nominal delay."""
        limit = self._backoff_cap if cap is None else min(cap, self._backoff_cap)
        backoff: float = min(limit, self._backoff_base * 2.0 ** (self._failures - 1))
        self._next_attempt = max(self._next_attempt, now + backoff * random.uniform(0.5, 1.0))
        return backoff

    def _failed(self, what: str) -> ConnectError:
        """A ConnectError for a request that will not try to connect itself, saying why
        the last attempt failed (a refused certificate stays a refused certificate)."""
        last = self._last_failure
        error = ConnectError(f"{self.origin.authority}: {what}" + (f" ({last})" if last else ""))
        error.retry_after = max(0.0, self._next_attempt - trio.current_time())
        error.tls_refused = last.tls_refused if last is not None else False
        error.proxy_refused = last.proxy_refused if last is not None else False
        error.no_h2 = last.no_h2 if last is not None else False
        return error

    async def aclose(self) -> None:
        """GOAWAY on every connection once its streams are done (caller bounds the time)."""
        self.closed = True
        async with trio.open_nursery() as nursery:
            for connection in self._connections:
                nursery.start_soon(connection.aclose)

    def statistics(self) -> dict[str, Any]:
        live = self.connections
        return {
            "origin": self.origin.authority,
            "connections": len(live),
            "open_streams": sum(len(c._streams) for c in live),
            "connects": self.connects,
            "connect_failures": self.connect_failures,
            "barren_connections": self.barren_connections,
            "replays": self.replays,
            "goaways": self.goaways + sum(1 for c in live if c.goaway),
            "idle_closes": self.idle_closes
            + sum(1 for c in self._connections if c.dead and c.idle_closed),
            "streams_per_connection": [len(c._streams) for c in live],
        }
