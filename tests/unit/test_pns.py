"""RFC 8599 at REGISTER time: `check` decides 555 / 400 / ok and the Feature-Caps (pure + RPC)."""

from __future__ import annotations

import pytest
import trio

from pusher_trio.control.jsonrpc import InvalidParams
from pusher_trio.pns import check_contacts, feature_caps, served_providers
from pusher_trio.service import Service
from pusher_trio.store import MemoryStore
from tests.unit.control.fakes import FakePusher, apple_app, firebase_app

TOKEN = "ab" * 32
APNS = f"<sip:alice@192.0.2.1:5070;pn-provider=apns;pn-prid={TOKEN};pn-param=TEAM123.com.example.phone.voip>"
FCM = "<sip:bob@192.0.2.2;pn-provider=fcm;pn-prid=fcm-token-123;pn-param={param}>"


def service(*apps: object) -> Service:
    store = MemoryStore()
    for app in apps:
        store.put_app(app)  # type: ignore[arg-type]
    return Service(store, FakePusher())


def check(svc: Service, contact: str, **kw: object) -> dict[str, object]:
    async def run() -> dict[str, object]:
        result = await svc.call("check", {"contact": contact, **kw})
        assert isinstance(result, dict)
        return result

    return trio.run(run)


def test_feature_caps_value() -> None:
    assert feature_caps([]) == ""
    assert feature_caps(["fcm", "apns", "fcm"]) == '*;+sip.pns="apns,fcm"'
    assert feature_caps(["apns"], ["BKey-_"], 300) == (
        '*;+sip.pns="apns";+sip.vapid="BKey-_";+sip.pnsreg="300"'
    )


def test_served_providers_follow_the_apps() -> None:
    assert served_providers([]) == []
    assert served_providers([firebase_app(), apple_app(), apple_app("x")]) == ["apns", "fcm"]


def test_apns_with_its_app_is_ok_with_feature_caps() -> None:
    result = check(service(apple_app()), APNS)
    assert result["status"] == "ok"
    assert result["feature_caps"] == '*;+sip.pns="apns"'


def test_fcm_by_project_id_or_number() -> None:
    svc = service(apple_app(), firebase_app())
    for param in ("phone-fcm", "phone-project", "4242"):
        result = check(svc, FCM.format(param=param))
        assert result["status"] == "ok", param
        assert result["feature_caps"] == '*;+sip.pns="apns,fcm"'


def test_provider_without_any_app_is_555() -> None:
    result = check(service(apple_app()), FCM.format(param="phone-project"))
    assert result["status"] == "unsupported"
    assert "fcm" in str(result["reason"])


def test_unknown_provider_is_555() -> None:
    contact = "<sip:c@192.0.2.3;pn-provider=acme;pn-prid=x;pn-param=y>"
    result = check(service(apple_app(), firebase_app()), contact)
    assert result == {
        "status": "unsupported",
        "reason": "pn-provider acme is not served here",
        "feature_caps": "",
        "providers": [],
    }


def test_no_app_for_the_bundle_is_555() -> None:
    result = check(service(apple_app("com.other.app")), APNS)
    assert result["status"] == "unsupported"
    assert result["reason"] == "no apns app configured for com.example.phone"


def test_app_of_the_wrong_type_is_555() -> None:
    # an apple app whose id equals the FCM pn-param cannot push to an Android phone
    result = check(service(apple_app("phone-project")), FCM.format(param="phone-project"))
    assert result["status"] == "unsupported"


def test_missing_prid_is_invalid_not_unsupported() -> None:
    contact = "<sip:alice@192.0.2.1;pn-provider=apns;pn-param=TEAM123.com.example.phone.voip>"
    assert check(service(apple_app()), contact)["status"] == "invalid"


def test_sandbox_provider_name_is_apns() -> None:
    contact = APNS.replace("pn-provider=apns", "pn-provider=apns.dev")
    assert check(service(apple_app()), contact)["status"] == "ok"


def test_removal_is_never_refused() -> None:
    svc = service()
    assert check(svc, APNS + ";expires=0")["status"] == "ok"
    assert check(svc, APNS, expires=0)["status"] == "ok"
    assert check(svc, APNS, expires="0")["status"] == "ok"
    assert check(svc, "*", expires=0)["status"] == "ok"
    assert check(svc, APNS, expires=600)["status"] == "unsupported"


def test_legacy_params_are_not_rfc8599_business() -> None:
    contact = f"<sip:alice@192.0.2.1;pn-type=apple;pn-tok={TOKEN};app-id=nope>"
    assert check(service(), contact) == {
        "status": "ok",
        "reason": "",
        "feature_caps": "",
        "providers": [],
    }


def test_first_refused_contact_decides() -> None:
    good = APNS
    bad = "<sip:alice@192.0.2.9;pn-provider=webpush;pn-prid=https%3A%2F%2Fx;pn-param=k>"
    assert check(service(apple_app()), f"{good}, {bad}")["status"] == "unsupported"


def test_unparsable_contact_is_invalid() -> None:
    assert check_contacts("<sip:", apps={}, app_for=lambda d: None).status == "invalid"


def test_counted_in_status() -> None:
    svc = service(apple_app())
    check(svc, APNS)
    check(svc, FCM.format(param="x"))
    assert svc.statistics()["checks"] == {"ok": 1, "unsupported": 1}


@pytest.mark.parametrize(
    "params", [{}, {"contact": ""}, {"contact": 3}, {"contact": "<sip:a@b>", "expires": "x"}]
)
def test_bad_params(params: dict[str, object]) -> None:
    svc = service()

    async def run() -> None:
        with pytest.raises(InvalidParams):
            await svc.call("check", params)

    trio.run(run)


def test_pnsreg_only_to_a_ua_that_asked() -> None:
    svc = service(apple_app())
    assert svc.pnsreg == 120  # binding-refresh pushes are on by default
    assert check(svc, APNS + ";+sip.pnsreg")["feature_caps"] == (
        '*;+sip.pns="apns";+sip.pnsreg="120"'
    )
    assert check(svc, APNS)["feature_caps"] == '*;+sip.pns="apns"'
    svc.pnsreg = None  # [push] binding_refresh_lead = 0
    assert check(svc, APNS + ";+sip.pnsreg")["feature_caps"] == '*;+sip.pns="apns"'


def test_webpush_with_its_app_is_ok_and_carries_the_vapid_key() -> None:
    from pusher_trio.model import App, WebPushAuth
    from pusher_trio.providers.webpush import generate_vapid_key, vapid_public_key

    pem = generate_vapid_key()
    app = App("org.example.webphone", "webpush", WebPushAuth(pem, "mailto:ops@example.com"))
    contact = (
        "<sip:carol@192.0.2.4;transport=ws;pn-provider=webpush;"
        "pn-prid=https%3A%2F%2Fpush.example.net%2Fsub%2Fabc>"
    )
    result = check(service(apple_app(), app), contact)
    assert result["status"] == "ok", result
    assert result["feature_caps"] == (
        f'*;+sip.pns="apns,webpush";+sip.vapid="{vapid_public_key(pem)}"'
    )
    # without a Web Push app, the same browser gets 555
    assert check(service(apple_app()), contact)["status"] == "unsupported"
