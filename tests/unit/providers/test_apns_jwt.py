"""Provider tokens: one per (team, key id), 40-minute reuse, 20-minute floor (injected clock)."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from pusher_trio.model import AppleTokenAuth
from pusher_trio.providers.apns import (
    TOKEN_MIN_INTERVAL,
    TOKEN_REUSE,
    ProviderTokenCache,
    load_signing_key,
)
from pusher_trio.standins.certs import make_p8

T0 = 1_800_000_000.0


@pytest.fixture(scope="module")
def key() -> tuple[str, str]:
    return make_p8()


def auth(key: tuple[str, str], team: str = "TEAM123456", kid: str = "KEY1234567") -> AppleTokenAuth:
    return AppleTokenAuth(key_pem=key[0], key_id=kid, team_id=team)


def test_token_has_kid_iss_iat_and_verifies(key: tuple[str, str]) -> None:
    token = ProviderTokenCache().token(auth(key), T0)
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "KEY1234567", "typ": "JWT"}
    public = serialization.load_pem_public_key(key[1].encode())
    claims = jwt.decode(token, public, algorithms=["ES256"], options={"verify_iat": False})  # type: ignore[arg-type]
    assert claims == {"iss": "TEAM123456", "iat": int(T0)}


def test_token_reused_for_40_minutes(key: tuple[str, str]) -> None:
    cache = ProviderTokenCache()
    first = cache.token(auth(key), T0)
    assert cache.token(auth(key), T0 + TOKEN_REUSE - 1) == first
    assert cache.generated == 1
    second = cache.token(auth(key), T0 + TOKEN_REUSE)
    assert second != first and cache.generated == 2


def test_one_token_per_team_and_key(key: tuple[str, str]) -> None:
    cache = ProviderTokenCache()
    a = cache.token(auth(key), T0)
    b = cache.token(auth(key, team="TEAM999999"), T0)
    c = cache.token(auth(key, kid="KEY9999999"), T0)
    assert len({a, b, c}) == 3 and cache.generated == 3
    assert cache.token(auth(key), T0 + 1) == a


def test_refresh_after_rejection_once_then_refused_within_20_minutes(key: tuple[str, str]) -> None:
    cache = ProviderTokenCache()
    first = cache.token(auth(key), T0)
    assert cache.refresh_after_rejection(auth(key), first, T0 + 60)
    second = cache.token(auth(key), T0 + 60)
    assert second != first
    # Apple refuses the new one too: no third token within 20 minutes.
    assert not cache.refresh_after_rejection(auth(key), second, T0 + 120)
    assert cache.token(auth(key), T0 + 120) == second
    # After 20 minutes one more early refresh is allowed.
    assert cache.refresh_after_rejection(auth(key), second, T0 + 60 + TOKEN_MIN_INTERVAL)
    assert cache.generated == 3


def test_concurrent_rejections_of_the_same_token_make_one_new_token(key: tuple[str, str]) -> None:
    cache = ProviderTokenCache()
    old = cache.token(auth(key), T0)
    results = [cache.refresh_after_rejection(auth(key), old, T0 + 5) for _ in range(50)]
    assert all(results) and cache.generated == 2


def test_changed_key_makes_a_new_token(key: tuple[str, str]) -> None:
    cache = ProviderTokenCache()
    first = cache.token(auth(key), T0)
    other = make_p8()
    assert cache.token(auth(other), T0 + 1) != first


def test_non_p256_key_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(ValueError, match="P-256"):
        load_signing_key(pem)
