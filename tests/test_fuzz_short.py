"""A few seconds of the fuzz harness inside the test suite (``nox -s fuzz`` runs longer)."""

from __future__ import annotations

from load import fuzz


def test_short_fuzz_run_finds_only_parse_errors() -> None:
    result = fuzz.run(seconds=3.0, seed=20261126)
    failures = [(target, error, data[:200]) for target, data, error in result.failures]
    assert failures == []
    assert result.iterations > 500
    # both targets were reached, and mutations both parsed and failed
    kinds = set(result.outcomes)
    assert {"sip: ok", "sip: SipParseError", "hep: ok", "hep: HepParseError"} <= kinds


def test_fuzz_main_reports_and_exits_zero(capsys: object) -> None:
    assert fuzz.main(["--seconds", "0.5", "--seed", "1"]) == 0
