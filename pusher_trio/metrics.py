"""Prometheus text format at GET /metrics (optional, `[metrics] listen`).

The numbers are the same statistics `status` returns: `render` flattens that
nested mapping into `pusher_trio_<path>` gauges. The HTTP side is the least
HTTP/1.1 that Prometheus needs: one request per connection, answered and closed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import trio

from .logs import get_logger

log = get_logger("metrics")

PREFIX = "pusher_trio"
MAX_REQUEST_HEAD = 8192  # a scrape request is a few hundred bytes
REQUEST_TIMEOUT = 10.0  # a client that sends nothing does not hold a task forever
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")


def _metric_name(parts: list[str]) -> str:
    name = "_".join(_NAME_BAD.sub("_", part) for part in parts if part)
    return re.sub(r"_+", "_", name).strip("_").lower()


def _walk(value: Any, path: list[str], out: list[tuple[str, float]]) -> None:
    if isinstance(value, bool):
        out.append((_metric_name(path), 1.0 if value else 0.0))
    elif isinstance(value, int | float):
        if not (isinstance(value, float) and math.isnan(value)):
            out.append((_metric_name(path), float(value)))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _walk(item, [*path, str(key)], out)
    # strings, lists and None carry no number: not a metric


def render(statistics: Mapping[str, Any]) -> str:
    """Flatten numeric leaves of `statistics` into Prometheus text exposition lines."""
    samples: list[tuple[str, float]] = []
    _walk(statistics, [PREFIX], samples)
    lines: list[str] = []
    seen: set[str] = set()
    for name, value in sorted(samples):
        if name in seen:
            continue
        seen.add(name)
        number = int(value) if value.is_integer() else value
        lines.append(f"# TYPE {name} gauge")
        lines.append(f"{name} {number}")
    return "\n".join(lines) + "\n"


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def answer(request_head: bytes, statistics: Callable[[], Mapping[str, Any]]) -> bytes:
    """The whole HTTP response to one request head (pure, testable without sockets)."""
    first_line = request_head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = first_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return _response("400 Bad Request", b"bad request\n")
    method, target, _version = parts
    path = target.split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return _response("405 Method Not Allowed", b"only GET\n")
    if path != "/metrics":
        return _response("404 Not Found", b"try /metrics\n")
    body = render(statistics()).encode("utf-8")
    response = _response("200 OK", body, CONTENT_TYPE)
    if method == "HEAD":
        return response[: len(response) - len(body)]
    return response


class MetricsServer:
    """`await nursery.start(server.serve)` -> the bound (host, port)."""

    def __init__(self, host: str, port: int, statistics: Callable[[], Mapping[str, Any]]) -> None:
        self.host = host
        self.port = port
        self._statistics = statistics
        self.requests = 0

    async def serve(
        self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        bound = listeners[0].socket.getsockname()
        address = (str(bound[0]), int(bound[1]))
        log.info("metrics listening", extra={"fields": {"address": f"{address[0]}:{address[1]}"}})
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started(address)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(REQUEST_TIMEOUT):
                try:
                    head = await self._read_head(stream)
                    if head is None:
                        return
                    self.requests += 1
                    await stream.send_all(answer(head, self._statistics))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return

    @staticmethod
    async def _read_head(stream: trio.SocketStream) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > MAX_REQUEST_HEAD:
                await stream.send_all(_response("431 Request Header Fields Too Large", b""))
                return None
            chunk = await stream.receive_some(4096)
            if not chunk:
                return None
            data += chunk
        return data
