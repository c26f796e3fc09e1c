"""Test doubles for the push service: a scriptable Pusher and ready-made apps and devices."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from pusher_trio.model import (
    App,
    AppleCertAuth,
    Delivered,
    Device,
    FirebaseAuth,
    Outcome,
    PushMessage,
)
from pusher_trio.registrations import Registered
from pusher_trio.service import Service
from pusher_trio.store import MemoryStore
from pusher_trio.waiters import Waiters

APPLE_TOKEN = "a1b2c3" + "0" * 52 + "d4e5f6"  # 64 hex characters, like an APNs token
APPLE_TOKEN_2 = "f00dba" + "1" * 52 + "beef42"
FCM_TOKEN = "fcmTok:APA91b" + "x" * 120 + "Zz99"
PEM_SECRET = "-----BEGIN PRIVATE KEY-----SECRETSECRET-----END PRIVATE KEY-----"


def apple_app(app_id: str = "com.example.phone", push_type: str = "alert") -> App:
    return App(app_id, "apple", AppleCertAuth(pem=PEM_SECRET), push_type=push_type)  # type: ignore[arg-type]


def firebase_app(app_id: str = "phone-fcm", project_id: str = "phone-project") -> App:
    account = {"project_id": project_id, "private_key": PEM_SECRET, "client_email": "x@y"}
    return App(app_id, "firebase", FirebaseAuth(service_account=account, project_number="4242"))


def apple_device(
    aor: str = "alice@example.com",
    token: str = APPLE_TOKEN,
    app: str = "com.example.phone",
    instance: str | None = None,
) -> Device:
    return Device(
        aor=aor,
        device_id=instance or token,
        type="apple",
        app=app,
        token=token,
        contact=f"sip:{aor.split('@')[0]}@10.0.0.7:5060;pn-provider=apns;pn-prid={token};pn-param=TEAM.{app}",
        user_agent="Phone/1.0",
        last_registered=1_700_000_000.0,
    )


def fcm_device(aor: str = "bob@example.com", app: str = "phone-project") -> Device:
    return Device(
        aor=aor,
        device_id="<urn:uuid:00000000-0000-0000-0000-000000000001>",
        type="firebase",
        app=app,
        token=FCM_TOKEN,
        contact=f"sip:bob@10.0.0.8;pn-provider=fcm;pn-prid={FCM_TOKEN};pn-param={app}",
        extra={"source": "rfc8599", "project": app},
    )


def registered(aor: str, devices: list[Device], at: float = 2e9, contact: str = "") -> Registered:
    contact = contact or (devices[0].contact if devices else f"sip:{aor}")
    return Registered(aor=aor, contact=contact, devices=devices, at=at)


@attrs.define
class Sent:
    app: App
    device: Device
    message: PushMessage
    expires_at: float


class FakePusher:
    """Answers per token from `outcomes` (default Delivered) after `delay` seconds."""

    def __init__(
        self,
        outcomes: Mapping[str, Outcome | Exception] | None = None,
        *,
        delay: float = 0.0,
        stall: frozenset[str] = frozenset(),
        on_send: Callable[[Device], None] | None = None,
    ) -> None:
        self.outcomes = dict(outcomes or {})
        self.delay = delay
        self.stall = stall
        self.on_send = on_send
        self.sent: list[Sent] = []

    async def send(
        self, app: App, device: Device, message: PushMessage, *, expires_at: float
    ) -> Outcome:
        self.sent.append(Sent(app, device, message, expires_at))
        if self.on_send is not None:
            self.on_send(device)
        if device.token in self.stall:
            await trio.sleep_forever()
        if self.delay:
            await trio.sleep(self.delay)
        outcome = self.outcomes.get(device.token, Delivered("apns-id-1"))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@asynccontextmanager
async def running_service(
    store: MemoryStore | None = None,
    pusher: Any = None,
    *,
    max_waiting: int = 100,
    wait_timeout: float = 20.0,
    max_wait: float = 60.0,
    stats: Any = None,
) -> AsyncIterator[Service]:
    store = store if store is not None else MemoryStore()
    pusher = pusher if pusher is not None else FakePusher()
    service = Service(
        store,
        pusher,
        Waiters(max_waiting),
        {"wait_timeout": wait_timeout, "max_wait": max_wait, "max_waiting": max_waiting},
        stats,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        yield service
        nursery.cancel_scope.cancel()
