"""`rediss://`: the client over TLS to a real redis-server (Debian's is built with TLS)."""

from __future__ import annotations

from pathlib import Path

import trio

from pusher_trio.redis import RedisClient, parse_redis_url
from pusher_trio.standins.certs import Authority
from tests.redis_harness import RedisServer, free_port


async def test_rediss_with_a_private_ca_and_refused_without(tmp_path: Path) -> None:
    authority = Authority()
    cert, key = authority.write_server(tmp_path / "redis.pem", tmp_path / "redis.key")
    ca = authority.write_ca(tmp_path / "ca.pem")
    tls_port = free_port()
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(
        folder,
        extra=["--tls-port", str(tls_port), "--tls-cert-file", cert, "--tls-key-file", key,
               "--tls-auth-clients", "no"],
    ).start()  # fmt: skip
    try:
        trusted = RedisClient(parse_redis_url(f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}"))
        untrusted = RedisClient(parse_redis_url(f"rediss://127.0.0.1:{tls_port}/0"))
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await nursery.start(trusted.run)
                await nursery.start(untrusted.run)
                assert trusted.state == "up", trusted.last_error
                assert await trusted.execute("SET", "over", "tls") == b"OK"
                replies = await trusted.pipeline([("GET", "over"), ("PING",)])
                assert replies == [b"tls", b"PONG"]
                assert untrusted.state == "down"
                assert "CERTIFICATE_VERIFY_FAILED" in (untrusted.last_error or ""), (
                    untrusted.last_error
                )
                nursery.cancel_scope.cancel()
        assert server.command("GET", "over") == b"tls"  # the plain port sees the same data
    finally:
        server.stop()
