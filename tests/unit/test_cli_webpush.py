"""`pusher-trio add-webpush-app` (DESIGN §9): VAPID key in, or generated (0600), and the
public key printed in the base64url form browsers subscribe with."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from pusher_trio.providers.webpush import b64url_decode, generate_vapid_key, vapid_public_key
from tests.unit.test_cli import _isolated, assert_one_line_error, run

__all__ = ["_isolated"]  # the autouse fixture: state under tmp_path

SUBJECT = "mailto:ops@example.com"


def test_generate_vapid_key_writes_it_0600_and_prints_the_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "vapid.pem"
    argv = ["add-webpush-app", "org.example.web", "--vapid-key", str(key)]
    code, out, err = run([*argv, "--generate-vapid-key", "--subject", SUBJECT], capsys)
    assert code == 0, err
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    printed = out.split("VAPID public key: ", 1)[1].strip()
    assert printed == vapid_public_key(key.read_text())
    assert len(b64url_decode(printed)) == 65
    assert "PRIVATE" not in out + err
    code, out, err = run(["apps", "list", "--json"], capsys)
    assert code == 0, err
    (app,) = json.loads(out)["apps"]
    assert app["type"] == "webpush" and app["auth"] == "vapid"
    assert app["vapid_public_key"] == printed and app["subject"] == SUBJECT
    assert "BEGIN" not in out


def test_existing_key_file_is_used_and_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "vapid.pem"
    pem = generate_vapid_key()
    key.write_text(pem)
    argv = ["add-webpush-app", "org.x", "--vapid-key", str(key), "--subject", SUBJECT]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "VAPID public key" not in out  # not generated: nothing new to hand out
    code, _, err = run([*argv, "--generate-vapid-key"], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert "not overwriting" in err
    assert key.read_text() == pem


@pytest.mark.parametrize(
    ("key_text", "subject", "words"),
    [
        (None, "ops@example.com", "mailto: or https:"),
        (
            "-----BEGIN PRIVATE KEY-----\nSECRETSECRET\n-----END PRIVATE KEY-----\n",
            SUBJECT,
            "P-256",
        ),
    ],
)
def test_bad_subject_or_key_exits_2_without_echoing_the_key(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    key_text: str | None,
    subject: str,
    words: str,
) -> None:
    key = tmp_path / "vapid.pem"
    key.write_text(key_text or generate_vapid_key())
    argv = ["add-webpush-app", "org.x", "--vapid-key", str(key), "--subject", subject]
    code, out, err = run(argv, capsys)
    assert code == 2
    assert_one_line_error(err)
    assert words in err and "SECRETSECRET" not in out + err
