"""JSON-RPC 2.0 in netstrings, the framing of Kamailio's janssonrpcc (DESIGN §7, §11). Pure.

Bytes in, values out, bytes back, in the manner of h11: feed received bytes
to a `NetstringDecoder` and pull frames with `next_frame()` until it answers
None (needs more data); `parse_request(frame)` turns one frame into a
`Request`; `encode_result` / `encode_error` build the reply frames.

What can escape, and what it means for the connection (DESIGN §11):

* `next_frame()` raises a `FramingError` (a `ParseError` -32700 or an
  `InvalidRequest` -32600 for an announced length over the limit). The
  stream can no longer be read in step: reply once with `id: null`, close.
* `parse_request()` raises a `ControlError` whose `id` says where to reply
  (None: `id: null`). The connection stays open.

Every error class carries its JSON-RPC code as a class attribute, the way
h2's exceptions carry `error_code`.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar, Final

import attrs

from .. import _json

# DESIGN §7: "A message over 64 KiB ... closes that connection after an error reply".
MAX_MESSAGE: Final = 64 * 1024
# The length prefix of any frame we accept fits in 9 digits; netstring-c, which
# janssonrpcc embeds, refuses longer prefixes too. More digits: not a netstring.
MAX_LENGTH_DIGITS: Final = 9

JSON = Any
RequestId = str | int | float | None


# --- errors ----------------------------------------------------------------------------


class ControlError(Exception):
    """A JSON-RPC error object: `code` (class attribute), `message`, optional `data`.

    Subclasses name the codes of DESIGN §7. An instance may carry another code
    (`ControlError("...", code=-32099)`), which is how a client reports codes
    it does not know.
    """

    code: int = -32000
    default_message: ClassVar[str] = "Server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        data: JSON = None,
        code: int | None = None,
        id: RequestId = None,
    ) -> None:
        self.message = message if message is not None else self.default_message
        self.data = data
        self.id = id  # the request id to reply to, when known (parse errors)
        if code is not None:
            self.code = code
        super().__init__(self.message)

    def to_json(self) -> dict[str, JSON]:
        error: dict[str, JSON] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, message={self.message!r})"


class ParseError(ControlError):
    code = -32700
    default_message = "Parse error"


class InvalidRequest(ControlError):
    code = -32600
    default_message = "Invalid Request"


class MethodNotFound(ControlError):
    code = -32601
    default_message = "Method not found"


class InvalidParams(ControlError):
    code = -32602
    default_message = "Invalid params"


class InternalError(ControlError):
    code = -32603
    default_message = "Internal error"


class NoPushTarget(ControlError):
    """No usable device record for the AOR."""

    code = -32001
    default_message = "NoPushTarget"


class Timeout(ControlError):
    """Pushed, but no successful REGISTER before the deadline (or the push never completed)."""

    code = -32002
    default_message = "Timeout"


class PushRejected(ControlError):
    """Every provider refused; `data` has the per-device reasons."""

    code = -32003
    default_message = "PushRejected"


class Overloaded(ControlError):
    """Too many waiting requests; nothing was sent."""

    code = -32004
    default_message = "Overloaded"


class ShuttingDown(ControlError):
    code = -32005
    default_message = "ShuttingDown"


class Cancelled(ControlError):
    """A `cancel` for this call arrived (the caller hung up)."""

    code = -32006
    default_message = "Cancelled"


class FramingError(ControlError):
    """Mixin marker: the byte stream is out of step; reply `id: null` and close."""


class NetstringParseError(FramingError, ParseError):
    code = -32700


class MessageTooLarge(FramingError, InvalidRequest):
    code = -32600


ERRORS_BY_CODE: Final[dict[int, type[ControlError]]] = {
    cls.code: cls
    for cls in (
        ParseError,
        InvalidRequest,
        MethodNotFound,
        InvalidParams,
        InternalError,
        NoPushTarget,
        Timeout,
        PushRejected,
        Overloaded,
        ShuttingDown,
        Cancelled,
    )
}


def error_from_json(error: JSON, id: RequestId = None) -> ControlError:
    """The exception for a received error object (the client side)."""
    if not isinstance(error, dict) or not isinstance(error.get("code"), int):
        return InternalError("malformed error object in reply", data=error, id=id)
    code = error["code"]
    message = error.get("message")
    message = message if isinstance(message, str) else ""
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        return ControlError(message, data=error.get("data"), code=code, id=id)
    return cls(message, data=error.get("data"), id=id)


# --- netstrings --------------------------------------------------------------------------


def encode_netstring(payload: bytes) -> bytes:
    """`<len>:<payload>,` (len in decimal, no leading zeros)."""
    return b"%d:%s," % (len(payload), payload)


class NetstringDecoder:
    """Incremental netstring reader: `feed(data)`, then `next_frame()` until None.

    After a `FramingError` the decoder stays broken: every later `next_frame()`
    raises the same error (the connection must be closed).
    """

    __slots__ = ("_buffer", "_error", "_length", "_max_length", "_pos")

    def __init__(self, max_length: int = MAX_MESSAGE) -> None:
        self._buffer = bytearray()
        self._pos = 0  # start of the unread part of _buffer
        self._length: int | None = None  # announced length of the frame being read
        self._max_length = max_length
        self._error: FramingError | None = None

    def feed(self, data: bytes | bytearray) -> None:
        if self._pos and self._pos == len(self._buffer):
            self._buffer.clear()
            self._pos = 0
        elif self._pos > 65536 and self._pos * 2 > len(self._buffer):
            del self._buffer[: self._pos]  # compact now and then, not per frame
            self._pos = 0
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames."""
        return len(self._buffer) - self._pos

    @property
    def in_frame(self) -> bool:
        """True when a partial frame is buffered (the peer stopped mid-message)."""
        return self.buffered > 0 or self._length is not None

    def next_frame(self) -> bytes | None:
        if self._error is not None:
            raise self._error
        try:
            return self._next_frame()
        except FramingError as exc:
            self._error = exc
            raise

    def _next_frame(self) -> bytes | None:
        buf = self._buffer
        if self._length is None:
            head = bytes(buf[self._pos : self._pos + MAX_LENGTH_DIGITS + 1])
            colon = head.find(b":")
            digits = head if colon < 0 else head[:colon]
            if digits and not digits.isdigit():
                raise NetstringParseError("netstring length is not a decimal number")
            if colon < 0:
                if len(digits) > MAX_LENGTH_DIGITS:
                    raise NetstringParseError("netstring length has too many digits")
                return None
            if not digits:
                raise NetstringParseError("netstring has no length")
            if len(digits) > 1 and digits[0:1] == b"0":
                raise NetstringParseError("netstring length has leading zeros")
            length = int(digits)
            if length > self._max_length:
                raise MessageTooLarge(
                    f"message of {length} bytes is over the limit of {self._max_length}"
                )
            self._length = length
            self._pos += colon + 1
        length = self._length
        if len(buf) - self._pos < length + 1:
            return None
        start = self._pos
        if buf[start + length] != ord(","):
            raise NetstringParseError("netstring does not end with a comma")
        frame = bytes(buf[start : start + length])
        self._pos = start + length + 1
        self._length = None
        return frame


# --- JSON-RPC ------------------------------------------------------------------------------


@attrs.frozen
class Request:
    method: str
    params: dict[str, JSON] | list[JSON] | None
    id: RequestId = None
    is_notification: bool = False  # no "id" member: no reply, whatever happens


def _valid_id(value: object) -> bool:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _is_unicode_text(message: JSON) -> bool:
    """False when a string in `message` holds a surrogate that no pair completed."""
    try:
        json.dumps(message, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


def parse_request(frame: bytes) -> Request:
    """One frame -> `Request`, or a `ControlError` carrying the id to answer (None: null)."""
    try:
        message = _json.loads(frame)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise ParseError("message is not valid JSON") from None
    if _SURROGATE_ESCAPE.search(frame) is not None and not _is_unicode_text(message):
        # RFC 8259 §8.2 / RFC 7493 §2.1: a lone surrogate ("\ud800") is no character.
        # Taken in, it could not be stored (SQLite wants UTF-8) nor written back.
        raise ParseError("message has a string with a lone surrogate escape")
    if isinstance(message, list):
        raise InvalidRequest("batches are not supported")
    if not isinstance(message, dict):
        raise InvalidRequest("a request is a JSON object")
    has_id = "id" in message
    rid = message.get("id")
    if not _valid_id(rid):
        raise InvalidRequest("id must be a string, a number or null")
    if message.get("jsonrpc") != "2.0":
        raise InvalidRequest('"jsonrpc" must be "2.0"', id=rid)
    method = message.get("method")
    if not isinstance(method, str):
        raise InvalidRequest('"method" must be a string', id=rid)
    params = message.get("params")
    if "params" in message and not isinstance(params, dict | list):
        raise InvalidRequest('"params" must be an object or an array', id=rid)
    return Request(method=method, params=params, id=rid, is_notification=not has_id)


def _dumps(obj: JSON) -> bytes:
    data = _json.dumps_compact(obj)
    if data is not None:
        return data
    # A lone surrogate ("\ud800" in a received id or string) has no UTF-8 form;
    # backslashreplace writes it as the JSON escape \ud800, which reads back the same.
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace")


def encode_result(id: RequestId, result: JSON) -> bytes:
    return encode_netstring(_dumps({"jsonrpc": "2.0", "id": id, "result": result}))


def encode_error(id: RequestId, error: ControlError) -> bytes:
    return encode_netstring(_dumps({"jsonrpc": "2.0", "id": id, "error": error.to_json()}))


def encode_request(method: str, params: JSON = None, id: RequestId = None) -> bytes:
    """A request frame; with `id=None` a notification (no id member, no reply)."""
    message: dict[str, JSON] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    if id is not None:
        message["id"] = id
    return encode_netstring(_dumps(message))


@attrs.frozen
class Response:
    id: RequestId
    result: JSON = None
    error: ControlError | None = None


def parse_response(frame: bytes) -> Response:
    """One reply frame (client side); raises `ParseError` when it is not a JSON-RPC reply."""
    try:
        message = _json.loads(frame)
    except (ValueError, RecursionError):
        raise ParseError("reply is not valid JSON") from None
    if not isinstance(message, dict) or not _valid_id(message.get("id")):
        raise ParseError("reply is not a JSON-RPC response object")
    rid = message.get("id")
    if "error" in message:
        return Response(id=rid, error=error_from_json(message["error"], rid))
    if "result" not in message:
        raise ParseError("reply has neither result nor error")
    return Response(id=rid, result=message["result"])
