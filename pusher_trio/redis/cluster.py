"""Wiring of the Redis backend into one node (DESIGN §10): clients, store, wakes, status.

`Cluster.from_config(store_config)` checks the `[store]` keys (URL, password file,
secret key file) and builds two clients (commands; the events subscription) and the
`RedisStore`; `run()` keeps them going in the caller's nursery. The app hands the
sniffer `cluster.wrap_registered(service.on_registered)` so every registration this
node sees is also published, and `attach(service)` makes registrations seen by
other nodes wake this node's waits.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .client import RedisClient
from .protocol import parse_redis_url, read_password_file
from .store import RedisStore, load_secret_key

log = logging.getLogger("pusher_trio.redis")

STARTUP_WAIT = 2.0  # serve without Redis after this long (it may be down; DESIGN §10)


class Cluster:
    def __init__(self, store: RedisStore, subscriber: RedisClient) -> None:
        self.store = store
        self.client = store.client
        self.subscriber = subscriber
        self._replay: Callable[[], Awaitable[int]] | None = None  # set by attach()
        self.wake_replays = 0  # reconnects after which the waited-for AORs were re-read
        self.wakes_replayed = 0

    @classmethod
    def from_config(cls, store_config: Any, **store_options: Any) -> Cluster:
        """Raises RedisConfigError (a ValueError naming the problem, no secret) on bad keys."""
        address = parse_redis_url(store_config.redis_url)
        password = (
            read_password_file(store_config.redis_password_file)
            if store_config.redis_password_file
            else None
        )
        fernet = (
            load_secret_key(store_config.secret_key_file) if store_config.secret_key_file else None
        )
        client = RedisClient(address, password, name="redis")
        store = RedisStore(client, prefix=store_config.key_prefix, fernet=fernet, **store_options)
        subscriber = RedisClient(
            address,
            password,
            subscribe=[store.channel],
            on_message=store.on_message,
            name="redis-events",
        )
        return cls(store, subscriber)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Clients and store until cancelled; started once synced with Redis, or after
        STARTUP_WAIT when it does not answer."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.client.run)
            await nursery.start(self.subscriber.run)
            await nursery.start(self.store.run)
            nursery.start_soon(self._replay_missed_wakes)
            with trio.move_on_after(STARTUP_WAIT):
                while not self.store.synced:  # noqa: ASYNC110 (a one-off start-up wait)
                    await trio.sleep(0.01)
            task_status.started()

    async def _replay_missed_wakes(self) -> None:
        """Pub/sub drops what is published while this node's events connection is down
        (DESIGN §10): after each reconnect (subscribed again first, so nothing falls in
        between), the AORs this node waits for are read from Redis, and a record
        registered since a call was accepted wakes it."""
        seen = self.subscriber.generation
        while True:
            await self.subscriber.wait_reconnected(seen)
            first, seen = seen == 0, self.subscriber.generation
            if not first and self._replay is not None:
                self.wakes_replayed += await self._replay()
                self.wake_replays += 1

    def attach(self, service: Any) -> None:
        """Registrations seen by other nodes end this node's waits for that AOR."""
        from ..service import mask_contact

        waiters = service.waiters

        def remote_registered(aor: str, contact: str, at: float) -> None:
            if waiters.group(aor) is None:
                return
            names = service._token_param_names()
            waiters.notify_registered(aor, mask_contact(contact, (), names), at)

        def remote_rejected(aor: str, report: Any) -> None:
            group = waiters.group(aor)
            shared = group.shared if group is not None else None
            if shared is None or not shared.done.is_set():
                return
            if any(r is None or r["outcome"] != "pushed_by_peer" for r in shared.results):
                return  # this node pushed itself: its own outcome answers its calls
            waiters.fail(aor, peer_rejected(aor, report))

        async def replay() -> int:
            woken = 0
            for aor in waiters.aors():
                self.store.forget(aor)
                records = [d for d in await self.store.fetch_devices(aor) if d.bound]
                if not records or waiters.group(aor) is None:
                    continue
                latest = max(records, key=lambda d: d.last_registered)
                names = service._token_param_names()
                contact = mask_contact(latest.contact, (), names)
                woken += waiters.notify_registered(aor, contact, latest.last_registered)
            if woken:
                log.info("redis: %d calls woken by registrations missed while unsubscribed", woken)
            return woken

        self.store.on_remote_registered = remote_registered
        self.store.on_remote_rejected = remote_rejected
        self._replay = replay

    def wrap_registered(self, local: Callable[[Any], None]) -> Callable[[Any], None]:
        """The sniffer's hook: wake local waits, then tell the cluster."""
        store = self.store

        def on_registered(event: Any) -> None:
            local(event)
            store.publish_registered(event.aor, event.contact, event.at)

        return on_registered

    def statistics(self) -> dict[str, Any]:
        """`status` → "redis": the connection state (DESIGN §10: say when Redis is down)."""
        client = self.client.statistics()
        return {
            "up": int(client["state"] == "up"),  # the /metrics gauge pusher_redis_up
            "state": client["state"],
            "since": client["since"],
            "address": client["address"],
            "last_error": client["last_error"],
            "node_id": self.store.node_id,
            "connection": client,
            "events": self.subscriber.statistics(),
            "queued_writes": self.store.queued_writes,
            "wake_replays": self.wake_replays,
            "wakes_replayed": self.wakes_replayed,
        }


def peer_rejected(aor: str, report: Any) -> Any:
    """The PushRejected a call sharing another node's push answers with: that node's
    report (tokens masked there), as if this node had sent the push."""
    from ..control.jsonrpc import PushRejected

    data = report if isinstance(report, dict) else {}
    reasons = [str(r) for r in data.get("reasons", ()) if r]
    pushes = data.get("pushes") if isinstance(data.get("pushes"), list) else []
    return PushRejected(
        "every provider refused the push (sent by another node): "
        + "; ".join(dict.fromkeys(reasons)),
        data={"aor": aor, "reasons": reasons, "pushes": pushes, "pushed_by_peer": True},
    )


async def call_offline(store_config: Any, method: str, params: dict[str, Any], pusher: Any) -> Any:
    """What the CLI does when no daemon answers: run the method on a Redis-backed service
    (apps.* and config.*), then wait until Redis has the change. Raises RedisUnavailable
    when Redis does not answer (nothing is written then)."""

    cluster = Cluster.from_config(store_config)
    # the CLI prints one line on failure (DESIGN §11), not the clients' state warnings
    quiet = logging.getLogger("pusher_trio.redis")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return await _call_offline(cluster, method, params, pusher)
    finally:
        quiet.setLevel(level)


async def _call_offline(cluster: Cluster, method: str, params: dict[str, Any], pusher: Any) -> Any:
    from ..service import Service
    from .protocol import RedisUnavailable

    result: Any = None
    error: Exception | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(cluster.run)
        try:  # raised outside the nursery, so the caller sees the error itself
            if not cluster.store.synced:
                raise RedisUnavailable(
                    f"Redis at {cluster.client.address} does not answer:"
                    f" {cluster.client.last_error}"
                )
            result = await Service(cluster.store, pusher).call(method, params)
            with trio.move_on_after(STARTUP_WAIT):
                if not await cluster.store.aflush():
                    raise RedisUnavailable("Redis went away before the change was written")
        except Exception as exc:
            error = exc
        nursery.cancel_scope.cancel()
    if error is not None:
        raise error
    return result
