"""Redis for the cluster (DESIGN §10): a thin trio client around hiredis, the store, the bus."""

from .client import RedisClient
from .protocol import (
    RedisAddress,
    RedisConfigError,
    RedisError,
    RedisProtocolError,
    RedisReplyError,
    RedisUnavailable,
    parse_redis_url,
    read_password_file,
)

__all__ = [
    "RedisAddress",
    "RedisClient",
    "RedisConfigError",
    "RedisError",
    "RedisProtocolError",
    "RedisReplyError",
    "RedisUnavailable",
    "parse_redis_url",
    "read_password_file",
]
