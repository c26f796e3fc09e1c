"""Netstring framing and JSON-RPC parsing of the control protocol (DESIGN §7, §11)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pusher_trio.control import jsonrpc as rpc
from pusher_trio.control.jsonrpc import (
    MAX_MESSAGE,
    Cancelled,
    ControlError,
    FramingError,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    NetstringDecoder,
    NoPushTarget,
    Overloaded,
    ParseError,
    PushRejected,
    ShuttingDown,
    Timeout,
)


def chunkings(data: bytes) -> Iterator[list[bytes]]:
    """Whole, byte by byte, and in two halves (h11's tr() idea)."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    yield [data[: len(data) // 2], data[len(data) // 2 :]]


def decode_all(chunks: list[bytes], max_length: int = MAX_MESSAGE) -> list[bytes]:
    decoder = NetstringDecoder(max_length)
    frames: list[bytes] = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    return frames


def decode_error(chunks: list[bytes]) -> FramingError:
    with pytest.raises(FramingError) as info:
        decode_all(chunks)
    return info.value


# --- netstrings ---------------------------------------------------------------------


GOOD = [
    (b"0:,", [b""]),
    (b"3:abc,", [b"abc"]),
    (b"3:abc,5:hello,", [b"abc", b"hello"]),
    (b'13:{"jsonrpc":1},', [b'{"jsonrpc":1}']),
    (b"4:a,b:,", [b"a,b:"]),
    ("5:h\u00e9\u00e9,".encode(), ["h\u00e9\u00e9".encode()]),
]


@pytest.mark.parametrize(("data", "frames"), GOOD)
def test_netstring_decodes_whole_bytewise_and_split(data: bytes, frames: list[bytes]) -> None:
    for chunks in chunkings(data):
        assert decode_all(chunks) == frames


def test_netstring_keeps_trailing_partial_frame() -> None:
    decoder = NetstringDecoder()
    decoder.feed(b"3:abc,5:hel")
    assert decoder.next_frame() == b"abc"
    assert decoder.next_frame() is None
    assert decoder.in_frame
    decoder.feed(b"lo,")
    assert decoder.next_frame() == b"hello"
    assert decoder.next_frame() is None
    assert not decoder.in_frame


def test_netstring_waits_for_the_comma() -> None:
    decoder = NetstringDecoder()
    decoder.feed(b"3:abc")
    assert decoder.next_frame() is None
    decoder.feed(b",")
    assert decoder.next_frame() == b"abc"


BROKEN = [
    (b"x3:abc,", "leading junk"),
    (b" 3:abc,", "leading space"),
    (b"3x:abc,", "non-digit in length"),
    (b":abc,", "no length"),
    (b"3:abcd,", "missing comma"),
    (b"3:abc;", "wrong terminator"),
    (b"03:abc,", "leading zero"),
    (b"1234567890", "endless digits"),
    (b"0000000000000000000000", "endless zeros"),
    (b"-3:abc,", "negative length"),
    (b"3:abc,\n3:abc,", "newline between frames"),
    (b"\xff\xfe", "binary junk"),
]


@pytest.mark.parametrize(("data", "why"), BROKEN, ids=[why for _, why in BROKEN])
def test_broken_framing_is_a_parse_error(data: bytes, why: str) -> None:
    for chunks in chunkings(data):
        error = decode_error(chunks)
        assert isinstance(error, ParseError), why
        assert error.code == -32700
        assert error.id is None


def test_frames_before_broken_framing_are_delivered() -> None:
    decoder = NetstringDecoder()
    decoder.feed(b"3:abc,junk")
    assert decoder.next_frame() == b"abc"
    with pytest.raises(ParseError):
        decoder.next_frame()


def test_decoder_stays_broken_after_framing_error() -> None:
    decoder = NetstringDecoder()
    decoder.feed(b"x")
    with pytest.raises(ParseError):
        decoder.next_frame()
    decoder.feed(b"3:abc,")
    with pytest.raises(ParseError):
        decoder.next_frame()


@pytest.mark.parametrize("length", [MAX_MESSAGE + 1, 100_000, 999_999_999])
def test_announced_length_over_64k_is_invalid_request(length: int) -> None:
    data = b"%d:" % length
    for chunks in chunkings(data):
        error = decode_error(chunks)
        assert isinstance(error, InvalidRequest)
        assert error.code == -32600


def test_announced_length_over_limit_fails_before_the_body_arrives() -> None:
    decoder = NetstringDecoder()
    decoder.feed(b"70000:")
    with pytest.raises(InvalidRequest):
        decoder.next_frame()


def test_exactly_64k_is_accepted() -> None:
    body = b"x" * MAX_MESSAGE
    assert decode_all([rpc.encode_netstring(body)]) == [body]


def test_decoder_compacts_its_buffer() -> None:
    decoder = NetstringDecoder()
    frame = rpc.encode_netstring(b"y" * 1000)
    for _ in range(500):
        decoder.feed(frame + frame[:10])
        assert decoder.next_frame() == b"y" * 1000
        decoder.feed(frame[10:])
        assert decoder.next_frame() == b"y" * 1000
        assert decoder.next_frame() is None
    assert decoder.buffered == 0


@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_netstring_chunking_invariance(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(rpc.encode_netstring(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert decode_all(chunks) == payloads


@given(st.binary(max_size=40))
def test_decoder_raises_only_framing_errors(data: bytes) -> None:
    decoder = NetstringDecoder(max_length=10)
    decoder.feed(data)
    try:
        while decoder.next_frame() is not None:
            pass
    except FramingError as exc:
        assert exc.code in (-32700, -32600)


# --- JSON-RPC requests ---------------------------------------------------------------------


def test_parse_request_with_object_params() -> None:
    req = rpc.parse_request(b'{"jsonrpc":"2.0","id":7,"method":"push","params":{"aor":"a@b"}}')
    assert req == rpc.Request(method="push", params={"aor": "a@b"}, id=7)
    assert not req.is_notification


def test_parse_notification_has_no_id() -> None:
    req = rpc.parse_request(b'{"jsonrpc":"2.0","method":"cancel","params":{"call_id":"c"}}')
    assert req.is_notification
    assert req.id is None


def test_parse_request_with_null_id_is_not_a_notification() -> None:
    req = rpc.parse_request(b'{"jsonrpc":"2.0","id":null,"method":"status"}')
    assert not req.is_notification
    assert req.params is None


def test_string_id_is_kept() -> None:
    assert rpc.parse_request(b'{"jsonrpc":"2.0","id":"x1","method":"status"}').id == "x1"


@pytest.mark.parametrize(
    "frame", [b"{", b"not json", b"\xff\xfe", b'{"jsonrpc":"2.0",}', b"", b"[" * 100_000]
)
def test_bad_json_is_parse_error_with_null_id(frame: bytes) -> None:
    with pytest.raises(ParseError) as info:
        rpc.parse_request(frame)
    assert info.value.code == -32700
    assert info.value.id is None
    assert not isinstance(info.value, FramingError)  # the connection stays


INVALID = [
    (b'[{"jsonrpc":"2.0","id":1,"method":"status"}]', None),
    (b"[]", None),
    (b'"status"', None),
    (b"42", None),
    (b'{"id":1,"method":"status"}', 1),
    (b'{"jsonrpc":"1.0","id":2,"method":"status"}', 2),
    (b'{"jsonrpc":"2.0","id":3}', 3),
    (b'{"jsonrpc":"2.0","id":4,"method":5}', 4),
    (b'{"jsonrpc":"2.0","id":5,"method":"push","params":"aor"}', 5),
    (b'{"jsonrpc":"2.0","id":{"a":1},"method":"status"}', None),
    (b'{"jsonrpc":"2.0","id":true,"method":"status"}', None),
    (b'{"jsonrpc":"2.0","method":1,"params":"bar"}', None),
]


@pytest.mark.parametrize(("frame", "rid"), INVALID)
def test_invalid_requests_are_32600(frame: bytes, rid: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        rpc.parse_request(frame)
    assert info.value.code == -32600
    assert info.value.id == rid


# --- encoding ---------------------------------------------------------------------------------


def frame_json(frame: bytes) -> object:
    (body,) = decode_all([frame])
    return json.loads(body)


def test_encode_result_round_trip() -> None:
    frame = rpc.encode_result(3, {"status": "registered", "contact": "sip:a…b"})
    assert frame_json(frame) == {
        "jsonrpc": "2.0",
        "id": 3,
        "result": {"status": "registered", "contact": "sip:a…b"},
    }
    response = rpc.parse_response(decode_all([frame])[0])
    assert response.id == 3
    assert response.error is None


def test_encode_error_with_and_without_data() -> None:
    assert frame_json(rpc.encode_error(None, ParseError())) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32700, "message": "Parse error"},
    }
    frame = rpc.encode_error("a", PushRejected("every provider refused", data={"pushes": []}))
    assert frame_json(frame) == {
        "jsonrpc": "2.0",
        "id": "a",
        "error": {"code": -32003, "message": "every provider refused", "data": {"pushes": []}},
    }


def test_encode_request_and_notification() -> None:
    assert frame_json(rpc.encode_request("push", {"aor": "a@b"}, id=1)) == {
        "jsonrpc": "2.0",
        "method": "push",
        "params": {"aor": "a@b"},
        "id": 1,
    }
    assert rpc.parse_request(decode_all([rpc.encode_request("cancel", {"call_id": "x"})])[0]) == (
        rpc.Request(method="cancel", params={"call_id": "x"}, is_notification=True)
    )


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (NoPushTarget, -32001),
        (Timeout, -32002),
        (PushRejected, -32003),
        (Overloaded, -32004),
        (ShuttingDown, -32005),
        (Cancelled, -32006),
        (ParseError, -32700),
        (InvalidRequest, -32600),
        (MethodNotFound, -32601),
        (InvalidParams, -32602),
    ],
)
def test_error_codes_are_class_attributes_and_round_trip(
    cls: type[ControlError], code: int
) -> None:
    assert cls.code == code
    error = cls(data={"why": "because"})
    assert error.to_json()["code"] == code
    back = rpc.error_from_json(error.to_json(), 9)
    assert type(back) is cls
    assert back.data == {"why": "because"}
    assert back.id == 9


def test_unknown_error_code_keeps_its_code() -> None:
    error = rpc.error_from_json({"code": -32099, "message": "odd"})
    assert error.code == -32099
    assert error.message == "odd"
    assert rpc.ControlError.code == -32000


def test_parse_response_rejects_non_responses() -> None:
    with pytest.raises(ParseError):
        rpc.parse_response(b'{"jsonrpc":"2.0","id":1}')
    with pytest.raises(ParseError):
        rpc.parse_response(b"[]")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["jsonrpc", "id", "method", "params", "x"]), children)
    ),
    max_leaves=12,
)


@given(JSON_VALUES)
def test_parse_request_raises_only_control_errors(value: object) -> None:
    try:
        request = rpc.parse_request(json.dumps(value).encode())
    except ControlError as exc:
        assert exc.code in (-32700, -32600)
    else:
        assert isinstance(request.method, str)
        assert request.params is None or isinstance(request.params, dict | list)


@given(
    st.text(min_size=1, max_size=20),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    st.integers(min_value=1, max_value=2**31),
)
def test_request_round_trip(method: str, params: dict[str, str], rid: int) -> None:
    (frame,) = decode_all([rpc.encode_request(method, params, id=rid)])
    assert rpc.parse_request(frame) == rpc.Request(method=method, params=params, id=rid)
