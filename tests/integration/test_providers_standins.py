"""The stand-ins are strict: malformed requests get Apple's and Google's documented answers."""

from __future__ import annotations

import json
import time
import urllib.parse

import jwt
import pytest
import trio

from pusher_trio.providers.apns import load_signing_key, make_provider_token
from pusher_trio.providers.http import HttpRequest, HttpResponse
from pusher_trio.providers.transport import Origin, Pool, make_ssl_context
from pusher_trio.standins.certs import make_p8
from pusher_trio.standins.fake_apns import FakeApns
from pusher_trio.standins.fake_fcm import FakeFcm

TOKEN = "ab" * 32
GOOD = {
    "apns-push-type": "alert",
    "apns-topic": "com.example.app",
    "apns-priority": "10",
    "apns-expiration": "0",
}


def apns_request(
    headers: dict[str, str | None] | None = None,
    body: bytes = b'{"aps":{}}',
    path: str = f"/3/device/{TOKEN}",
    method: str = "POST",
) -> HttpRequest:
    merged = {**GOOD, **(headers or {})}
    return HttpRequest(
        method, path, tuple((k, v) for k, v in merged.items() if v is not None), body
    )


async def exchange(
    server: FakeApns | FakeFcm, requests: list[HttpRequest], client_pem: str | None = None
) -> list[HttpResponse]:
    async with trio.open_nursery() as nursery:
        pool = Pool(
            Origin("127.0.0.1", server.port), make_ssl_context(server.ca_file, client_pem), nursery
        )
        responses = [await pool.request(request) for request in requests]
        await pool.aclose()
        nursery.cancel_scope.cancel()
    return responses


def reason(response: HttpResponse) -> tuple[int, str]:
    return response.status, json.loads(response.body)["reason"] if response.body else ""


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (apns_request(), (200, "")),
        (apns_request({"apns-push-type": "voip"}), (400, "InvalidPushType")),
        (apns_request({"apns-topic": "com.example.app.voip"}), (400, "BadTopic")),
        (apns_request({"apns-topic": None}), (400, "MissingTopic")),
        (apns_request({"apns-topic": "com.other.app"}), (400, "TopicDisallowed")),
        (apns_request({"apns-priority": "7"}), (400, "BadPriority")),
        (apns_request({"apns-expiration": "soon"}), (400, "BadExpirationDate")),
        (apns_request({"apns-collapse-id": "x" * 65}), (400, "BadCollapseId")),
        (apns_request({"apns-id": "not-a-uuid"}), (400, "BadMessageId")),
        (apns_request({"apns-push-type": "nonsense"}), (400, "InvalidPushType")),
        (apns_request(body=b""), (400, "PayloadEmpty")),
        (apns_request(body=b"{" + b" " * 4096 + b"}"), (413, "PayloadTooLarge")),
        (apns_request(path="/3/device/xyz"), (400, "BadDeviceToken")),
        (apns_request(path="/4/device/" + TOKEN), (404, "BadPath")),
        (apns_request(method="PUT"), (405, "MethodNotAllowed")),
    ],
)
async def test_apns_standin_checks_requests(
    request_: HttpRequest, expected: tuple[int, str], nursery: trio.Nursery
) -> None:
    server = FakeApns(topics={"com.example.app"})
    with trio.fail_after(10):
        await nursery.start(server.serve)
        (response,) = await exchange(server, [request_], server.client_pem("com.example.app"))
    assert reason(response) == expected
    if expected[0] == 200:
        assert response.header("apns-id")


async def test_apns_standin_token_auth_rules(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        p8, key_id, team_id = server.new_signing_key()
        key = load_signing_key(p8)
        now = time.time()
        good = make_provider_token(key, key_id, team_id, now)
        wrong_kid = make_provider_token(key, "ZZZZZZZZZZ", team_id, now)
        wrong_team = make_provider_token(key, key_id, "ZZZZZZZZZZ", now)
        other_key = make_provider_token(load_signing_key(make_p8()[0]), key_id, team_id, now)
        old = make_provider_token(key, key_id, team_id, now - 3700)
        newer = make_provider_token(key, key_id, team_id, now + 1)
        responses = await exchange(
            server,
            [
                apns_request(),
                apns_request({"authorization": f"bearer {wrong_kid}"}),
                apns_request({"authorization": f"bearer {wrong_team}"}),
                apns_request({"authorization": f"bearer {other_key}"}),
                apns_request({"authorization": f"bearer {old}"}),
                apns_request({"authorization": f"bearer {good}"}),
                apns_request({"authorization": f"bearer {newer}"}),  # changed within 20 minutes
            ],
        )
    assert [reason(r) for r in responses] == [
        (403, "MissingProviderToken"),
        (403, "InvalidProviderToken"),
        (403, "InvalidProviderToken"),
        (403, "InvalidProviderToken"),
        (403, "ExpiredProviderToken"),
        (200, ""),
        (429, "TooManyProviderTokenUpdates"),
    ]
    assert jwt.get_unverified_header(good)["kid"] == key_id


async def test_fcm_standin_checks_grant_and_message(nursery: trio.Nursery) -> None:
    server = FakeFcm()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        account = server.service_account(server.new_service_account("p1"))
        from pusher_trio.providers import fcm

        _, form = fcm.token_request(account, time.time())
        bad_grant = urllib.parse.urlencode({"grant_type": "password", "assertion": "x"}).encode()
        token_headers = (("content-type", "application/x-www-form-urlencoded"),)
        grant, refused = await exchange(
            server,
            [
                HttpRequest("POST", "/token", token_headers, form),
                HttpRequest("POST", "/token", token_headers, bad_grant),
            ],
        )
        access = json.loads(grant.body)["access_token"]

        def send(message: object, bearer: str = access) -> HttpRequest:
            return HttpRequest(
                "POST",
                "/v1/projects/p1/messages:send",
                (("authorization", f"Bearer {bearer}"), ("content-type", "application/json")),
                json.dumps({"message": message}).encode(),
            )

        ok, numbers, no_token, bad_ttl, unauthenticated = await exchange(
            server,
            [
                send(
                    {
                        "token": "t1",
                        "data": {"a": "b"},
                        "android": {"priority": "HIGH", "ttl": "20s"},
                    }
                ),
                send({"token": "t1", "data": {"a": 1}}),
                send({"data": {"a": "b"}}),
                send({"token": "t1", "android": {"ttl": "20"}}),
                send({"token": "t1"}, bearer="forged"),
            ],
        )
    assert grant.status == 200 and json.loads(grant.body)["token_type"] == "Bearer"
    assert refused.status == 400 and json.loads(refused.body)["error"] == "unsupported_grant_type"
    assert ok.status == 200 and json.loads(ok.body)["name"].startswith("projects/p1/messages/")
    for response, field in (
        (numbers, "message.data"),
        (no_token, "message.token"),
        (bad_ttl, "message.android.ttl"),
    ):
        error = json.loads(response.body)["error"]
        assert response.status == 400 and error["status"] == "INVALID_ARGUMENT"
        assert error["details"][-1]["fieldViolations"][0]["field"] == field
    assert unauthenticated.status == 401
