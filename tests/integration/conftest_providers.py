"""Helpers for the provider integration tests (imported explicitly; not a pytest conftest)."""

from __future__ import annotations

import secrets
import time

from pusher_trio.model import App, AppleCertAuth, AppleTokenAuth, Device, FirebaseAuth, PushType
from pusher_trio.standins.fake_apns import FakeApns
from pusher_trio.standins.fake_fcm import FakeFcm

BUNDLE = "com.example.phone"


def apple_token() -> str:
    return secrets.token_hex(32)


def apple_device(token: str | None = None, push_type: PushType | None = None) -> Device:
    token = token or apple_token()
    return Device(
        aor="alice@example.com",
        device_id=token[:8],
        type="apple",
        app=BUNDLE,
        token=token,
        push_type=push_type,
    )


def cert_app(server: FakeApns, bundle: str = BUNDLE, push_type: PushType = "alert") -> App:
    return App(
        app_id=bundle,
        type="apple",
        auth=AppleCertAuth(server.client_pem(bundle)),
        host=server.address,
        push_type=push_type,
    )


def token_app(server: FakeApns, bundle: str = BUNDLE) -> App:
    p8, key_id, team_id = server.new_signing_key()
    return App(
        app_id=bundle,
        type="apple",
        auth=AppleTokenAuth(key_pem=p8, key_id=key_id, team_id=team_id),
        host=server.address,
    )


def fcm_app(server: FakeFcm, project: str = "demo-project") -> App:
    account = server.new_service_account(project)
    return App(
        app_id="com.example.droid",
        type="firebase",
        auth=FirebaseAuth(server.service_account(account), base_url=server.base_url),
    )


def fcm_device(token: str | None = None) -> Device:
    token = token or "fcm-" + secrets.token_urlsafe(40)
    return Device(
        aor="bob@example.com",
        device_id=token[:8],
        type="firebase",
        app="com.example.droid",
        token=token,
    )


def expires(seconds: float = 20.0) -> float:
    return time.time() + seconds


class Clock:
    """A wall clock that tests can move forward (JWT lifetime rules)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset
