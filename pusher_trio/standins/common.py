"""What the APNs and FCM stand-ins share: an HTTP/2 + TLS server on trio, scripting, records.

A stand-in is a `StandIn` subclass with one method, `answer(request)`, that checks a
request the way Apple or Google would and returns a `Reply`. Around it this module:

* serves TLS (ALPN h2, optional client certificates) with `h2` on 127.0.0.1, port 0 by
  default: `port = await nursery.start(server.serve)`;
* records every request in `server.received` (a `Received` each: token, path, headers,
  body, outcome such as "200" / "410 Unregistered" / "reset" / "stall", connection,
  stream, `delivered`); `server.delivered` lists the delivered pushes;
* calls `on_delivered(token, headers, payload)` for each delivered push (payload: the
  APNs JSON object, or FCM's `data` dict). The hook may be a plain function or an
  `async def`; both run as a task in the server's nursery after the 200 went out, so a
  slow hook never delays the answer;
* trusts: `server.ca_file` (a PEM file, made on first use) or `server.ca_pem` bytes;
  pass one `authority=pusher_trio.standins.certs.Authority()` to several stand-ins for one CA file;
* `latency=` delays every answer (keeps streams in flight), `max_concurrent_streams=`
  sets SETTINGS_MAX_CONCURRENT_STREAMS, `clock=` is the server's time (JWT ages),
  `await server.wait_open_connections(n)` waits for the client side to connect/close;
* applies scripted faults, per device token or to the next N requests:

      server.script(Answer(410, "Unregistered"), token=tok)          # once for tok
      server.script(Answer(429, "TooManyRequests", retry_after=1), times=3)
      server.script(Reset(), token=tok, times=None)                   # always
      server.script(Stall(), token=tok)                               # never answers
      server.script(Drop())                                           # closes the TCP connection
      server.script(Freeze())                                         # connection goes silent
      server.script(Garble(raw_frame_bytes))                          # breaks HTTP/2 on purpose
      server.script(GoAway("Shutdown"))                               # GOAWAY before this stream
      server.goaway_after(20, reason="Shutdown")                      # GOAWAY at the 20th stream

  `Answer` bodies are formatted by the stand-in (Apple's `{"reason"}` or Google's error
  JSON). A token rule wins over a count rule; rules are used in the order they were added.
  Scripts apply to pushes only (not to FCM's OAuth token endpoint).
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import shutil
import ssl
import tempfile
import time
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import trio

from pusher_trio.standins.certs import Authority

log = logging.getLogger("load.standin")

DeliveredHook = Callable[[str, dict[str, str], Any], Awaitable[None] | None]


# --- scripted actions ----------------------------------------------------------------


@attrs.frozen
class Answer:
    """Answer with this status and reason (Apple's reason or Google's errorCode)."""

    status: int
    reason: str = ""
    retry_after: float | None = None


@attrs.frozen
class Reset:
    """RST_STREAM this one stream (default INTERNAL_ERROR)."""

    error_code: int = int(h2.errors.ErrorCodes.INTERNAL_ERROR)


@attrs.frozen
class Stall:
    """Never answer (the stream stays open until the client gives up)."""


@attrs.frozen
class Drop:
    """Close the TCP connection at once, without GOAWAY (every open stream is lost)."""


@attrs.frozen
class Freeze:
    """The connection goes silent: nothing read or written, PINGs unanswered (a dead peer)."""


@attrs.frozen
class GoAway:
    """GOAWAY with last_stream_id just below this stream: it and later ones are not processed."""

    reason: str = "Shutdown"


@attrs.frozen
class Garble:
    """Write these raw bytes on the connection instead of an answer (a server breaking
    HTTP/2, e.g. a PUSH_PROMISE the client refused); the connection is then dead to us."""

    data: bytes


@attrs.frozen
class Delay:
    """Wait, then process the request normally."""

    seconds: float


Action = Answer | Reset | Stall | Drop | Freeze | GoAway | Delay | Garble


@attrs.define
class _Rule:
    action: Action
    token: str | None
    remaining: int | None  # None: forever


# --- records ---------------------------------------------------------------------------


@attrs.define
class Request:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    stream_id: int
    connection: ConnectionInfo

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@attrs.define
class ConnectionInfo:
    id: int
    peer_cert: dict[str, Any] | None
    state: dict[str, Any] = attrs.Factory(dict)  # per-connection data of the stand-in


@attrs.frozen
class Reply:
    """What `answer` decided. `delivered` = (token, payload) when the push counts as delivered."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    delivered: tuple[str, Any] | None = None
    reason: str = ""


@attrs.frozen
class Received:
    """One request as the stand-in saw it, and what it did with it."""

    token: str
    path: str
    headers: dict[str, str]
    body: bytes
    outcome: str  # "200", "410 Unregistered", "reset", "stall", "drop", "goaway", ...
    connection: int
    stream_id: int
    at: float
    delivered: bool = False  # a push the stand-in accepted (not an OAuth token request)
    # what kind of push it is (`StandIn.kind_of`): APNs' apns-push-type ("voip", "alert",
    # ...); FCM "alert" for a message with a notification to show, "data" for data-only
    kind: str = ""

    def payload(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


# --- the server --------------------------------------------------------------------------


class StandIn:
    """Base class of the stand-ins; subclasses implement `token_of` and `answer`."""

    name = "stand-in"

    def __init__(
        self,
        *,
        authority: Authority | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        client_auth: bool = False,
        clock: Callable[[], float] = time.time,
        on_delivered: DeliveredHook | None = None,
        latency: float = 0.0,
        max_concurrent_streams: int | None = None,
    ) -> None:
        self.authority = authority or Authority()
        self.host = host
        self.port = port
        self.clock = clock
        self.on_delivered = on_delivered
        self.latency = latency  # seconds before each answer (keeps streams in flight)
        self.max_concurrent_streams = max_concurrent_streams  # SETTINGS; None: h2's default
        self._context = self.authority.server_context(client_auth=client_auth)
        self._rules: list[_Rule] = []
        self._goaway_after: tuple[int, str, bool] | None = None
        self._ids = itertools.count(1)
        self._ca_dir: str | None = None
        self._connections_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.received: list[Received] = []
        self.connections = 0
        self.open_connections = 0
        self.goaways = 0
        self.client_resets = 0  # streams the client reset (RST_STREAM from the client)
        self.client_goaways = 0  # GOAWAY frames received from clients (a clean close)
        self.client_goaway_codes: list[int] = []  # their error codes, in order

    # --- configuration -----------------------------------------------------------------

    @property
    def ca_pem(self) -> bytes:
        return self.authority.ca_pem

    @property
    def ca_file(self) -> str:
        """A file with the CA certificate to trust (`[push] ca_file`), made on first use."""
        if self._ca_dir is None:
            self._ca_dir = tempfile.mkdtemp(prefix=f"{self.name}-ca-")
            weakref.finalize(self, shutil.rmtree, self._ca_dir, ignore_errors=True)
        path = Path(self._ca_dir, "ca.pem")
        if not path.exists():
            self.authority.write_ca(path)
        return str(path)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def script(self, action: Action, *, token: str | None = None, times: int | None = 1) -> None:
        """Apply `action` to the next `times` requests (of `token` when given; None: always)."""
        self._rules.append(_Rule(action, token, times))

    def clear_script(self) -> None:
        self._rules.clear()
        self._goaway_after = None

    def goaway_after(self, streams: int, *, reason: str = "Shutdown", once: bool = True) -> None:
        """Send GOAWAY when a connection's `streams`-th request arrives (it is still answered)."""
        self._goaway_after = (streams, reason, once)

    async def wait_open_connections(self, count: int) -> None:
        """Block until exactly `count` client connections are open."""
        while self.open_connections != count:
            self._connections_changed = trio.Event()
            await self._connections_changed.wait()

    @property
    def delivered(self) -> list[Received]:
        return [r for r in self.received if r.delivered]

    def delivered_of_kind(self, kind: str) -> list[Received]:
        """The accepted pushes of one kind: a wake-up ("voip"/"data") or an "alert"."""
        return [r for r in self.received if r.delivered and r.kind == kind]

    def kind_of(self, request: Request) -> str:
        """The kind of push `request` is (see `Received.kind`); "" when not a push."""
        return ""

    # --- to implement --------------------------------------------------------------------

    def token_of(self, request: Request) -> str:
        raise NotImplementedError

    def initial_max_streams(self, connection: ConnectionInfo) -> int | None:
        """SETTINGS_MAX_CONCURRENT_STREAMS of a new connection (None: h2's default)."""
        return self.max_concurrent_streams

    def settings_after(self, request: Request, reply: Reply) -> dict[int, int] | None:
        """New SETTINGS to send after answering `request` (None: no change)."""
        return None

    def is_push(self, request: Request) -> bool:
        """Scripts apply to pushes only (not, e.g., to FCM's OAuth token endpoint)."""
        return True

    def answer(self, request: Request) -> Reply:
        raise NotImplementedError

    def scripted_answer(self, request: Request, answer: Answer) -> Reply:
        raise NotImplementedError

    # --- serving --------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; reports the bound port."""
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self.port)
            await trio.serve_listeners(self._serve_connection, listeners, handler_nursery=nursery)

    async def _serve_connection(self, tcp: trio.SocketStream) -> None:
        stream = trio.SSLStream(tcp, self._context, server_side=True)
        try:
            with trio.fail_after(10):
                await stream.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError, OSError) as error:
            log.info("%s: TLS handshake failed: %s", self.name, error)
            # Like a real server, tell the client why (e.g. "unknown ca"): trio drops the
            # alert OpenSSL queued when the handshake fails, so send it here.
            alert = stream._outgoing.read()
            if alert:
                with trio.move_on_after(1):
                    try:
                        await tcp.send_all(alert)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
            await trio.aclose_forcefully(stream)
            return
        if stream.selected_alpn_protocol() != "h2":
            await trio.aclose_forcefully(stream)
            return
        self.connections += 1
        self.open_connections += 1
        self._connections_changed.set()
        connection = _ServerConnection(self, stream, next(self._ids))
        try:
            await connection.run()
        except Exception:  # one broken connection never stops the stand-in
            log.exception("%s: connection %d failed", self.name, connection.info.id)
        finally:
            self.open_connections -= 1
            self._connections_changed.set()
            await trio.aclose_forcefully(stream)

    def _take_rule(self, token: str) -> Action | None:
        for rules_for_token in (True, False):
            for rule in self._rules:
                if (rule.token is not None) != rules_for_token:
                    continue
                if rule.token is not None and rule.token != token:
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                return rule.action
        return None

    def _record(self, request: Request, token: str, outcome: str, delivered: bool = False) -> None:
        self.received.append(
            Received(
                token=token,
                path=request.path,
                headers=dict(request.headers),
                body=request.body,
                outcome=outcome,
                connection=request.connection.id,
                stream_id=request.stream_id,
                at=self.clock(),
                delivered=delivered,
                kind=self.kind_of(request),
            )
        )

    async def _notify(self, token: str, headers: dict[str, str], payload: Any) -> None:
        if self.on_delivered is None:
            return
        result = self.on_delivered(token, headers, payload)
        if inspect.isawaitable(result):
            await result


class _ServerConnection:
    def __init__(self, server: StandIn, stream: trio.SSLStream[trio.SocketStream], ident: int):
        self.server = server
        self.stream = stream
        peer = stream.getpeercert()
        self.info = ConnectionInfo(ident, peer or None)
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.lock = trio.Lock()
        self.pending: dict[int, tuple[list[tuple[str, str]], bytearray]] = {}
        self.streams_seen = 0
        self.last_processed: int | None = None  # set when GOAWAY went out
        self.in_flight = 0
        self.cancel_scope = trio.CancelScope()
        self.frozen = trio.Event()

    async def flush(self) -> None:
        if self.frozen.is_set():
            return
        async with self.lock:
            data = self.h2.data_to_send()
            if data:
                try:
                    await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.cancel_scope.cancel()

    async def run(self) -> None:
        limit = self.server.initial_max_streams(self.info)
        if limit is not None:
            self.h2.local_settings = h2.settings.Settings(
                client=False,
                initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limit},
            )
        self.h2.initiate_connection()
        await self.flush()
        with self.cancel_scope:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        data = await self.stream.receive_some(65536)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        break
                    if not data:
                        break
                    if self.frozen.is_set():
                        # Dead to the client (nothing answered, PINGs included), but a
                        # close still ends this task (it used to wait for ever, counted
                        # in open_connections).
                        continue
                    try:
                        events = self.h2.receive_data(data)
                    except h2.exceptions.ProtocolError as error:
                        log.info("%s: protocol error: %s", self.server.name, error)
                        await self.flush()
                        break
                    for event in events:
                        self._event(event, nursery)
                    await self.flush()
                nursery.cancel_scope.cancel()

    def _event(self, event: h2.events.Event, nursery: trio.Nursery) -> None:
        if isinstance(event, h2.events.RequestReceived):
            headers = [(k.decode(), v.decode()) for k, v in event.headers]
            self.pending[event.stream_id] = (headers, bytearray())
        elif isinstance(event, h2.events.DataReceived):
            entry = self.pending.get(event.stream_id)
            if entry is not None:
                entry[1].extend(event.data)
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            entry = self.pending.pop(event.stream_id, None)
            if entry is not None:
                self._dispatch(event.stream_id, entry[0], bytes(entry[1]), nursery)
        elif isinstance(event, h2.events.StreamReset):
            self.pending.pop(event.stream_id, None)
            if event.remote_reset:
                self.server.client_resets += 1
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.server.client_goaways += 1
            self.server.client_goaway_codes.append(int(event.error_code or 0))

    def _dispatch(
        self,
        stream_id: int,
        headers: list[tuple[str, str]],
        body: bytes,
        nursery: trio.Nursery,
    ) -> None:
        """Decide synchronously (scripts are consumed in arrival order), answer in a task."""
        server = self.server
        pseudo = dict(h for h in headers if h[0].startswith(":"))
        request = Request(
            method=pseudo.get(":method", ""),
            path=pseudo.get(":path", ""),
            headers=[h for h in headers if not h[0].startswith(":")],
            body=body,
            stream_id=stream_id,
            connection=self.info,
        )
        token = server.token_of(request)
        if self.last_processed is not None and stream_id > self.last_processed:
            return  # after our GOAWAY: not processed, the client replays it elsewhere
        self.streams_seen += 1
        action = server._take_rule(token) if server.is_push(request) else None
        if isinstance(action, GoAway):
            server._record(request, token, "goaway")
            self._goaway(stream_id - 2 if stream_id > 1 else 0, action.reason)
            return
        rule = server._goaway_after
        if rule is not None and self.streams_seen == rule[0] and self.last_processed is None:
            if rule[2]:
                server._goaway_after = None
            self._goaway(stream_id, rule[1])
        nursery.start_soon(self._respond, request, token, action)

    def _goaway(self, last_stream_id: int, reason: str) -> None:
        self.server.goaways += 1
        self.last_processed = last_stream_id
        self.h2.close_connection(
            error_code=h2.errors.ErrorCodes.NO_ERROR,
            additional_data=json.dumps({"reason": reason}).encode(),
            last_stream_id=last_stream_id,
        )
        # h2 closes its state machine on GOAWAY; RFC 9113 §6.8 lets the streams at or
        # below last_stream_id finish, so reopen it to send their answers.
        self.h2.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
        if self.in_flight == 0:
            self.cancel_scope.deadline = trio.current_time() + 0.2

    async def _respond(self, request: Request, token: str, action: Action | None) -> None:
        self.in_flight += 1
        try:
            await self._respond_inner(request, token, action)
        except Exception:  # a stand-in bug fails this request only, loudly
            log.exception("%s: answering %s failed", self.server.name, request.path)
            try:
                self.h2.reset_stream(request.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
            except h2.exceptions.ProtocolError:
                pass
            await self.flush()
        finally:
            self.in_flight -= 1
            if self.last_processed is not None and self.in_flight == 0:
                await self.flush()
                self.cancel_scope.deadline = trio.current_time() + 0.2

    async def _respond_inner(self, request: Request, token: str, action: Action | None) -> None:
        server = self.server
        stream_id = request.stream_id
        if server.latency:
            await trio.sleep(server.latency)
        if isinstance(action, Delay):
            await trio.sleep(action.seconds)
            action = None
        if isinstance(action, Stall):
            server._record(request, token, "stall")
            await trio.sleep_forever()
        if isinstance(action, Freeze):
            server._record(request, token, "freeze")
            self.frozen.set()
            await trio.sleep_forever()
        if isinstance(action, Garble):
            server._record(request, token, "garble")
            async with self.lock:
                await self.stream.send_all(action.data)
            return
        if isinstance(action, Drop):
            server._record(request, token, "drop")
            await trio.aclose_forcefully(self.stream)
            self.cancel_scope.cancel()
            return
        if isinstance(action, Reset):
            server._record(request, token, "reset")
            try:
                self.h2.reset_stream(stream_id, action.error_code)
            except h2.exceptions.StreamClosedError:
                return
            await self.flush()
            return
        if isinstance(action, Answer):
            reply = server.scripted_answer(request, action)
        else:
            reply = server.answer(request)
        outcome = str(reply.status) if reply.status == 200 else f"{reply.status} {reply.reason}"
        server._record(request, token, outcome.strip(), reply.delivered is not None)
        headers = [(":status", str(reply.status)), *reply.headers]
        if reply.body:
            headers.append(("content-length", str(len(reply.body))))
        try:
            self.h2.send_headers(stream_id, headers, end_stream=not reply.body)
            if reply.body:
                self.h2.send_data(stream_id, reply.body, end_stream=True)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return  # the client reset it meanwhile
        settings = server.settings_after(request, reply)
        if settings:
            self.h2.update_settings(settings)
        await self.flush()
        if reply.delivered is not None and 200 <= reply.status < 300:
            token_value, payload = reply.delivered
            if server._nursery is not None and server.on_delivered is not None:
                server._nursery.start_soon(
                    server._notify, token_value, dict(request.headers), payload
                )
