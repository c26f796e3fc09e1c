"""The client side of HTTP/2 framing (RFC 9113), sans-IO, for our provider requests.

`transport.Connection` drove `h2.connection.H2Connection` until its per-request cost
became the largest part of a push through the service: a state machine object and
hyperframe objects per stream and per frame, and a walk over every event (30 % of the
sidecar's CPU per push in `load.bench_service`'s profile). Our use is narrow: requests
we build ourselves, small bodies, answers of a few hundred bytes, no server push, no
priorities. This module does exactly that, with plain integers and bytes:

* `initiate()` writes the preface, our SETTINGS (no push, our receive window, our
  header list limit) and a connection WINDOW_UPDATE;
* `send_headers` / `send_data` / `reset_stream` / `ping` / `close` append frames to
  the outgoing buffer that `data_to_send()` hands over;
* `receive(data)` parses every complete frame and returns events (the classes below).
  It answers SETTINGS and PING itself, gives back flow-control credit as answers are
  read, and keeps the connection readable after GOAWAY (the streams up to its
  `last_stream_id` still finish, RFC 9113 §6.8).

Errors: what the peer does wrong at the connection level raises `ProtocolError` after
GOAWAY with the RFC's error code was queued (the caller sends it and drops the
connection); a stream-level error resets that stream and reports it as `StreamReset`
with our code. Header blocks are decoded in arrival order whatever becomes of their
stream, so the HPACK dynamic table stays in step with the server's.
"""

from __future__ import annotations

import struct
from typing import Any, Protocol

from hpack.exceptions import HPACKError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6)
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Error codes (RFC 9113 §7)
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9

# SETTINGS identifiers (RFC 9113 §6.5.2)
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

DEFAULT_WINDOW = 65535
MAX_WINDOW = 2**31 - 1
MIN_FRAME_SIZE = 16384  # also what we accept: we never advertise more
MAX_FRAME_SIZE_LIMIT = 2**24 - 1
MAX_STREAM_ID = 2**31 - 1
# Our receive windows. Answers are small; these only need to never stall one.
STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 1 << 24
HEADER_LIST_LIMIT = 65536

_FRAME = struct.Struct(">HBBBI")  # length (high 16 bits, low 8 bits), type, flags, stream
_U32 = struct.Struct(">I")
_GOAWAY = struct.Struct(">II")
_SETTING = struct.Struct(">HI")

ERROR_NAMES = {
    0x0: "NO_ERROR",
    0x1: "PROTOCOL_ERROR",
    0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT",
    0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM",
    0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR",
    0xA: "CONNECT_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY",
    0xD: "HTTP_1_1_REQUIRED",
}


def error_name(code: int) -> str:
    return ERROR_NAMES.get(code, f"0x{code:x}")


class ProtocolError(Exception):
    """The peer broke HTTP/2 at the connection level; GOAWAY(code) is queued."""

    def __init__(self, message: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(f"{message} ({error_name(code)})")
        self.code = code


class StreamClosed(Exception):
    """A frame for a stream that is no longer open on our side."""


class TooManyStreams(Exception):
    """The server's SETTINGS_MAX_CONCURRENT_STREAMS is reached."""


class NoStreamIds(Exception):
    """Every client stream id (2^31 / 2) was used: the connection must be replaced."""


class Encoder(Protocol):
    header_table_size: int

    def encode(self, headers: Any, huffman: bool = True) -> bytes: ...


class Decoder(Protocol):
    max_header_list_size: int

    def decode(self, data: bytes, raw: bool = False) -> Any: ...


# --- events ---------------------------------------------------------------------------
class Event:
    __slots__ = ()


class ResponseReceived(Event):
    """The final (non-1xx) response header block of a stream."""

    __slots__ = ("headers", "stream_id")

    def __init__(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.stream_id = stream_id
        self.headers = headers


class DataReceived(Event):
    __slots__ = ("data", "stream_id")

    def __init__(self, stream_id: int, data: bytes) -> None:
        self.stream_id = stream_id
        self.data = data


class StreamEnded(Event):
    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class StreamReset(Event):
    """The server reset the stream (`by_peer`), or we did because it broke the rules."""

    __slots__ = ("by_peer", "error_code", "stream_id")

    def __init__(self, stream_id: int, error_code: int, by_peer: bool = True) -> None:
        self.stream_id = stream_id
        self.error_code = error_code
        self.by_peer = by_peer


class GoAway(Event):
    __slots__ = ("debug_data", "error_code", "last_stream_id")

    def __init__(self, last_stream_id: int, error_code: int, debug_data: bytes) -> None:
        self.last_stream_id = last_stream_id
        self.error_code = error_code
        self.debug_data = debug_data


class SettingsChanged(Event):
    __slots__ = ("changed",)

    def __init__(self, changed: dict[int, int]) -> None:
        self.changed = changed


class WindowUpdated(Event):
    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class PingAcknowledged(Event):
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


# --- frames ---------------------------------------------------------------------------
def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame: 24-bit length, type, flags, 31-bit stream id, payload (§4.1)."""
    length = len(payload)
    return _FRAME.pack(length >> 8, length & 0xFF, kind, flags, stream_id) + payload


class _Stream:
    __slots__ = ("local_closed", "response", "send_window", "unacked")

    def __init__(self, send_window: int, local_closed: bool) -> None:
        self.send_window = send_window
        self.local_closed = local_closed  # we sent END_STREAM
        self.response = False  # the final response headers arrived
        self.unacked = 0  # DATA bytes read and not yet credited back


class ClientConnection:
    """One HTTP/2 client connection's framing state (see the module docstring)."""

    def __init__(self, encoder: Encoder, decoder: Decoder) -> None:
        self.encoder = encoder
        self.decoder = decoder
        decoder.max_header_list_size = HEADER_LIST_LIMIT
        self.streams: dict[int, _Stream] = {}
        self.next_stream_id = 1
        # the server's settings (defaults until its SETTINGS frame)
        self.max_concurrent_streams = MAX_STREAM_ID  # "unlimited" until it says
        self.initial_window = DEFAULT_WINDOW
        self.max_frame_size = MIN_FRAME_SIZE
        self.send_window = DEFAULT_WINDOW  # connection-level, ours to spend
        self.settings_received = False
        self.goaway_received: int | None = None  # its last_stream_id once GOAWAY came
        self.closed = False  # we sent GOAWAY
        self._recv_window = DEFAULT_WINDOW  # connection-level, the peer's to spend
        self._recv_unacked = 0
        self._out = bytearray()
        self._buffer = b""
        # a header block spread over HEADERS + CONTINUATION: (stream id, flags, fragments)
        self._block: tuple[int, int, list[bytes]] | None = None

    # --- sending ----------------------------------------------------------------------
    def initiate(self) -> None:
        settings = b"".join(
            _SETTING.pack(key, value)
            for key, value in (
                (ENABLE_PUSH, 0),
                (INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                (MAX_HEADER_LIST_SIZE, HEADER_LIST_LIMIT),
            )
        )
        self._out += PREFACE
        self._out += frame(SETTINGS, 0, 0, settings)
        self._out += frame(WINDOW_UPDATE, 0, 0, _U32.pack(CONNECTION_WINDOW - DEFAULT_WINDOW))
        self._recv_window = CONNECTION_WINDOW

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        data = bytes(self._out)
        self._out.clear()
        return data

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._out)

    @property
    def open_streams(self) -> int:
        return len(self.streams)

    def send_headers(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> int:
        """Start a stream with this request header list; returns its id."""
        if len(self.streams) >= self.max_concurrent_streams:
            raise TooManyStreams(f"{len(self.streams)} streams open")
        stream_id = self.next_stream_id
        if stream_id > MAX_STREAM_ID:
            raise NoStreamIds("stream ids used up")
        self.next_stream_id = stream_id + 2
        block = self.encoder.encode(headers)
        flags = END_STREAM if end_stream else 0
        size = self.max_frame_size
        if len(block) <= size:
            self._out += frame(HEADERS, flags | END_HEADERS, stream_id, block)
        else:
            self._out += frame(HEADERS, flags, stream_id, block[:size])
            rest = block[size:]
            while rest:
                chunk, rest = rest[:size], rest[size:]
                self._out += frame(CONTINUATION, 0 if rest else END_HEADERS, stream_id, chunk)
        self.streams[stream_id] = _Stream(self.initial_window, end_stream)
        return stream_id

    def window(self, stream_id: int) -> int:
        """How many body bytes may go out on this stream now (flow control, frame size)."""
        stream = self.streams.get(stream_id)
        if stream is None:
            raise StreamClosed(f"stream {stream_id} is closed")
        return max(0, min(self.send_window, stream.send_window, self.max_frame_size))

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """One DATA frame; the caller keeps to `window()`."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.local_closed:
            raise StreamClosed(f"stream {stream_id} is closed")
        size = len(data)
        if size > min(self.send_window, stream.send_window, self.max_frame_size):
            raise ValueError(f"{size} bytes exceed the window of stream {stream_id}")
        self.send_window -= size
        stream.send_window -= size
        self._out += frame(DATA, END_STREAM if end_stream else 0, stream_id, data)
        if end_stream:
            stream.local_closed = True

    def reset_stream(self, stream_id: int, code: int = CANCEL) -> None:
        if self.streams.pop(stream_id, None) is None:
            raise StreamClosed(f"stream {stream_id} is closed")
        self._out += frame(RST_STREAM, 0, stream_id, _U32.pack(code))

    def ping(self, payload: bytes) -> None:
        self._out += frame(PING, 0, 0, payload)

    def close(self, code: int = NO_ERROR, debug: bytes = b"") -> None:
        """GOAWAY: we take no server stream (we allow none), so last_stream_id is 0."""
        if not self.closed:
            self.closed = True
            self._out += frame(GOAWAY, 0, 0, _GOAWAY.pack(0, code) + debug)

    # --- receiving --------------------------------------------------------------------
    def receive(self, data: bytes) -> list[Event]:
        """Parse every complete frame in what was buffered plus `data`."""
        buffer = self._buffer + data if self._buffer else data
        events: list[Event] = []
        pos = 0
        end = len(buffer)
        limit = MIN_FRAME_SIZE
        header = _FRAME.unpack_from
        try:
            while end - pos >= 9:
                high, low, kind, flags, stream_id = header(buffer, pos)
                length = high << 8 | low
                if length > limit:
                    raise ProtocolError(f"a {length}-byte frame", FRAME_SIZE_ERROR)
                start = pos + 9
                pos = start + length
                if pos > end:
                    pos = start - 9
                    break
                stream_id &= MAX_STREAM_ID
                payload = buffer[start:pos]
                if (
                    kind == HEADERS
                    and flags & (END_HEADERS | PADDED | PRIORITY_FLAG) == END_HEADERS
                    and self._block is None
                    and stream_id & 1
                    and stream_id < self.next_stream_id
                ):
                    # an answer in one plain HEADERS frame (the common case), directly
                    self._header_block(stream_id, flags, payload, events)
                else:
                    self._frame(kind, flags, stream_id, payload, events)
        except ProtocolError as error:
            self._buffer = b""
            self.close(error.code)
            raise
        self._buffer = buffer[pos:] if pos < end else b""
        return events

    def _frame(
        self, kind: int, flags: int, stream_id: int, payload: bytes, events: list[Event]
    ) -> None:
        if self._block is not None and kind != CONTINUATION:
            raise ProtocolError("a header block interrupted by another frame")
        if kind == HEADERS:
            self._headers(flags, stream_id, payload, events)
        elif kind == DATA:
            self._data(flags, stream_id, payload, events)
        elif kind == RST_STREAM:
            self._reset(stream_id, payload, events)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload, events)
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload, events)
        elif kind == PING:
            if stream_id:
                raise ProtocolError("PING on a stream")
            if len(payload) != 8:
                raise ProtocolError("a malformed PING", FRAME_SIZE_ERROR)
            if flags & ACK:
                events.append(PingAcknowledged(payload))
            else:
                self._out += frame(PING, ACK, 0, payload)
        elif kind == GOAWAY:
            if stream_id:
                raise ProtocolError("GOAWAY on a stream")
            if len(payload) < 8:
                raise ProtocolError("a short GOAWAY", FRAME_SIZE_ERROR)
            last, code = _GOAWAY.unpack_from(payload)
            last &= MAX_STREAM_ID
            if self.goaway_received is None or last < self.goaway_received:
                self.goaway_received = last
            events.append(GoAway(last, code, payload[8:]))
        elif kind == CONTINUATION:
            self._continuation(flags, stream_id, payload, events)
        elif kind == PUSH_PROMISE:
            # We sent ENABLE_PUSH = 0 before anything else (§8.4).
            raise ProtocolError("PUSH_PROMISE with push disabled")
        elif kind == PRIORITY:
            if stream_id == 0:
                raise ProtocolError("PRIORITY on stream 0")
            if len(payload) != 5:
                self._stream_error(stream_id, FRAME_SIZE_ERROR, events)
        # unknown frame types are ignored (§4.1, §5.5)

    def _check_stream_id(self, stream_id: int, what: str) -> None:
        """A frame for a stream we never opened (even, or not yet used) is a protocol error."""
        if stream_id == 0:
            raise ProtocolError(f"{what} on stream 0")
        if not stream_id & 1 or stream_id >= self.next_stream_id:
            raise ProtocolError(f"{what} on idle stream {stream_id}")

    def _unpad(self, flags: int, payload: bytes, what: str) -> bytes:
        if not flags & PADDED:
            return payload
        if not payload:
            raise ProtocolError(f"a padded {what} without a pad length", FRAME_SIZE_ERROR)
        pad = payload[0]
        if pad >= len(payload):
            raise ProtocolError(f"{what} padding longer than the frame")
        return payload[1 : len(payload) - pad]

    def _headers(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        self._check_stream_id(stream_id, "HEADERS")
        fragment = self._unpad(flags, payload, "HEADERS")
        if flags & PRIORITY_FLAG:
            if len(fragment) < 5:
                raise ProtocolError("HEADERS too short for its priority", FRAME_SIZE_ERROR)
            fragment = fragment[5:]
        if flags & END_HEADERS:
            self._header_block(stream_id, flags, fragment, events)
        else:
            self._block = (stream_id, flags, [fragment])

    def _continuation(
        self, flags: int, stream_id: int, payload: bytes, events: list[Event]
    ) -> None:
        block = self._block
        if block is None or block[0] != stream_id:
            raise ProtocolError("CONTINUATION without a header block to continue")
        block[2].append(payload)
        if sum(map(len, block[2])) > HEADER_LIST_LIMIT * 2:
            raise ProtocolError("an endless header block", COMPRESSION_ERROR)
        if flags & END_HEADERS:
            self._block = None
            self._header_block(stream_id, block[1], b"".join(block[2]), events)

    def _header_block(self, stream_id: int, flags: int, block: bytes, events: list[Event]) -> None:
        try:
            headers = self.decoder.decode(block, raw=True)
        except HPACKError as error:
            raise ProtocolError(f"bad header block: {error}", COMPRESSION_ERROR) from error
        stream = self.streams.get(stream_id)
        if stream is None:
            return  # closed (we reset it, or it ended): decoded for the table's sake only
        status = b""
        for name, value in headers:
            if name == b":status":
                status = value
                break
        informational = status[:1] == b"1" and len(status) == 3
        end = bool(flags & END_STREAM)
        if stream.response:
            if not end:  # trailers must end the stream (§8.1)
                self._stream_error(stream_id, PROTOCOL_ERROR, events)
                return
        elif informational:
            if end:
                self._stream_error(stream_id, PROTOCOL_ERROR, events)
            return
        elif not status:
            self._stream_error(stream_id, PROTOCOL_ERROR, events)
            return
        else:
            stream.response = True
            events.append(ResponseReceived(stream_id, headers))
        if end:
            self._remote_end(stream_id, stream, events)

    def _remote_end(self, stream_id: int, stream: _Stream, events: list[Event]) -> None:
        del self.streams[stream_id]
        events.append(StreamEnded(stream_id))
        if not stream.local_closed:
            # The answer came before our body was sent: the rest is not wanted (§8.1).
            self._out += frame(RST_STREAM, 0, stream_id, _U32.pack(NO_ERROR))

    def _data(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        self._check_stream_id(stream_id, "DATA")
        size = len(payload)  # padding counts against flow control too (§6.1)
        if size > self._recv_window:
            raise ProtocolError("DATA beyond the connection window", FLOW_CONTROL_ERROR)
        self._recv_window -= size
        self._recv_unacked += size
        if self._recv_unacked >= CONNECTION_WINDOW // 2:
            self._out += frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._recv_unacked))
            self._recv_window += self._recv_unacked
            self._recv_unacked = 0
        stream = self.streams.get(stream_id)
        data = self._unpad(flags, payload, "DATA")
        if stream is None:
            return  # a stream we reset or that ended: ignored (§5.1), its bytes credited
        if not stream.response:
            self._stream_error(stream_id, PROTOCOL_ERROR, events)
            return
        stream.unacked += size
        if stream.unacked > STREAM_WINDOW:
            self._stream_error(stream_id, FLOW_CONTROL_ERROR, events)
            return
        if data:
            events.append(DataReceived(stream_id, data))
        if flags & END_STREAM:
            self._remote_end(stream_id, stream, events)
        elif stream.unacked >= STREAM_WINDOW // 2:
            self._out += frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(stream.unacked))
            stream.unacked = 0

    def _reset(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        self._check_stream_id(stream_id, "RST_STREAM")
        if len(payload) != 4:
            raise ProtocolError("a malformed RST_STREAM", FRAME_SIZE_ERROR)
        if self.streams.pop(stream_id, None) is not None:
            events.append(StreamReset(stream_id, _U32.unpack(payload)[0]))

    def _window_update(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if len(payload) != 4:
            raise ProtocolError("a malformed WINDOW_UPDATE", FRAME_SIZE_ERROR)
        increment = _U32.unpack(payload)[0] & MAX_WINDOW
        if stream_id == 0:
            if increment == 0:
                raise ProtocolError("a WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise ProtocolError("connection window above 2^31-1", FLOW_CONTROL_ERROR)
            events.append(WindowUpdated(0))
            return
        self._check_stream_id(stream_id, "WINDOW_UPDATE")
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if increment == 0:
            self._stream_error(stream_id, PROTOCOL_ERROR, events)
            return
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            self._stream_error(stream_id, FLOW_CONTROL_ERROR, events)
            return
        events.append(WindowUpdated(stream_id))

    def _settings(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id:
            raise ProtocolError("SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ProtocolError("a SETTINGS ACK with a payload", FRAME_SIZE_ERROR)
            return
        if len(payload) % 6:
            raise ProtocolError("a malformed SETTINGS frame", FRAME_SIZE_ERROR)
        changed: dict[int, int] = {}
        for offset in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, offset)
            if key == ENABLE_PUSH and value > 1:
                raise ProtocolError(f"SETTINGS_ENABLE_PUSH = {value}")
            if key == INITIAL_WINDOW_SIZE and value > MAX_WINDOW:
                raise ProtocolError(f"SETTINGS_INITIAL_WINDOW_SIZE = {value}", FLOW_CONTROL_ERROR)
            if key == MAX_FRAME_SIZE and not MIN_FRAME_SIZE <= value <= MAX_FRAME_SIZE_LIMIT:
                raise ProtocolError(f"SETTINGS_MAX_FRAME_SIZE = {value}")
            changed[key] = value
        for key, value in changed.items():
            if key == HEADER_TABLE_SIZE:
                self.encoder.header_table_size = value
            elif key == MAX_CONCURRENT_STREAMS:
                self.max_concurrent_streams = value
            elif key == INITIAL_WINDOW_SIZE:
                delta = value - self.initial_window
                self.initial_window = value
                for open_id, stream in self.streams.items():  # §6.9.2
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise ProtocolError(
                            f"stream {open_id}'s window above 2^31-1", FLOW_CONTROL_ERROR
                        )
            elif key == MAX_FRAME_SIZE:
                self.max_frame_size = value
        self.settings_received = True
        self._out += frame(SETTINGS, ACK, 0)
        events.append(SettingsChanged(changed))

    def _stream_error(self, stream_id: int, code: int, events: list[Event]) -> None:
        """The server broke the rules on one stream: reset it, tell the caller."""
        if self.streams.pop(stream_id, None) is not None:
            self._out += frame(RST_STREAM, 0, stream_id, _U32.pack(code))
            events.append(StreamReset(stream_id, code, by_peer=False))
