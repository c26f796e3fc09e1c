"""Apple's table of answers, each mapped to an outcome."""

from __future__ import annotations

import json

import pytest

from pusher_trio.model import AuthFailed, Delivered, Outcome, Rejected, RetryLater, TokenInvalid
from pusher_trio.providers import apns


def answer(
    status: int,
    reason: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
    **extra: object,
) -> object:
    body = json.dumps({"reason": reason, **extra}).encode() if reason else b""
    return apns.interpret_response(status, headers, body)


def test_200_is_delivered_with_apns_id() -> None:
    assert answer(200, headers=(("apns-id", "abc"),)) == Delivered(id="abc")


@pytest.mark.parametrize("reason", ["Unregistered", "ExpiredToken"])
def test_410_invalidates_the_token(reason: str) -> None:
    outcome = answer(410, reason, timestamp=1700000000000)
    assert isinstance(outcome, TokenInvalid)
    assert reason in outcome.reason and "1700000000000" in outcome.reason


@pytest.mark.parametrize("reason", ["BadDeviceToken", "DeviceTokenNotForTopic"])
def test_400_token_reasons_invalidate(reason: str) -> None:
    assert answer(400, reason) == TokenInvalid(reason)


@pytest.mark.parametrize(
    "reason",
    [
        "BadCollapseId",
        "BadExpirationDate",
        "BadMessageId",
        "BadPriority",
        "BadTopic",
        "DuplicateHeaders",
        "IdleTimeout",
        "InvalidPushType",
        "MissingDeviceToken",
        "MissingTopic",
        "PayloadEmpty",
        "TopicDisallowed",
    ],
)
def test_other_400_reasons_are_rejected(reason: str) -> None:
    assert answer(400, reason) == Rejected(f"400 {reason}")


def test_expired_provider_token_asks_for_a_refresh() -> None:
    assert answer(403, "ExpiredProviderToken") == apns.RefreshProviderToken("ExpiredProviderToken")


@pytest.mark.parametrize(
    "reason",
    [
        "BadCertificate",
        "BadCertificateEnvironment",
        "Forbidden",
        "InvalidProviderToken",
        "MissingProviderToken",
        "UnrelatedKeyIdInToken",
    ],
)
def test_other_403_are_auth_failures(reason: str) -> None:
    assert answer(403, reason) == AuthFailed(f"403 {reason}")


@pytest.mark.parametrize(
    ("status", "reason"),
    [(404, "BadPath"), (405, "MethodNotAllowed"), (413, "PayloadTooLarge")],
)
def test_other_4xx_are_rejected(status: int, reason: str) -> None:
    assert answer(status, reason) == Rejected(f"{status} {reason}")


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (429, "TooManyRequests"),
        (429, "TooManyProviderTokenUpdates"),
        (500, "InternalServerError"),
        (503, "ServiceUnavailable"),
        (503, "Shutdown"),
        (502, None),
    ],
)
def test_retryable_answers(status: int, reason: str | None) -> None:
    outcome = answer(status, reason)
    assert isinstance(outcome, RetryLater) and outcome.after is None


def test_retry_after_is_honoured() -> None:
    outcome: Outcome | apns.RefreshProviderToken = apns.interpret_response(
        429, (("retry-after", "7"),), b'{"reason":"TooManyRequests"}'
    )
    assert outcome == RetryLater("429 TooManyRequests", 7.0)


def test_garbage_body_does_not_raise() -> None:
    assert apns.interpret_response(400, (), b"\xff not json") == Rejected("400")
    assert apns.interpret_response(400, (), b"[1]") == Rejected("400")
