"""The OAuth2 token exchange for FCM service accounts (trio shell around `fcm.py`).

Low rate (one request per service account and hour), so it uses httpcore rather than
the hand-made transport: HTTP/1.1 or HTTP/2, whatever the token endpoint speaks.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpcore
import jwt
import trio
from cryptography.exceptions import UnsupportedAlgorithm

from ..model import AuthFailed, RetryLater
from . import fcm
from .proxy import REFUSING_STATUSES, Proxy
from .transport import make_ssl_context, tls_refused

TOKEN_TIMEOUT = 10.0
CANCEL_MARGIN = 0.05  # httpcore's timeouts fire this long before the caller's deadline


def _chain(error: BaseException) -> list[BaseException]:
    """The error and what led to it: httpcore wraps trio's BrokenResourceError (as its
    argument and context), which has the ssl error as its cause."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain and len(chain) < 8:
        chain.append(current)
        wrapped = current.args[0] if current.args else None
        current = (
            current.__cause__
            or current.__context__
            or (wrapped if isinstance(wrapped, BaseException) else None)
        )
    return chain


class OAuthClient:
    def __init__(self, ca_file: str | None = None, proxy: Proxy | None = None) -> None:
        # httpcore sets ALPN on the context it is given: it gets its own.
        self._pool: httpcore.AsyncConnectionPool
        if proxy is None:
            self._pool = httpcore.AsyncConnectionPool(
                ssl_context=make_ssl_context(ca_file), http1=True, http2=True, max_connections=4
            )
        else:
            # DESIGN §9: through the proxy too (httpcore tunnels https with CONNECT).
            self._pool = httpcore.AsyncHTTPProxy(
                proxy_url=proxy.url,
                proxy_auth=proxy.basic_credentials,
                ssl_context=make_ssl_context(ca_file),
                http1=True,
                http2=True,
                max_connections=4,
            )
        self._proxy = proxy
        self.exchanges = 0

    async def fetch(
        self, service_account: Mapping[str, str], now: float
    ) -> tuple[str, float] | AuthFailed | RetryLater:
        """(access token, lifetime) or why not; network trouble is RetryLater."""
        try:
            url, body = fcm.token_request(service_account, now)
        except (KeyError, ValueError, TypeError, UnsupportedAlgorithm, jwt.PyJWTError) as error:
            return AuthFailed(f"cannot sign the OAuth assertion: {type(error).__name__}: {error}")
        self.exchanges += 1
        # httpcore leaks the socket when it is cancelled during the TLS handshake (it
        # closes the stream on `Exception` only; the socket is then closed by the garbage
        # collector with a ResourceWarning): let its own timeouts end the exchange just
        # before the caller's deadline instead (the TCP connect and the handshake each
        # get the connect timeout).
        left = trio.current_effective_deadline() - trio.current_time() - CANCEL_MARGIN
        budget = max(0.01, min(TOKEN_TIMEOUT, left))
        timeouts = {"connect": budget / 2, "read": budget, "write": budget, "pool": budget}
        try:
            response = await self._pool.request(
                "POST",
                url,
                headers=[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("accept", "application/json"),
                ],
                content=body,
                extensions={"timeout": timeouts},
            )
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as error:
            chain = _chain(error)
            # httpcore's own message is often empty: the root cause says what happened.
            detail = next((str(e) for e in reversed(chain) if str(e)), type(error).__name__)
            if any(tls_refused(e) for e in chain):  # expired/unknown certificate: no retry
                return AuthFailed(f"OAuth token endpoint: TLS refused: {detail}")
            via = f" (via proxy {self._proxy.address})" if self._proxy is not None else ""
            return RetryLater(f"OAuth token endpoint{via}: {type(error).__name__}: {detail}")
        except httpcore.ProxyError as error:
            # httpcore's message is "<status> <reason>" of the proxy's answer to CONNECT.
            where = self._proxy.address if self._proxy is not None else "?"
            status = str(error).split(" ", 1)[0]
            text = f"OAuth token endpoint: proxy {where} answered CONNECT with {error}"
            if status.isdigit() and int(status) in REFUSING_STATUSES:
                return AuthFailed(text)
            return RetryLater(text)
        except httpcore.UnsupportedProtocol as error:
            return AuthFailed(f"OAuth token_uri unusable: {error}")
        if response.status >= 500 or response.status == 429:
            return RetryLater(f"OAuth token endpoint answered {response.status}")
        return fcm.parse_token_response(response.status, response.content)

    async def aclose(self) -> None:
        await self._pool.aclose()
