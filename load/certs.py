"""Throw-away credentials for the stand-ins, tests and benchmarks (never real ones).

`Authority` is a private CA (trustme) that issues the stand-ins' server certificates and
APNs-style client certificates; `make_p8` makes an APNs token-auth key;
`make_service_account` a Google-style service account whose public key the FCM stand-in
checks assertions with.
"""

from __future__ import annotations

import datetime
import json
import secrets
import ssl
import string
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")


def _pem_public(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _pem_private(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class Authority:
    """A local CA: server certificates for 127.0.0.1/localhost and APNs client certificates."""

    def __init__(self) -> None:
        self.ca = trustme.CA(organization_name="pusher-trio test CA")
        self._server = self.ca.issue_cert(*LOCAL_NAMES)

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem.bytes()

    def write_ca(self, path: str | Path) -> str:
        """Write the CA certificate (what `[push] ca_file` should name); returns the path."""
        Path(path).write_bytes(self.ca_pem)
        return str(path)

    def server_context(
        self, *, alpn: tuple[str, ...] = ("h2",), client_auth: bool = False
    ) -> ssl.SSLContext:
        """TLS server context; with client_auth, client certificates from this CA are
        verified when offered (CERT_OPTIONAL: token-auth clients offer none)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server.configure_cert(context)
        context.set_alpn_protocols(list(alpn))
        if client_auth:
            self.ca.configure_trust(context)
            context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        context.set_alpn_protocols(["h2"])
        return context

    def apns_client_pem(
        self,
        bundle_id: str,
        *,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> str:
        """Certificate + unencrypted key, as `openssl pkcs12 -clcerts -nodes` writes them.

        The common name follows Apple's ("Apple Push Services: <bundle id>"); the APNs
        stand-in reads the allowed topic from it.
        """
        leaf = self.ca.issue_cert(
            f"{bundle_id}.apns.invalid",
            common_name=f"Apple Push Services: {bundle_id}",
            not_before=not_before,
            not_after=not_after,
        )
        return leaf.cert_chain_pems[0].bytes().decode() + leaf.private_key_pem.bytes().decode()


def random_id(length: int = 10) -> str:
    """An Apple-style 10-character key or team identifier."""
    alphabet = string.ascii_uppercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def make_p8() -> tuple[str, str]:
    """(p8 private key PEM, public key PEM) for APNs token auth."""
    key = ec.generate_private_key(ec.SECP256R1())
    return _pem_private(key), _pem_public(key)


def make_service_account(
    project_id: str = "pusher-trio-test",
    token_uri: str = "https://127.0.0.1/token",
    client_email: str | None = None,
) -> tuple[dict[str, str], str]:
    """(service-account dict shaped like Firebase's download, public key PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    account = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": _pem_private(key),
        "client_email": client_email or f"pusher@{project_id}.iam.gserviceaccount.com",
        "client_id": str(secrets.randbelow(10**20)),
        "token_uri": token_uri,
    }
    return account, _pem_public(key)


def service_account_json(account: dict[str, str]) -> str:
    return json.dumps(account, indent=2)
