"""The receive side of the HTTP/2 client, in-process: nginx's answers, parsed again.

What the sidecar pays per answer after TLS: `h2wire.ClientConnection.receive` (frames,
HPACK decoding in `_hpack.CachingDecoder`) and `transport.Connection._handle` (fields
to text, the waiting request finished). The plaintext nginx sends to `transport.Pool`
for `--requests` pushes (100 in flight, one connection, the apns-ids the service makes,
which nginx echoes like APNs) is captured once, then fed in the same chunks to fresh
connections `--reps` times; the best rep is reported (µs per answer, and the HPACK
decoding of the same header blocks alone). An in-process microbenchmark: it measures
the parsing code, not the service (`load.bench_service` does that).

    python -m load.bench_receive [--requests 3000] [--reps 15]

Bounded: one capture, then `--reps` passes over it; the nginx process is ours and is
stopped by its PID.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import attrs
import trio

from load.bench_push import _request, nginx
from pusher_trio.providers import h2wire
from pusher_trio.providers._hpack import CachingDecoder
from pusher_trio.providers.apns import new_apns_id
from pusher_trio.providers.transport import Connection, Origin, Pool, _Stream, make_ssl_context
from pusher_trio.standins.certs import Authority

REQUEST = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"x"), (b":path", b"/")]


def capture(requests: int) -> list[bytes]:
    """The plaintext chunks nginx sends for `requests` pushes, as `receive` got them."""
    chunks: list[bytes] = []
    original = h2wire.ClientConnection.receive

    def receive(self: h2wire.ClientConnection, data: bytes) -> list[h2wire.Event]:
        chunks.append(bytes(data))
        return original(self, data)

    async def run(port: int, ca_file: str) -> None:
        async with trio.open_nursery() as nursery:
            pool = Pool(
                Origin("127.0.0.1", port), make_ssl_context(ca_file), nursery, max_connections=1
            )

            async def worker(count: int) -> None:
                for _ in range(count):
                    request = _request()
                    headers = tuple(
                        (name, new_apns_id() if name == "apns-id" else value)
                        for name, value in request.headers
                    )
                    answer = await pool.request(attrs.evolve(request, headers=headers))
                    if answer.status != 200:
                        raise RuntimeError(f"nginx answered {answer.status}")

            async with trio.open_nursery() as workers:
                for _ in range(100):
                    workers.start_soon(worker, requests // 100)
            await pool.aclose()
            nursery.cancel_scope.cancel()

    h2wire.ClientConnection.receive = receive  # type: ignore[method-assign]
    try:
        with nginx(Authority(), max_streams=128) as (port, ca_file):
            trio.run(run, port, ca_file)
    finally:
        h2wire.ClientConnection.receive = original  # type: ignore[method-assign]
    return chunks


def header_blocks(chunks: list[bytes]) -> list[bytes]:
    data = b"".join(chunks)
    blocks = []
    pos = 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        if data[pos + 3] == h2wire.HEADERS:
            blocks.append(data[pos + 9 : pos + 9 + length])
        pos += 9 + length
    return blocks


def parse_once(chunks: list[bytes], answers: int) -> float:
    """Seconds to parse every chunk on a fresh connection whose streams are open."""
    connection = Connection(Origin("127.0.0.1", 443), make_ssl_context())
    framing = connection._h2
    for _ in range(answers):
        stream_id = framing.send_headers(REQUEST, end_stream=True)
        connection._streams[stream_id] = _Stream(0.0)
    framing.data_to_send()
    start = time.perf_counter()
    for chunk in chunks:
        connection._handle(framing.receive(chunk))
    elapsed = time.perf_counter() - start
    if connection.responses != answers:
        raise RuntimeError(f"{connection.responses} answers parsed, {answers} expected")
    return elapsed


def decode_once(blocks: list[bytes]) -> float:
    decoder = CachingDecoder()
    start = time.perf_counter()
    for block in blocks:
        decoder.decode(block, raw=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=3000, help="a multiple of 100")
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args(argv if argv is not None else [])
    chunks = capture(args.requests)
    blocks = header_blocks(chunks)
    answers = len(blocks)
    parse = min(parse_once(chunks, answers) for _ in range(args.reps))
    decode = min(decode_once(blocks) for _ in range(args.reps))
    result = {
        "answers": answers,
        "receive_and_handle_us_per_answer": round(parse / answers * 1e6, 2),
        "hpack_decode_us_per_answer": round(decode / answers * 1e6, 2),
    }
    print(
        f"in-process, {answers} nginx answers ({len(chunks)} chunks), best of {args.reps}:"
        f" h2wire.receive + Connection._handle {result['receive_and_handle_us_per_answer']} µs"
        f" per answer; HPACK decoding alone {result['hpack_decode_us_per_answer']} µs"
    )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
