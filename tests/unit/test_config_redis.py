"""The [store] keys of the Redis backend (DESIGN §10)."""

from __future__ import annotations

import pytest

from pusher_trio.config import ConfigError, default_config, parse_config

ENV = {"HOME": "/home/op", "XDG_DATA_HOME": ""}


def test_sqlite_stays_the_default() -> None:
    store = default_config(ENV).store
    assert store.backend == "sqlite"
    assert (store.redis_url, store.key_prefix) == ("redis://127.0.0.1:6379/0", "pusher:")
    assert (store.redis_password_file, store.secret_key_file) == ("", "")


def test_redis_keys_and_relative_files() -> None:
    config = parse_config(
        '[store]\nbackend = "redis"\nredis_url = "rediss://acl@r.example:6380/2"\n'
        'redis_password_file = "redis.pw"\nsecret_key_file = "/etc/k"\nkey_prefix = "x:"\n',
        "/etc/pusher-trio/pusher.toml",
        env=ENV,
    )
    assert config.store.backend == "redis"
    assert config.store.redis_password_file == "/etc/pusher-trio/redis.pw"
    assert config.store.secret_key_file == "/etc/k"
    assert config.store.key_prefix == "x:"


@pytest.mark.parametrize(
    ("body", "key", "message"),
    [
        ('backend = "mysql"', "store.backend", "one of sqlite, redis"),
        ('redis_url = "redis://op:hunter2@h/0"', "store.redis_url", "no password in the URL"),
        ('redis_url = "http://h"', "store.redis_url", "scheme"),
        ("redis_url = 6379", "store.redis_url", "string"),
    ],
)
def test_bad_redis_keys_name_the_key(body: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"[store]\n{body}\n", "/etc/p.toml", env=ENV)
    text = str(info.value)
    assert key in text and message in text
    assert "hunter2" not in text
