"""The parse benchmark runs and reports both parsers (no assertion about speed)."""

from __future__ import annotations

import pytest

from load import bench_sip


def test_bench_measures_every_message_kind() -> None:
    rows = bench_sip.measure(seconds=0.2)
    assert [row["message"] for row in rows] == list(bench_sip.MESSAGES)
    for row in rows:
        assert row["sip"] > 0
        if "sipmessage" in row:
            assert row["ratio"] == pytest.approx(row["sip"] / row["sipmessage"])


def test_bench_main_ignores_foreign_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_sip.main(["sip", "--seconds", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "REGISTER" in out and "200 OK" in out


def test_bench_job_matches_what_it_claims() -> None:
    data = (bench_sip.CORPUS / bench_sip.MESSAGES["200 OK (3 Contacts)"]).read_bytes()
    assert bench_sip.ours(data) > 0
