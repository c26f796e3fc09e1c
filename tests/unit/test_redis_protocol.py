"""The pure part of the Redis client: URLs, the password file, reply bookkeeping."""

from __future__ import annotations

import os

import hiredis
import pytest

from pusher_trio.redis.protocol import (
    RedisAddress,
    RedisConfigError,
    RedisProtocolError,
    RedisReplyError,
    RespConnection,
    backoff_delay,
    login_commands,
    parse_redis_url,
    read_password_file,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", RedisAddress()),
        ("redis://localhost", RedisAddress(host="localhost")),
        ("redis://10.0.0.5:6380/3", RedisAddress(host="10.0.0.5", port=6380, db=3)),
        ("redis://h/?db=2", RedisAddress(host="h", db=2)),
        ("redis://pusher@h:1/0", RedisAddress(host="h", port=1, username="pusher")),
        ("redis://[::1]:7000/1", RedisAddress(host="::1", port=7000, db=1)),
        ("rediss://r.example:6380/0", RedisAddress(host="r.example", port=6380, tls=True)),
        (
            "rediss://r:1/0?ssl_ca_certs=/etc/ca.pem",
            RedisAddress(host="r", port=1, tls=True, ca_file="/etc/ca.pem"),
        ),
        (
            "unix:///run/redis/redis.sock?db=4",
            RedisAddress(unix_path="/run/redis/redis.sock", db=4),
        ),
        ("unix:///run/redis.sock", RedisAddress(unix_path="/run/redis.sock")),
        ("unix://acl@/run/r.sock", RedisAddress(unix_path="/run/r.sock", username="acl")),
    ],
)
def test_parse_redis_url(url: str, expected: RedisAddress) -> None:
    assert parse_redis_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h", "scheme"),
        ("redis://user:secret@h/0", "no password in the URL"),
        ("redis:///0", "no host"),
        ("redis://h/x", "must be a number"),
        ("redis://h/1?db=2", "given twice"),
        ("redis://h:99999/0", "bad redis_url"),
        ("redis://h/0?timeout=3", "unknown parameter"),
        ("redis://h/0?ssl_ca_certs=/ca", "needs rediss"),
        ("unix://", "unix:///absolute"),
    ],
)
def test_parse_redis_url_refuses(url: str, message: str) -> None:
    with pytest.raises(RedisConfigError, match=message) as info:
        parse_redis_url(url)
    assert "secret" not in str(info.value)


def test_address_str_names_no_secret() -> None:
    assert str(parse_redis_url("rediss://acl@h:7/2")) == "rediss://acl@h:7/2"
    assert str(parse_redis_url("unix:///r.sock?db=1")) == "unix:///r.sock?db=1"


def test_password_file_private(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "pw"
    path.write_text("s3cret\n")
    os.chmod(path, 0o600)
    assert read_password_file(str(path)) == "s3cret"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_password_file_readable_by_others_is_refused(tmp_path, mode: int) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "pw"
    path.write_text("s3cret\n")
    os.chmod(path, mode)
    with pytest.raises(RedisConfigError, match="chmod 600") as info:
        read_password_file(str(path))
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize("content", ["", "\n", "a\nb\n"])
def test_password_file_must_hold_one_line(tmp_path, content: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "pw"
    path.write_text(content)
    os.chmod(path, 0o600)
    with pytest.raises(RedisConfigError, match="one non-empty line"):
        read_password_file(str(path))


def test_password_file_missing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RedisConfigError, match="cannot read"):
        read_password_file(str(tmp_path / "nope"))


def test_login_commands() -> None:
    assert login_commands(RedisAddress(), None) == []
    assert login_commands(RedisAddress(db=2), "pw") == [("AUTH", "pw"), ("SELECT", 2)]
    assert login_commands(RedisAddress(username="u"), "pw") == [("AUTH", "u", "pw")]


def test_backoff_grows_and_is_capped() -> None:
    delays = [backoff_delay(n) for n in range(40)]
    assert delays == sorted(delays)
    assert delays[0] > 0
    assert max(delays) == 2.0


REPLIES = b"+OK\r\n-ERR wrong kind\r\n*2\r\n$1\r\na\r\n:3\r\n:3\r\n$-1\r\n"


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 2, 7, len(REPLIES)])
def test_replies_match_sends_in_order_whatever_the_chunking(size: int) -> None:
    conn = RespConnection()
    data1, first = conn.send([("SET", "k", "v"), ("LPUSH", "k", "x")])
    _, second = conn.send([("HGETALL", "h")])
    _, third = conn.send([("INCR", "n"), ("GET", "missing")])
    assert data1 == hiredis.pack_command(("SET", "k", "v")) + hiredis.pack_command(
        ("LPUSH", "k", "x")
    )
    assert conn.waiting == 3
    done = []
    for chunk in _chunks(REPLIES, size):
        done += conn.receive_data(chunk)
    assert done == [first, second, third]
    assert first.replies[0] == b"OK"
    assert isinstance(first.replies[1], RedisReplyError)
    assert str(first.replies[1]) == "ERR wrong kind"
    assert second.replies == [[b"a", 3]]
    assert third.replies == [3, None]
    assert conn.waiting == 0


def test_send_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        RespConnection().send([])


def test_not_resp_raises_protocol_error() -> None:
    conn = RespConnection()
    conn.send([("PING",)])
    with pytest.raises(RedisProtocolError):
        conn.receive_data(b"HTTP/1.1 400 Bad Request\r\n")


def test_subscriber_tells_messages_from_replies() -> None:
    conn = RespConnection(subscriber=True)
    _, ping = conn.send([("PING",)])
    wire = (
        b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"
        b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
        b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$2\r\nch\r\n$3\r\nyou\r\n"
    )
    assert conn.receive_data(wire) == [ping]
    assert ping.replies == [[b"pong", b""]]
    assert conn.unsolicited() == [
        [b"message", b"ch", b"hi"],
        [b"pmessage", b"*", b"ch", b"you"],
    ]
    assert conn.unsolicited() == []


# --- the device record format (pusher_trio/redis/store.py) -----------------------------------


def _device(**kw: object):  # type: ignore[no-untyped-def]
    from pusher_trio.model import Device

    token = "0f" * 32
    fields: dict[str, object] = {
        "aor": "alice@example.com",
        "device_id": "<urn:uuid:1>",
        "type": "apple",
        "app": "com.example.app",
        "token": token,
        "push_type": "voip",
        "extra": {"source": "rfc8599", "team_id": "TEAM123456"},
        "user_agent": "LinphoneiOS/5.2.0 (iPhone) LinphoneSDK/5.2.0",
        "contact": f"sip:alice@10.0.0.1:5060;transport=udp;pn-provider=apns;pn-prid={token}",
        "last_registered": 1_700_000_000.123456,
    }
    fields.update(kw)
    return Device(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"state": "invalid", "reason": "Unregistered", "invalidated_at": 5.5, "bound": False},
        {"type": "firebase", "push_type": None, "sandbox": True, "extra": {}},
        {"contact": 'sip:ü@例え.jp;x="q"', "user_agent": "\u2603" * 300},
    ],
)
def test_device_record_round_trip_and_is_compact(changes: dict[str, object]) -> None:
    import json

    from pusher_trio.redis.store import _decode_device, _encode_device

    device = _device(**changes)
    data = _encode_device(device)
    assert data.startswith(b"z1")
    assert _decode_device(device.aor, device.device_id, data) == device
    if not changes:
        plain = json.dumps([1, device.token, device.contact, device.user_agent])
        assert len(data) < len(plain) * 0.6  # the token is stored once, the rest deflated


def test_device_record_format_1_plain_json_still_reads() -> None:
    from pusher_trio.redis.store import _decode_device

    device = _device()
    plain = (
        f'[1,"apple","com.example.app","{device.token}",0,"voip",'
        '{"source":"rfc8599","team_id":"TEAM123456"},'
        f'"{device.user_agent}","{device.contact}",1,1700000000.123456,"valid",null,null]'
    )
    assert _decode_device(device.aor, device.device_id, plain.encode()) == device


@pytest.mark.parametrize(
    "data",
    [b"z1garbage", b"z1", b"not json", b"[2,1]", b"[]"],
)
def test_device_record_corrupt_is_a_value_error(data: bytes) -> None:
    from pusher_trio.redis.store import _decode_device

    with pytest.raises((ValueError, TypeError)):
        _decode_device("a@b", "d", data)


def test_device_record_bomb_is_refused() -> None:
    import zlib

    from pusher_trio.redis.store import _ZDICT, _decode_device

    deflate = zlib.compressobj(9, zlib.DEFLATED, -10, 2, zlib.Z_DEFAULT_STRATEGY, _ZDICT)
    bomb = b"z1" + deflate.compress(b"[" + b" " * 10_000_000 + b"]") + deflate.flush()
    with pytest.raises(ValueError, match="oversized"):
        _decode_device("a@b", "d", bomb)
