"""apps.add / apps.remove let a pusher that can (`ForgetsApps`) drop what it holds for an app."""

from __future__ import annotations

import attrs
import trio

from pusher_trio.model import AppleCertAuth
from pusher_trio.service import ForgetsApps, Service
from pusher_trio.store import MemoryStore, unstructure_app
from tests.unit.control.fakes import FakePusher, apple_app, firebase_app


class ForgetfulPusher(FakePusher):
    def __init__(self) -> None:
        super().__init__()
        self.forgotten: list[str] = []

    def forget_app(self, app_id: str) -> None:
        self.forgotten.append(app_id)


async def add(service: Service, app: object) -> None:
    await service.call("apps.add", {"app": unstructure_app(app)})  # type: ignore[arg-type]


def test_the_optional_protocol() -> None:
    assert isinstance(ForgetfulPusher(), ForgetsApps)
    assert not isinstance(FakePusher(), ForgetsApps)


async def test_remove_forgets_the_app() -> None:
    pusher = ForgetfulPusher()
    service = Service(MemoryStore(), pusher)
    with trio.fail_after(5):
        await add(service, firebase_app())
        assert pusher.forgotten == []
        assert await service.call("apps.remove", {"app_id": "phone-fcm"}) == {"removed": True}
    assert pusher.forgotten == ["phone-fcm"]


async def test_replacing_credentials_or_host_forgets_the_old_connection() -> None:
    pusher = ForgetfulPusher()
    service = Service(MemoryStore(), pusher)
    app = apple_app()
    with trio.fail_after(5):
        await add(service, app)
        await add(service, attrs.evolve(app, push_type="voip", payload_template="{}"))
        assert pusher.forgotten == []  # same host and credentials: the pool still serves
        await add(service, attrs.evolve(app, auth=AppleCertAuth(pem="another certificate")))
        assert pusher.forgotten == [app.app_id]
        await add(service, attrs.evolve(app, host="api.development.push.apple.com"))
    assert pusher.forgotten == [app.app_id, app.app_id]


async def test_a_pusher_without_forget_app_is_fine() -> None:
    pusher = FakePusher()
    service = Service(MemoryStore(), pusher)
    with trio.fail_after(5):
        await add(service, apple_app())
        await add(service, attrs.evolve(apple_app(), host="h:1"))
        assert await service.call("apps.remove", {"app_id": apple_app().app_id}) == {
            "removed": True
        }
