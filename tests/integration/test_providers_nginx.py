"""The transport against a real HTTP/2 server: nginx's GOAWAY after keepalive_requests.

nginx (like APNs) sends GOAWAY with the last stream it will process and finishes the
streams below it: every request must complete, none twice.
"""

from __future__ import annotations

import os
import shutil
import uuid

import pytest
import trio

from load.bench_push import TOKEN, nginx
from pusher_trio.providers.http import HttpRequest
from pusher_trio.providers.transport import Origin, Pool, make_ssl_context
from pusher_trio.standins.certs import Authority

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None
    and not os.path.exists("/usr/sbin/nginx")
    and os.environ.get("CI") != "true",
    reason="nginx is not installed (Debian: nginx-light)",
)


def request() -> HttpRequest:
    return HttpRequest(
        "POST",
        f"/3/device/{TOKEN}",
        (("apns-topic", "com.example.app"), ("apns-id", str(uuid.uuid4()))),
        b'{"aps":{}}',
    )


async def test_nginx_goaway_after_keepalive_requests_loses_nothing() -> None:
    with nginx(Authority(), keepalive_requests=150) as (port, ca_file), trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            pool = Pool(
                Origin("127.0.0.1", port), make_ssl_context(ca_file), nursery, max_connections=1
            )
            sent: list[str] = []
            echoed: list[str] = []

            async def worker() -> None:
                for _ in range(20):
                    req = request()
                    sent.append(req.header("apns-id") or "")
                    response = await pool.request(req)
                    assert response.status == 200
                    echoed.append(response.header("apns-id") or "")

            async with trio.open_nursery() as workers:
                for _ in range(50):
                    workers.start_soon(worker)
            stats = pool.statistics()
            await pool.aclose()
            nursery.cancel_scope.cancel()
    assert len(echoed) == 1000 and sorted(echoed) == sorted(sent)
    assert stats["connects"] >= 1000 // 150
    assert stats["goaways"] >= 1000 // 150 - 1


def test_nginx_answers_decode_as_hpack_decodes_them() -> None:
    """nginx re-sends server, date, content-type, content-length with incremental
    indexing in every answer, then the echoed apns-id: our decoder's remembered runs and
    steady table must give hpack's fields and keep the same table, answer after answer."""
    import hpack

    from load.bench_receive import capture, header_blocks, parse_once
    from pusher_trio.providers._hpack import CachingDecoder

    chunks = capture(400)
    blocks = header_blocks(chunks)
    assert len(blocks) == 400
    ours, reference = CachingDecoder(), hpack.Decoder()
    steady = 0
    for block in blocks:
        assert ours.decode(block, raw=True) == reference.decode(block, raw=True)
        assert ours.table == list(reference.header_table.dynamic_entries)
        steady += ours._steady is not None
    assert steady > 100  # the steady path ran (it is left each time the date changes)
    parse_once(chunks, len(blocks))  # every answer reaches its stream (else it raises)
