"""The pure part of the Redis client: addresses, the password file, RESP bookkeeping.

No sockets, no trio. `RespConnection` is to Redis what h2's `H2Connection` is to
HTTP/2: commands in (`send`), bytes out, bytes in (`receive_data`), replies out in
the order their commands were sent (RESP answers strictly in order, which is what
makes pipelining free). The RESP grammar is hiredis' (`hiredis.Reader`, a sans-IO
C parser; `hiredis.pack_command` builds the requests): none is written here.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
import hiredis

DEFAULT_PORT = 6379
# A reply larger than this is a protocol fault, not data we want (hiredis buffers it whole):
# HGETALL of an AOR with many devices is a few kB; a whole-keyspace reply is a bug.
MAX_REPLY_BUFFER = 64 * 1024 * 1024

Arg = str | bytes | int | float
Command = Sequence[Arg]


class RedisError(Exception):
    """Base of what the Redis client raises."""


class RedisConfigError(RedisError, ValueError):
    """A bad `redis_url` or password file: the operator's to fix, said in one line."""


class RedisUnavailable(RedisError):
    """Not connected, the connection broke, or Redis did not answer in time.

    The command may or may not have run (a write that broke mid-flight is replayed by
    its caller: every write the store sends is idempotent).
    """


class RedisReplyError(RedisError):
    """Redis answered `-ERR ...` (wrong type, NOAUTH, a script error): a value, not a fault
    of the connection, which stays usable."""


class RedisProtocolError(RedisUnavailable):
    """The byte stream is not RESP (not Redis on that port, or a proxy mangling it)."""


# --- addresses -----------------------------------------------------------------------


@attrs.frozen
class RedisAddress:
    """Where Redis is and how to log in; parsed from `[store] redis_url` (DESIGN §10)."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    unix_path: str | None = None
    db: int = 0
    username: str | None = None
    tls: bool = False
    ca_file: str | None = None  # rediss: extra CA to trust (self-run Redis with its own CA)

    def __str__(self) -> str:
        """For logs and `status`: where, never a password (there is none in here)."""
        user = f"{self.username}@" if self.username else ""
        if self.unix_path is not None:
            return f"unix://{user}{self.unix_path}?db={self.db}"
        scheme = "rediss" if self.tls else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}{host}:{self.port}/{self.db}"


def parse_redis_url(url: str) -> RedisAddress:
    """`redis://[user@]host[:port][/db]`, `rediss://...` (TLS), `unix:///path.sock?db=N`.

    A password in the URL is refused: DESIGN §10 keeps it out of the TOML file
    (`redis_password_file`). `rediss://...?ssl_ca_certs=FILE` names an extra CA (the
    query key redis-py uses).
    """
    try:
        parts = urlsplit(url.strip())
        query = parse_qs(parts.query, strict_parsing=False)
        port = parts.port
    except ValueError as exc:
        raise RedisConfigError(f"bad redis_url: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise RedisConfigError(
            f"bad redis_url: the scheme must be redis, rediss or unix, got {parts.scheme!r}"
        )
    if parts.password is not None:
        raise RedisConfigError(
            "bad redis_url: no password in the URL; put it in redis_password_file (mode 0600)"
        )
    username = unquote(parts.username) if parts.username else None
    unknown = set(query) - {"db", "ssl_ca_certs"}
    if unknown:
        raise RedisConfigError(f"bad redis_url: unknown parameter {sorted(unknown)[0]!r}")
    db_text = query.get("db", [""])[-1]
    if scheme == "unix":
        if not parts.path or parts.netloc.rpartition("@")[2]:
            raise RedisConfigError("bad redis_url: unix:///absolute/path.sock?db=N expected")
        return RedisAddress(unix_path=unquote(parts.path), db=_db(db_text), username=username)
    if not parts.hostname:
        raise RedisConfigError("bad redis_url: no host")
    path = parts.path.strip("/")
    if path and db_text:
        raise RedisConfigError("bad redis_url: the database is given twice (path and ?db=)")
    ca = query.get("ssl_ca_certs", [""])[-1] or None
    if ca is not None and scheme != "rediss":
        raise RedisConfigError("bad redis_url: ssl_ca_certs needs rediss://")
    return RedisAddress(
        host=parts.hostname,
        port=port if port is not None else DEFAULT_PORT,
        db=_db(path or db_text),
        username=username,
        tls=scheme == "rediss",
        ca_file=ca,
    )


def _db(text: str) -> int:
    if not text:
        return 0
    if not text.isdigit() or int(text) > 65535:
        raise RedisConfigError(f"bad redis_url: the database must be a number, got {text!r}")
    return int(text)


def read_password_file(path: str) -> str:
    """The Redis (ACL) password from `path`: one line, the file private to its owner.

    A password readable by group or others is refused, as ssh refuses such a key: the
    operator learns it now, not from an audit.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise RedisConfigError(
            f"cannot read redis_password_file {path}: {exc.strerror or exc}"
        ) from None
    try:
        mode = os.fstat(fd).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise RedisConfigError(
                f"redis_password_file {path} is readable by others"
                f" (mode {stat.S_IMODE(mode):04o}); chmod 600 it"
            )
        data = os.read(fd, 4097)
    finally:
        os.close(fd)
    if len(data) > 4096:
        raise RedisConfigError(f"redis_password_file {path} is larger than 4 KiB")
    try:
        password = data.decode("utf-8").strip("\r\n")
    except UnicodeDecodeError:
        raise RedisConfigError(f"redis_password_file {path} is not UTF-8 text") from None
    if not password or "\n" in password:
        raise RedisConfigError(f"redis_password_file {path} must hold one non-empty line")
    return password


def login_commands(address: RedisAddress, password: str | None) -> list[Command]:
    """What a fresh connection sends before anything else: AUTH, then SELECT."""
    commands: list[Command] = []
    if password is not None:
        if address.username:
            commands.append(("AUTH", address.username, password))
        else:
            commands.append(("AUTH", password))
    if address.db:
        commands.append(("SELECT", address.db))
    return commands


def backoff_delay(attempt: int, *, base: float = 0.05, cap: float = 2.0) -> float:
    """Capped exponential reconnect delay (attempt 0 is the first retry); the caller adds
    jitter. Capped low: a restarting Redis is back within seconds and every node wants
    its queued writes replayed soon."""
    return min(cap, base * float(2 ** min(attempt, 16)))


# --- RESP bookkeeping ---------------------------------------------------------------------


@attrs.define
class Pending:
    """One send(): how many replies it waits for and what has come back so far."""

    count: int
    replies: list[Any] = attrs.field(factory=list)

    @property
    def complete(self) -> bool:
        return len(self.replies) >= self.count


class RespConnection:
    """Sans-IO: matches replies to the sends that asked for them, strictly in order.

    `send(commands)` returns the bytes to write and a `Pending` that is complete once
    `receive_data` has seen all its replies. Error replies (`-ERR`) come back as
    `RedisReplyError` values in `Pending.replies`; a byte stream that is not RESP
    raises `RedisProtocolError` (the connection is then unusable).
    """

    def __init__(self, *, subscriber: bool = False) -> None:
        # In subscribe mode Redis interleaves pushed messages with the replies to our
        # PINGs; both are arrays, told apart by their first element.
        self._subscriber = subscriber
        self._reader = hiredis.Reader(replyError=RedisReplyError)
        self._reader.setmaxbuf(MAX_REPLY_BUFFER)
        self._pending: deque[Pending] = deque()
        self._unsolicited: list[Any] = []

    @property
    def waiting(self) -> int:
        """Sends whose replies have not all arrived."""
        return len(self._pending)

    def send(self, commands: Iterable[Command]) -> tuple[bytes, Pending]:
        # hiredis' stub types the tuple as one element; any number of args is accepted
        packed = [hiredis.pack_command(tuple(command)) for command in commands]  # type: ignore[arg-type]
        if not packed:
            raise ValueError("no command to send")
        pending = Pending(len(packed))
        self._pending.append(pending)
        return b"".join(packed), pending

    def expect(self, count: int) -> Pending:
        """Wait for `count` more replies without sending anything (a subscribe's confirmations)."""
        pending = Pending(count)
        self._pending.append(pending)
        return pending

    def receive_data(self, data: bytes | bytearray) -> list[Pending]:
        """Feed bytes; return the sends that became complete, oldest first."""
        self._reader.feed(bytes(data) if isinstance(data, bytearray) else data)
        done: list[Pending] = []
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                raise RedisProtocolError(f"not a Redis reply: {exc}") from exc
            if reply is False:
                return done
            if not self._pending or (self._subscriber and _is_message(reply)):
                # pub/sub pushes arrive unasked; kept for `unsolicited()`
                self._unsolicited.append(reply)
                continue
            head = self._pending[0]
            head.replies.append(reply)
            if head.complete:
                self._pending.popleft()
                done.append(head)

    def unsolicited(self) -> list[Any]:
        """Replies no send asked for (pub/sub messages), oldest first; clears them."""
        out, self._unsolicited = self._unsolicited, []
        return out


def _is_message(reply: Any) -> bool:
    return isinstance(reply, list) and bool(reply) and reply[0] in (b"message", b"pmessage")


__all__ = [
    "Command",
    "Pending",
    "RedisAddress",
    "RedisConfigError",
    "RedisError",
    "RedisProtocolError",
    "RedisReplyError",
    "RedisUnavailable",
    "RespConnection",
    "backoff_delay",
    "login_commands",
    "parse_redis_url",
    "read_password_file",
]
