"""The trio shell around `protocol.RespConnection`: one stream to Redis, kept up.

`RedisClient.run()` is the supervisor (start it with `nursery.start`): it connects
(TCP, TLS for `rediss://`, or a UNIX socket), logs in (AUTH, SELECT) and proves the
server alive with a PING, then reads replies until the connection breaks, and
reconnects with a capped, jittered backoff. It reports started after the first
attempt, whether or not Redis was there: a node whose Redis is down still serves
what it holds (DESIGN §10).

`execute()` / `pipeline()` never wait for a connection: while Redis is down they
raise `RedisUnavailable` at once, so the caller decides (the store queues the write).
Any number of callers pipeline on the one connection; the send is shielded and
bounded, so a caller's cancellation never leaves half a command on the wire, and a
reply that does not come within `command_timeout` (Redis stopped with SIGSTOP, a
dead peer behind a live TCP connection) breaks the connection and fails every
command waiting on it.

A subscriber client (`subscribe=[channels]`) re-subscribes on every connect, hands
each message to `on_message(channel, data)` and PINGs every `health_interval` so a
silent Redis is noticed. `generation` grows by one per successful connect: pub/sub
loses messages while disconnected, so whoever caches what the messages invalidate
compares generations and starts over.
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import trio

from .protocol import (
    Command,
    RedisAddress,
    RedisError,
    RedisReplyError,
    RedisUnavailable,
    RespConnection,
    backoff_delay,
    login_commands,
)

log = logging.getLogger("pusher_trio.redis")

RECV_SIZE = 65536
COMMAND_TIMEOUT = 2.0  # a healthy Redis answers in well under a millisecond on a LAN
CONNECT_TIMEOUT = 2.0
HEALTH_INTERVAL = 1.0  # subscriber PING: DESIGN §10 wants changes on every node within 1 s

State = Literal["connecting", "up", "down", "closed"]
MessageHandler = Callable[[bytes, bytes], None]


class _Connection:
    """One open stream: sends under a lock, one reader (the supervisor's task)."""

    def __init__(self, stream: trio.abc.Stream, *, subscriber: bool) -> None:
        self.stream = stream
        self.resp = RespConnection(subscriber=subscriber)
        self.events: deque[trio.Event] = deque()
        self.send_lock = trio.Lock()
        self.error: RedisUnavailable | None = None
        self.closed = trio.Event()

    def fail(self, error: RedisUnavailable) -> None:
        """Mark broken: every waiting command ends with `error`; the reader stops."""
        if self.error is None:
            self.error = error
        while self.events:
            self.events.popleft().set()
        self.closed.set()

    async def request(self, commands: Sequence[Command], limit: float) -> list[Any]:
        """Send `commands` pipelined and wait for their replies, each step within `limit`."""
        if self.error is not None:
            raise self.error
        event = trio.Event()
        async with self.send_lock:
            data, pending = self.resp.send(commands)
            self.events.append(event)
            # Shielded and bounded: half a command on the wire would desynchronise
            # every later reply, so either all of it goes or the connection is dropped.
            with trio.CancelScope(shield=True), trio.move_on_after(limit) as scope:
                try:
                    await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    self.fail(RedisUnavailable(f"connection lost: {exc or type(exc).__name__}"))
            if scope.cancelled_caught:
                self.fail(RedisUnavailable(f"Redis took no data for {limit:g} s"))
        if not pending.complete and self.error is None:
            with trio.move_on_after(limit) as scope:
                await event.wait()
            if scope.cancelled_caught and not pending.complete:
                self.fail(RedisUnavailable(f"no reply from Redis within {limit:g} s"))
        if not pending.complete:
            assert self.error is not None
            raise self.error
        return pending.replies

    async def handshake(self, commands: Sequence[Command]) -> list[Any]:
        """Send and read the replies before the reader runs (login, subscribe)."""
        request, pending = self.resp.send(commands)
        await self.stream.send_all(request)
        while not pending.complete:
            data = await self.stream.receive_some(RECV_SIZE)
            if not data:
                raise RedisUnavailable("Redis closed the connection during login")
            self.resp.receive_data(data)
        return pending.replies

    async def read(self, on_message: MessageHandler | None) -> None:
        """Receive until the connection breaks (the error is kept in `self.error`)."""
        try:
            while self.error is None:
                try:
                    data = await self.stream.receive_some(RECV_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    self.fail(RedisUnavailable(f"connection lost: {exc or type(exc).__name__}"))
                    return
                if self.error is not None:
                    return  # failed meanwhile (a command timed out): late bytes are moot
                if not data:
                    self.fail(RedisUnavailable("Redis closed the connection"))
                    return
                try:
                    done = self.resp.receive_data(data)
                except RedisUnavailable as exc:
                    self.fail(exc)
                    return
                for _ in done:
                    self.events.popleft().set()
                if on_message is not None:
                    for message in self.resp.unsolicited():
                        _deliver(message, on_message)
        finally:
            self.fail(self.error or RedisUnavailable("connection closed"))
            # bounded: a TLS close_notify to a paused Redis would wait forever
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await self.stream.aclose()


def _deliver(message: Any, on_message: MessageHandler) -> None:
    kind = message[0]
    channel, data = (message[1], message[2]) if kind == b"message" else (message[2], message[3])
    try:
        on_message(channel, data)
    except Exception:  # a handler bug loses that message, never the subscription
        log.exception("redis: message handler failed")


class RedisClient:
    """A Redis connection kept up by `run()`; see the module docstring."""

    def __init__(
        self,
        address: RedisAddress,
        password: str | None = None,
        *,
        subscribe: Iterable[bytes | str] = (),
        on_message: MessageHandler | None = None,
        command_timeout: float = COMMAND_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        health_interval: float = HEALTH_INTERVAL,
        name: str = "redis",
    ) -> None:
        self.address = address
        self._password = password
        self._channels = [c.encode() if isinstance(c, str) else c for c in subscribe]
        self._on_message = on_message
        self.command_timeout = command_timeout
        self.connect_timeout = connect_timeout
        self.health_interval = health_interval
        self.name = name
        self._conn: _Connection | None = None
        self.state: State = "connecting"
        self.generation = 0
        self._up = trio.Event()
        self._next_connect = trio.Event()  # set (and replaced) at each successful connect
        self._stats = {
            "connects": 0,
            "connect_failures": 0,
            "disconnects": 0,
            "commands": 0,
            "unavailable": 0,
            "reply_errors": 0,
        }
        self.last_error: str | None = None
        self._state_since = time.time()

    # --- the supervisor -----------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve, reconnect, until cancelled; started after the first attempt."""
        started = False
        attempt = 0
        try:
            while True:
                try:
                    conn = await self._connect()
                except (
                    OSError,
                    RedisError,
                    trio.TooSlowError,
                    trio.BrokenResourceError,
                    ssl.SSLError,
                ) as exc:
                    self._stats["connect_failures"] += 1
                    self._set_state("down", _describe(exc))
                    if not started:
                        task_status.started()
                        started = True
                    delay = backoff_delay(attempt)
                    attempt += 1
                    await trio.sleep(delay * random.uniform(0.5, 1.0))
                    continue
                attempt = 0
                self._conn = conn
                self.generation += 1
                self._stats["connects"] += 1
                self._set_state("up", None)
                self._up.set()
                self._next_connect.set()
                self._next_connect = trio.Event()
                if not started:
                    task_status.started()
                    started = True
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(conn.read, self._on_message)
                    if self._channels:
                        nursery.start_soon(self._ping_loop, conn)
                    # a command that timed out fails the connection while the reader
                    # may still sit in receive_some (Redis paused, TCP alive)
                    await conn.closed.wait()
                    nursery.cancel_scope.cancel()
                self._conn = None
                self._up = trio.Event()
                self._stats["disconnects"] += 1
                self._set_state("down", str(conn.error))
        finally:
            conn_left = self._conn
            self._conn = None
            self._set_state("closed", self.last_error)
            if conn_left is not None:
                conn_left.fail(RedisUnavailable("client closed"))

    def _set_state(self, state: State, error: str | None) -> None:
        if state != self.state:
            if state == "down":
                log.warning(f"{self.name}: Redis at {self.address} is down: {error}")
            elif state == "up" and self._stats["connects"] > 1:
                log.info(f"{self.name}: Redis at {self.address} is back")
            self.state = state
            self._state_since = time.time()
        if error is not None:
            self.last_error = error

    async def _connect(self) -> _Connection:
        with trio.fail_after(self.connect_timeout):
            stream = await self._open_stream()
            conn = _Connection(stream, subscriber=bool(self._channels))
            try:
                commands = [*login_commands(self.address, self._password), ("PING",)]
                commands += [("SUBSCRIBE", c) for c in self._channels]
                for reply in await conn.handshake(commands):
                    if isinstance(reply, RedisReplyError):
                        raise RedisReplyError(f"login refused: {reply}")
            except BaseException:
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                raise
            return conn

    async def _open_stream(self) -> trio.abc.Stream:
        address = self.address
        if address.unix_path is not None:
            return await trio.open_unix_socket(address.unix_path)
        tcp = await trio.open_tcp_stream(address.host, address.port)
        if not address.tls:
            return tcp
        context = ssl.create_default_context(cafile=address.ca_file)
        tls = trio.SSLStream(tcp, context, server_hostname=address.host)
        try:
            await tls.do_handshake()
        except BaseException:
            with trio.CancelScope(shield=True):
                await tcp.aclose()
            raise
        return tls

    async def _ping_loop(self, conn: _Connection) -> None:
        while True:
            await trio.sleep(self.health_interval)
            try:
                await conn.request([("PING",)], self.command_timeout)
            except RedisUnavailable:
                return

    # --- commands -----------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.error is None

    async def wait_connected(self) -> None:
        """Block until a connection is up (now, or after the next reconnect)."""
        await trio.lowlevel.checkpoint()
        while not self.connected:
            await self._up.wait()
            await trio.lowlevel.checkpoint()

    async def wait_reconnected(self, generation: int) -> None:
        """Until a connection newer than `generation` is up (a subscriber: subscribed)."""
        while self.generation <= generation:
            await self._next_connect.wait()

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """Send `commands` at once; their replies in order, `-ERR` ones as RedisReplyError values."""
        conn = self._conn
        if conn is None or conn.error is not None:
            self._stats["unavailable"] += 1
            raise RedisUnavailable(f"Redis at {self.address} is {self.state}")
        self._stats["commands"] += len(commands)
        try:
            replies = await conn.request(commands, self.command_timeout)
        except RedisUnavailable:
            self._stats["unavailable"] += 1
            raise
        self._stats["reply_errors"] += sum(isinstance(r, RedisReplyError) for r in replies)
        return replies

    async def execute(self, *command: Any) -> Any:
        """One command; an `-ERR` reply is raised as RedisReplyError."""
        (reply,) = await self.pipeline([command])
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply

    def statistics(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "since": round(self._state_since, 3),
            "address": str(self.address),
            "generation": self.generation,
            "last_error": self.last_error,
            "in_flight": len(self._conn.events) if self._conn is not None else 0,
            **self._stats,
        }


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__  # trio wraps the TLS error (a certificate refused) in it
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, trio.TooSlowError):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
