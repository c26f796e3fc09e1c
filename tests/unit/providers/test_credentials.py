"""Credential checks done when an app is added."""

from __future__ import annotations

import datetime
import json

import pytest

from pusher_trio.providers.credentials import (
    CredentialError,
    load_apple_cert,
    load_apple_token_key,
    load_service_account,
)
from pusher_trio.standins.certs import Authority, make_p8, make_service_account

NOW = datetime.datetime.now(datetime.UTC)


def split(pem: str) -> tuple[str, str]:
    """(certificate part, key part) of a cert+key PEM."""
    at = pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----\n")
    return pem[:at], pem[at:]


@pytest.fixture(scope="module")
def authority() -> Authority:
    return Authority()


def test_valid_cert_loads_without_warning(authority: Authority) -> None:
    pem = authority.apns_client_pem("com.example.app", not_after=NOW + datetime.timedelta(days=365))
    auth, warnings = load_apple_cert(pem, NOW.timestamp())
    assert auth.pem == pem and warnings == []


def test_cert_expiring_within_30_days_warns(authority: Authority) -> None:
    pem = authority.apns_client_pem("com.example.app", not_after=NOW + datetime.timedelta(days=10))
    _, warnings = load_apple_cert(pem, NOW.timestamp())
    assert len(warnings) == 1 and "expires in" in warnings[0]


def test_expired_cert_refused(authority: Authority) -> None:
    pem = authority.apns_client_pem(
        "com.example.app",
        not_before=NOW - datetime.timedelta(days=400),
        not_after=NOW - datetime.timedelta(days=1),
    )
    with pytest.raises(CredentialError, match="expired"):
        load_apple_cert(pem, NOW.timestamp())


def test_key_must_match_cert(authority: Authority) -> None:
    one = authority.apns_client_pem("com.example.one")
    two = authority.apns_client_pem("com.example.two")
    with pytest.raises(CredentialError, match="does not match"):
        load_apple_cert(split(one)[0] + split(two)[1], NOW.timestamp())


def test_missing_key_refused(authority: Authority) -> None:
    pem = authority.apns_client_pem("com.example.app")
    with pytest.raises(CredentialError, match="no private key"):
        load_apple_cert(split(pem)[0], NOW.timestamp())


def test_not_a_cert_refused() -> None:
    with pytest.raises(CredentialError, match="no PEM certificate"):
        load_apple_cert("hello", NOW.timestamp())


def test_encrypted_key_refused(authority: Authority) -> None:
    pem = authority.apns_client_pem("com.example.app").replace(
        "PRIVATE KEY-----\n", "PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n", 1
    )
    with pytest.raises(CredentialError, match="encrypted"):
        load_apple_cert(pem, NOW.timestamp())


def test_p8_key_loads() -> None:
    p8, _ = make_p8()
    auth = load_apple_token_key(p8, "ABC123DEFG", "DEF123GHIJ")
    assert auth.key_id == "ABC123DEFG" and auth.team_id == "DEF123GHIJ"


@pytest.mark.parametrize(("kid", "team"), [("short", "DEF123GHIJ"), ("ABC123DEFG", "bad team")])
def test_p8_ids_checked(kid: str, team: str) -> None:
    with pytest.raises(CredentialError):
        load_apple_token_key(make_p8()[0], kid, team)


def test_p8_garbage_refused() -> None:
    with pytest.raises(CredentialError, match="no readable"):
        load_apple_token_key("junk", "ABC123DEFG", "DEF123GHIJ")


def test_service_account_loads() -> None:
    account, _ = make_service_account("proj-1")
    auth = load_service_account(
        json.dumps(account), project_number="1234", base_url="https://127.0.0.1:9/"
    )
    assert auth.project_id == "proj-1" and auth.project_number == "1234"
    assert auth.base_url == "https://127.0.0.1:9"


def test_legacy_server_key_refused_with_explanation() -> None:
    with pytest.raises(CredentialError, match="shut the legacy FCM API down in July 2024"):
        load_service_account("AAAAbcd1234:APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8OvPVGJ")


def test_service_account_missing_fields() -> None:
    with pytest.raises(CredentialError, match="client_email"):
        load_service_account(
            json.dumps(
                {"type": "service_account", "project_id": "p", "private_key": "x", "token_uri": "u"}
            )
        )


def test_service_account_bad_json() -> None:
    with pytest.raises(CredentialError, match="not valid JSON"):
        load_service_account("{nope")
