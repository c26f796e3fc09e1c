"""HTTP/1.1 for the push services that offer only that (DESIGN §9, Web Push).

A Web Push endpoint is whatever URL the browser's push service handed out; most speak
HTTP/2 (and go through `transport.py`), but a service that does not negotiate `h2`
in ALPN is reached here instead: httpcore's HTTP/1.1 pool with keep-alive, through the
outbound proxy when one is configured. Low rate per origin, so httpcore's overhead
(see transport.py's docstring) does not matter.
"""

from __future__ import annotations

import httpcore
import trio

from ..model import AuthFailed, RetryLater
from .http import HttpRequest, HttpResponse
from .oauth import CANCEL_MARGIN, _chain
from .proxy import REFUSING_STATUSES, Proxy
from .transport import Origin, make_ssl_context, tls_refused

REQUEST_TIMEOUT = 10.0
MAX_CONNECTIONS = 10  # per origin; each carries one request at a time


class Http1Client:
    def __init__(
        self, ca_file: str | None = None, proxy: Proxy | None = None, idle_timeout: float = 0.0
    ) -> None:
        context = make_ssl_context(ca_file)  # httpcore sets its own ALPN (http/1.1) on it
        # `[push] idle_timeout` as httpcore's keep-alive expiry (0: kept, like transport.py).
        expiry = idle_timeout if idle_timeout > 0 else None
        self._pool: httpcore.AsyncConnectionPool
        if proxy is None:
            self._pool = httpcore.AsyncConnectionPool(
                ssl_context=context,
                http1=True,
                http2=False,
                max_connections=MAX_CONNECTIONS,
                keepalive_expiry=expiry,
            )
        else:
            self._pool = httpcore.AsyncHTTPProxy(
                proxy_url=proxy.url,
                proxy_auth=proxy.basic_credentials,
                ssl_context=context,
                http1=True,
                http2=False,
                max_connections=MAX_CONNECTIONS,
                keepalive_expiry=expiry,
            )
        self._proxy = proxy
        self.requests = 0

    async def request(
        self, origin: Origin, request: HttpRequest
    ) -> HttpResponse | AuthFailed | RetryLater:
        """One request; network trouble is RetryLater, a refused certificate or proxy
        AuthFailed (as `Providers._request` maps the HTTP/2 transport's errors)."""
        self.requests += 1
        # httpcore leaks the socket when cancelled mid-handshake (see oauth.py): its own
        # timeouts end the request just before the caller's deadline instead.
        left = trio.current_effective_deadline() - trio.current_time() - CANCEL_MARGIN
        budget = max(0.01, min(REQUEST_TIMEOUT, left))
        timeouts = {"connect": budget / 2, "read": budget, "write": budget, "pool": budget}
        try:
            # httpcore adds Host and Content-Length (also 0: a push without payload).
            response = await self._pool.request(
                request.method,
                f"https://{origin.authority}{request.path}",
                headers=list(request.headers),
                content=request.body,
                extensions={"timeout": timeouts},
            )
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as error:
            chain = _chain(error)
            detail = next((str(e) for e in reversed(chain) if str(e)), type(error).__name__)
            if any(tls_refused(e) for e in chain):
                return AuthFailed(f"{origin.authority}: TLS refused: {detail}")
            via = f" (via proxy {self._proxy.address})" if self._proxy is not None else ""
            return RetryLater(f"{origin.authority}{via}: {type(error).__name__}: {detail}")
        except httpcore.ProxyError as error:
            where = self._proxy.address if self._proxy is not None else "?"
            status = str(error).split(" ", 1)[0]
            text = f"proxy {where} answered CONNECT {origin.authority} with {error}"
            if status.isdigit() and int(status) in REFUSING_STATUSES:
                return AuthFailed(text)
            return RetryLater(text)
        headers_out = tuple(
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in response.headers
        )
        return HttpResponse(response.status, headers_out, response.content)

    async def aclose(self) -> None:
        await self._pool.aclose()
