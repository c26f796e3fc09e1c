"""How device records sit in Redis (DESIGN §10): the node's advice on
hash-max-listpack-value, and records readable in either hash encoding."""

from __future__ import annotations

import logging
import secrets
from typing import Any

import pytest

from pusher_trio.model import Device
from tests.integration.test_redis_cluster import nodes
from tests.redis_harness import RedisServer, redis_server  # noqa: F401

ADVICE = "hash-max-listpack-value is 64"
TOKENS = [secrets.token_hex(32) for _ in range(3)]  # random, as APNs tokens: ~150 B records


def device(aor: str = "alice@example.com", device_id: str = "urn:uuid:1", n: int = 0) -> Device:
    token = TOKENS[n]
    fields: dict[str, Any] = {
        "type": "apple",
        "app": "org.example.phone",
        "token": token,
        "push_type": "voip",
        "user_agent": "LinphoneiOS/5.2.0 (iPhone) LinphoneSDK/5.2.0",
        "contact": f"sip:{aor.split('@')[0]}@10.1.2.3:5060;transport=udp;pn-provider=apns;"
        f"pn-prid={token};pn-param=TEAM123456.org.example.phone.voip",
        "last_registered": 1.7e9,
    }
    return Device(aor=aor, device_id=device_id, **fields)


async def test_default_encoding_is_advised_against(
    redis_server: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="pusher_trio.redis.store"):
        async with nodes(redis_server.url, count=1) as (a,):
            a.store.put_devices([device()])
            assert await a.store.aflush()
            assert a.store.listpack_value == 64
    assert sum(ADVICE in r.getMessage() for r in caplog.records) == 1  # once, not per node start
    assert redis_server.command("OBJECT", "ENCODING", "p:d:alice@example.com") == b"hashtable"


async def test_records_read_the_same_in_either_encoding(
    redis_server: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with nodes(redis_server.url, count=1) as (a,):
        a.store.put_devices([device("old@example.com")])  # a hashtable at the default
        assert await a.store.aflush()
    assert redis_server.command("CONFIG", "SET", "hash-max-listpack-value", "256") == b"OK"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pusher_trio.redis.store"):
        async with nodes(redis_server.url) as (a, b):
            a.store.put_devices([device("new@example.com"), device("new@example.com", "urn:2", 1)])
            assert await a.store.aflush()
            assert a.store.listpack_value == 256
            assert await b.store.fetch_devices("old@example.com") == [device("old@example.com")]
            found = await b.store.fetch_devices("new@example.com")
            assert sorted(d.device_id for d in found) == ["urn:2", "urn:uuid:1"]
    assert not any(ADVICE in r.getMessage() for r in caplog.records)
    assert redis_server.command("OBJECT", "ENCODING", "p:d:new@example.com") == b"listpack"
    assert redis_server.command("OBJECT", "ENCODING", "p:d:old@example.com") == b"hashtable"
