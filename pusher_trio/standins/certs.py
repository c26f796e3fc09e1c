"""Throw-away credentials for the stand-ins, tests, benchmarks and the demo (never real ones).

`Authority` is a private CA, made with `cryptography` alone (the package's own
dependency, so `pusher-trio demo` needs nothing else), that issues the stand-ins'
server certificate (127.0.0.1, ::1 and localhost as subject alternative names) and
APNs-style client certificates; `make_p8` makes an APNs token-auth key;
`make_service_account` a Google-style service account whose public key the FCM
stand-in checks assertions with.

All keys are EC P-256 except the service account's (RSA, as Google's are).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
import ssl
import string
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")
VALIDITY = datetime.timedelta(days=3650)
BACKDATE = datetime.timedelta(hours=1)  # a little slack for clocks that disagree

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _pem_public(key: PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _pem_private(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _pem_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _name(common_name: str, organization: str = "pusher-trio test CA") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """EC keys sign (TLS handshakes; certificates and CRLs too for the CA)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(identity: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(identity))
    except ValueError:
        return x509.DNSName(identity)


class Authority:
    """A local CA: server certificates for 127.0.0.1/localhost and APNs client certificates."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = _name(f"pusher-trio test CA {secrets.token_hex(4)}")
        ski = x509.SubjectKeyIdentifier.from_public_key(self._key.public_key())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self._ski = ski
        self._server_cert_pem, self._server_key_pem = self.issue(*LOCAL_NAMES)

    @property
    def ca_pem(self) -> bytes:
        return _pem_cert(self.cert).encode()

    def write_ca(self, path: str | Path) -> str:
        """Write the CA certificate (what `[push] ca_file` should name); returns the path."""
        Path(path).write_bytes(self.ca_pem)
        return str(path)

    def issue(
        self,
        *identities: str,
        common_name: str | None = None,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> tuple[str, str]:
        """A leaf for server and client use: (certificate PEM, unencrypted PKCS#8 key PEM).

        `identities` (host names or IP addresses) go in the subject alternative names.
        """
        if not identities and common_name is None:
            raise ValueError("a certificate needs an identity or a common name")
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name or identities[0], "pusher-trio test"))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - BACKDATE)
            .not_valid_after(not_after or now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._ski),
                critical=False,
            )
        )
        if identities:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(i) for i in identities]),
                critical=False,
            )
        cert = builder.sign(self._key, hashes.SHA256())
        return _pem_cert(cert), _pem_private(key)

    def write_server(self, cert_path: str | Path, key_path: str | Path) -> tuple[str, str]:
        """Write the server certificate (127.0.0.1, ::1, localhost) and its key (for nginx)."""
        Path(cert_path).write_text(self._server_cert_pem)
        Path(key_path).write_text(self._server_key_pem)
        Path(key_path).chmod(0o600)
        return str(cert_path), str(key_path)

    def server_context(
        self, *, alpn: tuple[str, ...] = ("h2",), client_auth: bool = False
    ) -> ssl.SSLContext:
        """TLS server context; with client_auth, client certificates from this CA are
        verified when offered (CERT_OPTIONAL: token-auth clients offer none)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory(prefix="pusher-trio-certs-") as tmp:
            # ssl loads a certificate chain from files only.
            cert, key = self.write_server(Path(tmp, "server.pem"), Path(tmp, "server.key"))
            context.load_cert_chain(cert, key)
        context.set_alpn_protocols(list(alpn))
        if client_auth:
            context.load_verify_locations(cadata=self.ca_pem.decode())
            context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
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
        cert, key = self.issue(
            f"{bundle_id}.apns.invalid",
            common_name=f"Apple Push Services: {bundle_id}",
            not_before=not_before,
            not_after=not_after,
        )
        return cert + key


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
