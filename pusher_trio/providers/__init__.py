"""Push providers: APNs (certificate and token auth) and FCM HTTP v1.

`Providers` implements `model.Pusher`. Lifecycle (pick one):

    async with Providers(ca_file=cfg.push.ca_file or None) as providers:
        outcome = await providers.send(app, device, message, expires_at=deadline)

    providers = Providers(ca_file=...)
    await nursery.start(providers.run)      # serves until the nursery is cancelled
    ...
    await providers.aclose()                # optional: GOAWAY now, before cancelling

Inside, each pool of HTTP/2 connections lives in the `Providers` nursery; leaving the
`async with` (or cancelling `run`) closes every connection with GOAWAY, bounded by
`close_timeout` and shielded, so shutdown does not hang on a dead peer.

`send` never raises for an answer Apple or Google documents, nor for network trouble:
it returns an Outcome. `RetryLater` answers are retried with jittered exponential
backoff (or the server's Retry-After) while the caller's cancel-scope deadline
(`trio.current_effective_deadline()`) and `expires_at` leave room; otherwise the last
`RetryLater` is returned as it is. A send that cannot finish before the caller's cancel
scope expires is simply cancelled (only its HTTP/2 stream is reset).

`start_send` is the first attempt of `send` without a task, when an APNs or FCM
connection is open with a free stream and the credential is at hand; the rest
(retries after backoff, replays, a new token) is `send(..., first=...)`'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Any

import attrs
import trio
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

from ..model import (
    App,
    AppleCertAuth,
    AppleTokenAuth,
    AuthFailed,
    Delivered,
    Device,
    FirebaseAuth,
    Outcome,
    PushMessage,
    Rejected,
    RetryLater,
    TokenInvalid,
    WebPushAuth,
    mask_token,
)
from . import apns, fcm, webpush
from .credentials import (
    CredentialError,
    load_apple_cert,
    load_apple_token_key,
    load_service_account,
)
from .http import HttpRequest, HttpResponse
from .http1 import Http1Client
from .oauth import OAuthClient
from .payload import TemplateError, check_template
from .proxy import Proxy
from .transport import (
    ConnectError,
    ConnectionLost,
    Origin,
    Pool,
    Replay,
    StreamReset,
    TransportError,
    make_ssl_context,
)

__all__ = [
    "CredentialError",
    "Providers",
    "TemplateError",
    "check_template",
    "load_apple_cert",
    "load_apple_token_key",
    "load_service_account",
    "outcome_name",
]

log = logging.getLogger("pusher_trio.providers")

OUTCOME_NAMES: dict[type, str] = {
    Delivered: "delivered",
    TokenInvalid: "token_invalid",
    RetryLater: "retry_later",
    AuthFailed: "auth_failed",
    Rejected: "rejected",
}


def outcome_name(outcome: Outcome) -> str:
    return OUTCOME_NAMES[type(outcome)]


def _fcm_request(
    app: App,
    auth: FirebaseAuth,
    device: Device,
    message: PushMessage,
    token: str,
    now: float,
    expires_at: float,
) -> HttpRequest | Rejected:
    """fcm.build_request, under the path of a base_url that has one (a stand-in's)."""
    request = fcm.build_request(app, device, message, token, now, expires_at)
    prefix = urllib.parse.urlsplit(auth.base_url).path.rstrip("/")
    if prefix and not isinstance(request, Rejected):
        request = attrs.evolve(request, path=prefix + request.path)
    return request


def _fingerprint(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


@attrs.frozen
class PoolKey:
    """One pool per (origin, credential); the fingerprint changes when the secret does."""

    kind: str
    origin: Origin
    credential: str


@attrs.define
class _FcmAccount:
    cache: fcm.AccessTokenCache = attrs.Factory(fcm.AccessTokenCache)
    lock: trio.Lock = attrs.Factory(trio.Lock)
    failure: Outcome | None = None  # the last exchange failed: why, until failure_until
    failure_until: float = 0.0


# Pushes queued behind a failed OAuth exchange get its outcome for this long instead of
# each trying again in turn (a token endpoint that hangs cost every queued push its
# whole deadline, one exchange after the other).
OAUTH_FAILURE_TTL = 1.0


class Providers:
    """The `model.Pusher` of the service: one HTTP/2 pool per (host, credential)."""

    def __init__(
        self,
        ca_file: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        max_connections: int = 4,
        connect_timeout: float = 10.0,
        ping_interval: float = 60.0,
        ping_timeout: float = 10.0,
        idle_timeout: float = 600.0,
        proxy: Proxy | None = None,
        retry_base: float = 0.25,
        retry_cap: float = 8.0,
        close_timeout: float = 3.0,
    ) -> None:
        self.ca_file = ca_file or None
        self._clock = clock
        self._pool_options: dict[str, Any] = {
            "max_connections": max_connections,
            "connect_timeout": connect_timeout,
            "ping_interval": ping_interval,
            "ping_timeout": ping_timeout,
            "idle_timeout": idle_timeout,
            "proxy": proxy,
        }
        self.proxy = proxy
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._close_timeout = close_timeout
        self._pools: dict[PoolKey, Pool] = {}
        self._app_pools: dict[str, PoolKey] = {}
        self._last_app: dict[str, tuple[App, Pool]] = {}
        self._provider_tokens = apns.ProviderTokenCache()
        self._vapid_tokens = webpush.VapidTokenCache()
        self._http1: Http1Client | None = None
        self._http1_origins: set[Origin] = set()  # push services without HTTP/2
        self._fcm_accounts: dict[str, _FcmAccount] = {}
        self._oauth: OAuthClient | None = None
        self._nursery: trio.Nursery | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._closed = False
        self.pushes: Counter[str] = Counter()
        self.retries = 0

    # --- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Providers:
        stack = contextlib.AsyncExitStack()
        self._nursery = await stack.enter_async_context(trio.open_nursery())
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        assert self._stack is not None
        return await self._stack.__aexit__(exc_type, exc, tb)

    async def run(
        self, *, task_status: trio.TaskStatus[Providers] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """`await nursery.start(providers.run)`: serve until cancelled, then close cleanly."""
        async with self:
            task_status.started(self)
            await trio.sleep_forever()

    async def aclose(self) -> None:
        """GOAWAY on every connection (after its open streams), then stop the pools."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(self._close_timeout):
            async with trio.open_nursery() as nursery:
                for pool in self._pools.values():
                    nursery.start_soon(pool.aclose)
            if self._oauth is not None:
                await self._oauth.aclose()
            if self._http1 is not None:
                await self._http1.aclose()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # --- the Pusher protocol ---------------------------------------------------------

    async def send(
        self,
        app: App,
        device: Device,
        message: PushMessage,
        *,
        expires_at: float,
        first: RetryLater | None = None,
    ) -> Outcome:
        """Push to one device; `first`: a first attempt's answer (`start_send`), go on from it."""
        attempt = 0
        outcome: Outcome | None = first
        while True:
            if outcome is None:
                try:
                    outcome = await self._send_once(app, device, message, expires_at)
                except (TransportError, trio.TooSlowError) as error:  # pragma: no cover - belt
                    outcome = RetryLater(f"transport: {error}")
            if not isinstance(outcome, RetryLater):
                break
            delay = self._retry_delay(outcome, attempt)
            deadline = trio.current_effective_deadline()
            if trio.current_time() + delay >= deadline or self._clock() + delay >= expires_at:
                break
            attempt += 1
            self.retries += 1
            log.info(
                "push to %s of %s: %s; retry %d in %.2fs",
                mask_token(device.token),
                app.app_id,
                outcome.reason,
                attempt,
                delay,
            )
            await trio.sleep(delay)
            outcome = None
        return self._ended(app, device, outcome)

    def _ended(self, app: App, device: Device, outcome: Outcome) -> Outcome:
        self.pushes[outcome_name(outcome)] += 1
        if not isinstance(outcome, Delivered):
            log.info("push to %s of %s: %r", mask_token(device.token), app.app_id, outcome)
        return outcome

    def start_send(
        self,
        app: App,
        device: Device,
        message: PushMessage,
        *,
        expires_at: float,
        answered: Callable[[Outcome | None], None],
    ) -> Callable[[], None] | None:
        """`send` without a task, when the push can go out at once on an open connection.

        Returns a function that gives the push up (its stream is reset, `answered` is
        not called), or None when nothing was sent: then use `send`. `answered` runs
        once from the connection's reader task with the final Outcome, or with None or
        a `RetryLater` when the push is not done: finish it with
        `send(..., first=that)` (None: the server did not process it, or a new token
        is needed; a `RetryLater` is retried after its backoff).
        """
        if self._nursery is None or self._closed:
            return None
        try:
            if app.type == "apple" and isinstance(app.auth, AppleCertAuth | AppleTokenAuth):
                pool = self._pool_for(app)
                now = self._clock()
                token = None
                if isinstance(app.auth, AppleTokenAuth):
                    token = self._provider_tokens.token(app.auth, now)
                request = apns.build_request(app, device, message, token, now, expires_at)
                interpret: Callable[[HttpResponse], Outcome | None] = self._apns_answer(app, token)
            elif app.type == "firebase" and isinstance(app.auth, FirebaseAuth):
                now = self._clock()
                account = self._fcm_accounts.get(app.auth.service_account["client_email"])
                access = account.cache.get(now) if account is not None else None
                if access is None:
                    return None  # the OAuth exchange is `send`'s
                pool = self._pool_for(app)
                request = _fcm_request(app, app.auth, device, message, access, now, expires_at)
                interpret = self._fcm_answer(app.auth, access)
            else:
                return None
        except (OSError, ValueError, TypeError, UnsupportedAlgorithm):
            return None  # `send` reports it as the outcome it is
        if isinstance(request, Rejected):
            return None

        def finished(stream: Any) -> None:
            outcome: Outcome | None
            try:
                error = stream.error
                if error is None:
                    outcome = interpret(stream.response())
                elif isinstance(error, Replay):
                    outcome = None
                elif isinstance(error, StreamReset):
                    outcome = Rejected(str(error))
                else:
                    outcome = RetryLater(str(error))
                if outcome is not None and not isinstance(outcome, RetryLater):
                    outcome = self._ended(app, device, outcome)
            except Exception as exc:  # never into the connection's reader task
                log.exception("push answer: %s", type(exc).__name__)
                outcome = self._ended(
                    app, device, Rejected(f"internal error: {type(exc).__name__}")
                )
            try:
                answered(outcome)
            except Exception:  # the caller's bug: it must not end this connection
                log.exception("push answer callback failed")

        started = pool.start(request, finished)
        return None if started is None else started.cancel

    def _apns_answer(self, app: App, token: str | None) -> Callable[[HttpResponse], Outcome | None]:
        def interpret(response: HttpResponse) -> Outcome | None:
            answer = apns.interpret_response(response.status, response.headers, response.body)
            if not isinstance(answer, apns.RefreshProviderToken):
                return answer
            if not (
                isinstance(app.auth, AppleTokenAuth)
                and token is not None
                and self._provider_tokens.refresh_after_rejection(app.auth, token, self._clock())
            ):
                return AuthFailed(f"403 {answer.reason}")
            return None  # `send` pushes again with the new token

        return interpret

    def _fcm_answer(
        self, auth: FirebaseAuth, access: str
    ) -> Callable[[HttpResponse], Outcome | None]:
        def interpret(response: HttpResponse) -> Outcome | None:
            answer = fcm.interpret_response(response.status, response.headers, response.body)
            if not isinstance(answer, fcm.RefreshAccessToken):
                return answer
            self._fcm_accounts[auth.service_account["client_email"]].cache.invalidate(access)
            return None  # `send` fetches a new access token and pushes again

        return interpret

    def _retry_delay(self, outcome: RetryLater, attempt: int) -> float:
        if outcome.after is not None:
            return outcome.after + random.uniform(0, self._retry_base)
        backoff: float = min(self._retry_cap, self._retry_base * 2.0**attempt)
        return backoff * random.uniform(0.5, 1.0)

    async def _send_once(
        self, app: App, device: Device, message: PushMessage, expires_at: float
    ) -> Outcome:
        if app.type == "apple" and isinstance(app.auth, AppleCertAuth | AppleTokenAuth):
            return await self._send_apns(app, device, message, expires_at)
        if app.type == "firebase" and isinstance(app.auth, FirebaseAuth):
            return await self._send_fcm(app, app.auth, device, message, expires_at)
        if app.type == "webpush" and isinstance(app.auth, WebPushAuth):
            return await self._send_webpush(app, app.auth, device, message, expires_at)
        return Rejected(f"app {app.app_id}: type {app.type} does not fit its credentials")

    async def _request(self, pool: Pool, request: HttpRequest) -> HttpResponse | Outcome:
        try:
            return await pool.request(request)
        except StreamReset as error:
            return Rejected(str(error))
        except ConnectError as error:
            return self._connect_outcome(error)
        except ConnectionLost as error:
            return RetryLater(str(error))

    @staticmethod
    def _connect_outcome(error: ConnectError) -> Outcome:
        if error.tls_refused:
            return AuthFailed(f"TLS refused: {error}")
        if error.proxy_refused:
            return AuthFailed(str(error))
        return RetryLater(str(error), error.retry_after)

    async def _send_apns(
        self, app: App, device: Device, message: PushMessage, expires_at: float
    ) -> Outcome:
        try:
            pool = self._pool_for(app)
        except (OSError, ValueError) as error:
            return AuthFailed(f"app {app.app_id}: {error}")
        refreshed = False
        while True:
            now = self._clock()
            token: str | None = None
            if isinstance(app.auth, AppleTokenAuth):
                try:
                    token = self._provider_tokens.token(app.auth, now)
                except (ValueError, TypeError, UnsupportedAlgorithm) as error:
                    return AuthFailed(f"app {app.app_id}: signing key: {error}")
            request = apns.build_request(app, device, message, token, now, expires_at)
            if isinstance(request, Rejected):
                return request
            response = await self._request(pool, request)
            if not isinstance(response, HttpResponse):
                return response
            answer = apns.interpret_response(response.status, response.headers, response.body)
            if not isinstance(answer, apns.RefreshProviderToken):
                return answer
            assert isinstance(app.auth, AppleTokenAuth) and token is not None
            if refreshed or not self._provider_tokens.refresh_after_rejection(
                app.auth, token, self._clock()
            ):
                return AuthFailed(f"403 {answer.reason}")
            refreshed = True

    async def _access_token(self, auth: FirebaseAuth) -> str | Outcome:
        account = self._fcm_accounts.setdefault(auth.service_account["client_email"], _FcmAccount())
        token = account.cache.get(self._clock())
        if token is not None:
            return token
        async with account.lock:
            token = account.cache.get(self._clock())
            if token is not None:
                return token
            if account.failure is not None and trio.current_time() < account.failure_until:
                return account.failure
            if self._oauth is None:
                try:
                    self._oauth = OAuthClient(self.ca_file, self.proxy)
                except (OSError, ValueError) as error:  # ca_file unreadable
                    return AuthFailed(f"TLS setup for the OAuth exchange: {error}")
            now = self._clock()
            result = await self._oauth.fetch(auth.service_account, now)
            if isinstance(result, tuple):
                account.cache.store(result[0], result[1], now)
                account.failure = None
                return result[0]
            account.failure, account.failure_until = result, trio.current_time() + OAUTH_FAILURE_TTL
            return result

    async def _send_fcm(
        self, app: App, auth: FirebaseAuth, device: Device, message: PushMessage, expires_at: float
    ) -> Outcome:
        try:
            pool = self._pool_for(app)
        except (OSError, ValueError) as error:
            return AuthFailed(f"app {app.app_id}: {error}")
        refreshed = False
        while True:
            token = await self._access_token(auth)
            if not isinstance(token, str):
                return token
            request = _fcm_request(app, auth, device, message, token, self._clock(), expires_at)
            if isinstance(request, Rejected):
                return request
            response = await self._request(pool, request)
            if not isinstance(response, HttpResponse):
                return response
            answer = fcm.interpret_response(response.status, response.headers, response.body)
            if not isinstance(answer, fcm.RefreshAccessToken):
                return answer
            if refreshed:
                return AuthFailed(answer.reason)
            refreshed = True
            self._fcm_accounts[auth.service_account["client_email"]].cache.invalidate(token)

    async def _send_webpush(
        self, app: App, auth: WebPushAuth, device: Device, message: PushMessage, expires_at: float
    ) -> Outcome:
        """RFC 8030/8291/8292: one pool per push service origin (the VAPID signature is
        per request, so browsers of every app share the service's connections)."""
        try:
            subscription = webpush.parse_subscription(device)
        except webpush.SubscriptionError as error:
            return Rejected(f"web push subscription: {error}")
        now = self._clock()
        try:
            vapid = self._vapid_tokens.header(auth, subscription.origin, now)
        except (ValueError, TypeError, UnsupportedAlgorithm) as error:
            return AuthFailed(f"app {app.app_id}: VAPID key: {error}")
        # RFC 8291 §3.1: a new ephemeral key (and salt) for every message.
        ephemeral = ec.generate_private_key(ec.SECP256R1())
        request = webpush.build_request(
            app, device, message, vapid, now, expires_at, ephemeral, os.urandom(16)
        )
        if isinstance(request, Rejected):
            return request
        origin = Origin(subscription.host, subscription.port)
        response = await self._webpush_request(origin, request, app.app_id)
        if not isinstance(response, HttpResponse):
            return response
        return webpush.interpret_response(response.status, response.headers, response.body)

    async def _webpush_request(
        self, origin: Origin, request: HttpRequest, app_id: str
    ) -> HttpResponse | Outcome:
        """HTTP/2 (the shared transport) unless the push service did not negotiate h2:
        then, from that answer on, HTTP/1.1 for that origin (`http1.py`)."""
        if origin not in self._http1_origins:
            try:
                pool = self._pool_by_key(PoolKey("webpush", origin, ""), None, app_id)
            except (OSError, ValueError) as error:
                return AuthFailed(f"app {app_id}: {error}")
            try:
                return await pool.request(request)
            except ConnectError as error:
                if not error.no_h2:
                    return self._connect_outcome(error)
                log.info("%s offers no HTTP/2: Web Push over HTTP/1.1", origin.authority)
                self._http1_origins.add(origin)
            except StreamReset as error:
                return Rejected(str(error))
            except ConnectionLost as error:
                return RetryLater(str(error))
        if self._http1 is None:
            try:
                self._http1 = Http1Client(
                    self.ca_file, self.proxy, self._pool_options["idle_timeout"]
                )
            except (OSError, ValueError) as error:  # ca_file unreadable
                return AuthFailed(f"TLS setup for HTTP/1.1: {error}")
        return await self._http1.request(origin, request)

    # --- pools ---------------------------------------------------------------------

    def _key_for(self, app: App) -> PoolKey:
        auth = app.auth
        if isinstance(auth, AppleCertAuth):
            host, port = apns.split_host(app.host)
            return PoolKey("apns-cert", Origin(host, port), _fingerprint(auth.pem))
        if isinstance(auth, AppleTokenAuth):
            host, port = apns.split_host(app.host)
            ident = _fingerprint(auth.team_id, auth.key_id, auth.key_pem)
            return PoolKey("apns-token", Origin(host, port), ident)
        if not isinstance(auth, FirebaseAuth):
            raise ValueError(f"app {app.app_id}: no pool per app for {app.type}")
        parts = urllib.parse.urlsplit(auth.base_url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"FCM base URL must be https://host[:port], not {auth.base_url!r}")
        origin = Origin(parts.hostname, parts.port or 443)
        return PoolKey("fcm", origin, _fingerprint(auth.service_account.get("client_email", "")))

    def _pool_for(self, app: App) -> Pool:
        if self._nursery is None or self._closed:
            raise RuntimeError("Providers is not running (use `async with Providers(...)`)")
        # The store hands out the same App object every time: skip hashing its secret.
        seen = self._last_app.get(app.app_id)
        if seen is not None and seen[0] is app and not seen[1].closed:
            return seen[1]
        pool = self._find_pool(app)
        self._last_app[app.app_id] = (app, pool)
        return pool

    def _find_pool(self, app: App) -> Pool:
        assert self._nursery is not None
        key = self._key_for(app)
        previous = self._app_pools.get(app.app_id)
        if previous is not None and previous != key:
            self._retire(app.app_id, previous)
        self._app_pools[app.app_id] = key
        client_pem = app.auth.pem if isinstance(app.auth, AppleCertAuth) else None
        return self._pool_by_key(key, client_pem, app.app_id)

    def _pool_by_key(self, key: PoolKey, client_pem: str | None, app_id: str) -> Pool:
        if self._nursery is None or self._closed:
            raise RuntimeError("Providers is not running (use `async with Providers(...)`)")
        pool = self._pools.get(key)
        if pool is None:
            context = make_ssl_context(self.ca_file, client_pem)
            pool = Pool(key.origin, context, self._nursery, **self._pool_options)
            self._pools[key] = pool
            log.info("new %s pool for %s (app %s)", key.kind, key.origin.authority, app_id)
        return pool

    def _retire(self, app_id: str, key: PoolKey) -> None:
        """The app's credentials changed: close the old pool unless another app uses it."""
        del self._app_pools[app_id]
        self._last_app.pop(app_id, None)
        if key in self._app_pools.values():
            return
        pool = self._pools.pop(key, None)
        if pool is not None and self._nursery is not None:
            log.info("credentials of %s changed: closing its old pool", app_id)
            self._nursery.start_soon(pool.aclose)

    def forget_app(self, app_id: str) -> None:
        """The app was removed: close its pool (GOAWAY) unless another app shares it."""
        for account in self._fcm_accounts.values():  # new credentials: try OAuth again now
            account.failure = None
        key = self._app_pools.get(app_id)
        if key is not None:
            self._retire(app_id, key)

    def statistics(self) -> dict[str, Any]:
        """`pools`, `connections` (total), `connections_per_pool` ("kind origin cred" ->
        count), `pushes` (count per outcome: delivered, token_invalid, retry_later,
        auth_failed, rejected), `retries`, `provider_tokens_generated`, `oauth_exchanges`,
        `proxy` (host:port of `[push] proxy`, never its credentials, or None),
        and `pool_details` (per pool: connects, connect_failures, barren_connections
        (connected, then closed without answering), replays, goaways, idle_closes (closed
        after `idle_timeout` unused), open streams)."""
        pools = [
            {"kind": key.kind, "credential": key.credential[:8], **pool.statistics()}
            for key, pool in self._pools.items()
        ]
        return {
            "pools": len(pools),
            "connections": sum(p["connections"] for p in pools),
            "connections_per_pool": {
                f"{p['kind']} {p['origin']} {p['credential']}": p["connections"] for p in pools
            },
            "pushes": {name: self.pushes.get(name, 0) for name in OUTCOME_NAMES.values()},
            "retries": self.retries,
            "provider_tokens_generated": self._provider_tokens.generated,
            "oauth_exchanges": self._oauth.exchanges if self._oauth else 0,
            "vapid_tokens_generated": self._vapid_tokens.generated,
            "http1_origins": sorted(o.authority for o in self._http1_origins),
            "http1_requests": self._http1.requests if self._http1 else 0,
            "proxy": self.proxy.address if self.proxy is not None else None,
            "pool_details": pools,
        }
