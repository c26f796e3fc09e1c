"""Short runs of the input-side hardening battery (load/faults_input.py): bad datagrams at
the sniffer, bad traffic at the control socket. `python -m load.faults input` is the full size.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from load import faults_input as faults


async def test_bad_datagrams_are_counted_and_learning_goes_on(tmp_path: Path) -> None:
    report = faults.Report("sniffer", echo=False)
    with trio.fail_after(30):
        await faults.check_sniffer(report, tmp_path, count=10_000, seed=6, auth_count=200)
    assert report.failures == [], "\n".join(report.lines)
    assert report.figures["datagrams_tried"] >= 10_000
    assert report.figures["learn_after_flood_s"] < 1.0


async def test_bad_control_traffic_gets_the_contract_errors(tmp_path: Path) -> None:
    report = faults.Report("control", echo=False)
    with trio.fail_after(30):
        await faults.check_control(report, tmp_path, connections=300, seed=6)
    assert report.failures == [], "\n".join(report.lines)
    assert report.figures["good_pushes"] >= 3
    assert report.figures["dropped_connections"] == 300


async def test_push_with_a_nan_timeout_is_invalid_params(tmp_path: Path) -> None:
    data, expected = faults.control_cases()["push timeout NaN"]
    with trio.fail_after(10):
        async with faults.open_sidecar(tmp_path) as sidecar:
            import socket

            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sender.bind(("127.0.0.1", 0))
            await sidecar.learn(faults.PhoneSim("ghost"), sender)
            sender.close()
            got, failure = await faults._one_case(sidecar.tcp, "NaN", data, expected)
    assert failure is None, got


def test_every_control_case_names_an_outcome_of_the_contract() -> None:
    codes = {-32700, -32600, -32601, -32602, -32001}
    for name, (data, expected) in faults.control_cases().items():
        assert data, name
        assert expected[0] == "silent" or expected[1] in codes, name


def test_store_refuses_a_key_sqlite_cannot_take_and_keeps_committing(tmp_path: Path) -> None:
    from pusher_trio.store import SqliteStore

    store = SqliteStore(str(tmp_path / "pusher.db"))
    try:
        with pytest.raises(ValueError, match="not valid Unicode"):
            store.set_config("bad\udfff", "v")
        store.set_config("good", "v")
        store.flush()  # raised StoreError for ever when the bad key reached the writer
        assert store.statistics()["write_errors"] == 0
    finally:
        store.close()
    reopened = SqliteStore(str(tmp_path / "pusher.db"))
    try:
        assert reopened.get_config("good") == "v"
    finally:
        reopened.close()
