"""Request and response values exchanged between the pure providers and the transport.

Pure: the providers build an `HttpRequest`, `transport.py` sends it and hands back an
`HttpResponse`. Header names are lowercase (HTTP/2 requires it, RFC 9113 §8.2.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs


@attrs.frozen
class HttpRequest:
    """One HTTP/2 request; the transport adds `:scheme` and `:authority` from its origin."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return header(self.headers, name)


@attrs.frozen
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return header(self.headers, name)


def header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    """The first value of `name` (lowercase) in a header list."""
    for key, value in headers:
        if key == name:
            return value
    return None


def parse_retry_after(value: str | None) -> float | None:
    """RFC 9110 §10.2.3 Retry-After as delay-seconds; an HTTP-date is not used by APNs/FCM."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
