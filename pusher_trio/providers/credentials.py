"""Checking credentials when an app is added (pure; used by the CLI and `apps.add`).

Every problem is a `CredentialError` whose message can be shown to the operator as is;
no message contains key material.
"""

from __future__ import annotations

import datetime
import json
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..model import DEFAULT_FCM_URL, AppleCertAuth, AppleTokenAuth, FirebaseAuth
from .fcm import REQUIRED_FIELDS

EXPIRY_WARNING_DAYS = 30
_KEY_ID = re.compile(r"[A-Z0-9]{10}")  # Apple: a 10-character key identifier


class CredentialError(ValueError):
    """The credential cannot be used; the message says why."""


def _utc(moment: datetime.datetime) -> datetime.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def load_apple_cert(pem_text: str, now: float) -> tuple[AppleCertAuth, list[str]]:
    """A PEM with the APNs client certificate and its unencrypted private key.

    What `openssl pkcs12 -in X.p12 -out X.pem -clcerts -nodes` writes. Checks that both
    are there, that the key belongs to the certificate and that it has not expired;
    warns when it expires within 30 days.
    """
    data = pem_text.encode()
    if "ENCRYPTED" in pem_text:
        raise CredentialError("the private key is encrypted (export it with -nodes)")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as error:
        raise CredentialError("no PEM certificate found in the file") from error
    if "PRIVATE KEY-----" not in pem_text:
        raise CredentialError(
            "no private key in the PEM (export with `openssl pkcs12 -clcerts -nodes`)"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise CredentialError(
            "the private key cannot be read (unencrypted PEM expected)"
        ) from error
    key_public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cert = next(
        (
            c
            for c in certs
            if c.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            == key_public
        ),
        None,
    )
    if cert is None:
        raise CredentialError("the private key does not match the certificate")
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    not_after = _utc(cert.not_valid_after_utc)
    subject = cert.subject.rfc4514_string()
    if not_after <= moment:
        raise CredentialError(f"the certificate ({subject}) expired on {not_after:%Y-%m-%d}")
    if _utc(cert.not_valid_before_utc) > moment:
        raise CredentialError(
            f"the certificate ({subject}) is not valid before {cert.not_valid_before_utc:%Y-%m-%d}"
        )
    warnings: list[str] = []
    days = (not_after - moment).total_seconds() / 86400
    if days < EXPIRY_WARNING_DAYS:
        warnings.append(
            f"the certificate ({subject}) expires in {int(days)} days, on {not_after:%Y-%m-%d}"
        )
    return AppleCertAuth(pem=pem_text), warnings


def load_apple_token_key(p8_text: str, key_id: str, team_id: str) -> AppleTokenAuth:
    """A .p8 signing key (PKCS#8 EC P-256) with its key id and team id."""
    try:
        key = serialization.load_pem_private_key(p8_text.encode(), password=None)
    except (ValueError, TypeError) as error:
        raise CredentialError("the .p8 file holds no readable unencrypted private key") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise CredentialError("an APNs .p8 key is an EC P-256 key")
    if not _KEY_ID.fullmatch(key_id):
        raise CredentialError(f"key id {key_id!r} is not Apple's 10-character key identifier")
    if not _KEY_ID.fullmatch(team_id):
        raise CredentialError(f"team id {team_id!r} is not Apple's 10-character team identifier")
    return AppleTokenAuth(key_pem=p8_text, key_id=key_id, team_id=team_id)


def load_service_account(
    text: str, project_number: str | None = None, base_url: str | None = None
) -> FirebaseAuth:
    """The service-account JSON Firebase's console downloads."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        raise CredentialError(
            "this looks like a legacy FCM server key: Google shut the legacy FCM API down in "
            "July 2024; download a service-account JSON (Firebase console, Project settings, "
            "Service accounts) and add that instead"
        )
    try:
        data = json.loads(stripped)
    except ValueError as error:
        raise CredentialError(f"the service account is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise CredentialError("the service account must be a JSON object")
    if data.get("type", "service_account") != "service_account":
        raise CredentialError(f"expected a service account, got type {data.get('type')!r}")
    missing = [
        name for name in REQUIRED_FIELDS if not isinstance(data.get(name), str) or not data[name]
    ]
    if missing:
        raise CredentialError(f"the service account lacks {', '.join(missing)}")
    try:
        key = serialization.load_pem_private_key(data["private_key"].encode(), password=None)
    except (ValueError, TypeError) as error:
        raise CredentialError("the service account's private_key cannot be read") from error
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CredentialError("the service account's private_key is not an RSA key")
    if project_number is not None and not project_number.isdigit():
        raise CredentialError(f"project number {project_number!r} is not a number")
    account = {k: v for k, v in data.items() if isinstance(v, str)}
    return FirebaseAuth(
        service_account=account,
        project_number=project_number,
        base_url=(base_url or DEFAULT_FCM_URL).rstrip("/"),
    )
