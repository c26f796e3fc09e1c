"""pusher_trio._json: orjson's speed, the stdlib's verdicts (what is accepted and written)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pusher_trio import _json
from pusher_trio.control import jsonrpc

STDLIB_ONLY = [
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b'{"a": 123456789012345678901234567890}',
    b"[-9223372036854775809, 18446744073709551616]",
    b'{"a": "\\ud800"}',
    '{"a": 1}'.encode("utf-16"),
]


@pytest.mark.parametrize("data", STDLIB_ONLY)
def test_loads_takes_what_the_stdlib_takes(data: bytes) -> None:
    got = _json.loads(data)
    want = json.loads(data)
    assert repr(got) == repr(want)  # repr: NaN != NaN


@pytest.mark.parametrize("data", [b"{", b'{"a": 1,}', b"\xff", b'{"a": nan}', b""])
def test_loads_refuses_what_the_stdlib_refuses(data: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(data)
    with pytest.raises(ValueError):
        _json.loads(data)


@pytest.mark.parametrize(
    "obj",
    [
        {"id": math.nan},
        {"x": [1.0, math.inf]},
        {"id": "\ud800"},
        {1: "int key"},
        {"big": 2**70},
    ],
)
def test_dumps_leaves_to_the_stdlib_what_orjson_writes_differently(obj: object) -> None:
    assert _json.dumps_compact(obj) is None


@pytest.mark.parametrize("obj", [{"id": "\ud800"}, {1: "int key"}, {"big": 2**70}])
def test_log_lines_leave_to_the_stdlib_what_orjson_refuses(obj: object) -> None:
    text = _json.dumps_text(obj, default=str)
    assert text == json.dumps(obj, ensure_ascii=False, default=str, separators=(",", ":"))


def test_log_lines_write_nan_as_null() -> None:
    assert json.loads(_json.dumps_text({"x": math.nan}, default=str)) == {"x": None}


def test_reply_with_nan_id_is_written_as_the_stdlib_writes_it() -> None:
    reply = b'{"jsonrpc":"2.0","id":NaN,"result":1}'
    assert jsonrpc.encode_result(math.nan, 1) == jsonrpc.encode_netstring(reply)


def test_dumps_text_uses_default_for_other_types() -> None:
    assert json.loads(_json.dumps_text({"a": object}, default=str)) == {"a": str(object)}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_round_trip_matches_the_stdlib(value: object) -> None:
    """Both ways: what orjson writes reads back as the stdlib reads its own output."""
    data = _json.dumps_compact(value)
    if data is None:  # the stdlib's own output then (lone surrogates, NaN, big integers)
        return
    stdlib = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert repr(_json.loads(data)) == repr(json.loads(stdlib))
    assert repr(_json.loads(stdlib.encode("utf-8"))) == repr(json.loads(stdlib))
