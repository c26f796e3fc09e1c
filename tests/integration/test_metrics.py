"""/metrics (prometheus_client) scraped during a push storm through the real provider pools.

The exposition is read back with prometheus_client's own parser; counters and histogram
counts must equal what the storm's requests answered, and no token may appear.
"""

from __future__ import annotations

from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from pusher_trio.metrics import status_families

from .observability import observed_sidecar, push_storm

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """(sample values by (name, labels), family types by name)."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over the series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def test_metrics_during_a_push_storm_match_the_pushes_made(tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with observed_sidecar(tmp_path) as world:
            scrapes: list[str] = []
            done = trio.Event()

            async def scrape_until_done() -> None:
                while not done.is_set():
                    scrapes.append(await world.scrape())
                    await trio.sleep(0.05)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(scrape_until_done)
                storm = await push_storm(world, waking=15, sleeping=3, dead=2)
                done.set()
            final = await world.scrape()

    assert storm.results == {"registered": 30, "Timeout": 3, "PushRejected": 2, "NoPushTarget": 1}
    samples, types = parse(final)
    assert types["pusher_pushes"] == "counter"
    assert types["pusher_push_duration_seconds"] == "histogram"
    assert types["pusher_wake_duration_seconds"] == "histogram"
    assert types["pusher_call_wait_seconds"] == "histogram"
    assert types["pusher_waiting_calls"] == "gauge"

    # Counters equal the pushes the requests reported, provider by provider.
    for (provider, outcome), count in storm.pushed.items():
        assert value(samples, "pusher_pushes_total", provider=provider, outcome=outcome) == count
    assert total(samples, "pusher_pushes_total") == sum(storm.pushed.values())
    assert value(samples, "pusher_invalidations_total", provider="apple") == 2
    for provider in ("apple", "firebase"):
        sent = sum(n for (p, _), n in storm.pushed.items() if p == provider)
        count = value(samples, "pusher_push_duration_seconds_count", provider=provider)
        assert count == sent
        assert (
            value(samples, "pusher_push_duration_seconds_bucket", provider=provider, le="+Inf")
            == sent
        )
        assert value(samples, "pusher_push_duration_seconds_sum", provider=provider) > 0

    # Histogram counts equal the requests by result; one wake per registered call.
    for result, count in storm.results.items():
        assert value(samples, "pusher_call_wait_seconds_count", result=result) == count
        assert value(samples, "pusher_push_requests_total", result=result) == count
    assert value(samples, "pusher_wake_duration_seconds_count") == storm.results["registered"]
    buckets = sorted(
        (float(dict(ls)["le"]), v)
        for (n, ls), v in samples.items()
        if n == "pusher_wake_duration_seconds_bucket"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative

    # The status snapshot: every datagram ended in one outcome; nobody waits now.
    received = value(samples, "pusher_datagrams_received_total")
    assert received >= 2 * 35  # each phone's REGISTER and 200 at least
    assert total(samples, "pusher_datagrams_total") == received
    assert value(samples, "pusher_registrations_total") >= 35 + 30
    assert value(samples, "pusher_waiting_calls") == 0
    assert value(samples, "pusher_devices") == 35
    assert total(samples, "pusher_provider_connections") >= 2
    assert value(samples, "process_resident_memory_bytes") > 0

    # Scrapes during the storm parsed, and counters never went down between them.
    assert len(scrapes) >= 2
    previous = 0.0
    for text in [*scrapes, final]:
        now = total(parse(text)[0], "pusher_pushes_total")
        assert now >= previous
        previous = now
    for token in world.tokens:
        for text in [*scrapes, final]:
            assert token not in text
            assert token[:12] not in text


def test_status_families_of_an_empty_status_still_name_every_datagram_outcome() -> None:
    families = {f.name: f for f in status_families({})}
    outcomes = {s.labels["outcome"] for s in families["pusher_datagrams"].samples}
    assert {"registers", "responses", "dropped_malformed", "dropped_not_allowed"} <= outcomes
    assert all(s.value == 0 for s in families["pusher_datagrams"].samples)
    assert "pusher_waiting_calls" not in families  # no number: no sample, not a made-up 0


def test_status_families_skip_what_is_not_a_number() -> None:
    families = {
        f.name: f
        for f in status_families(
            {"waiting": "x", "devices": float("nan"), "registrations": 4, "requests": {"a": 1}}
        )
    }
    assert "pusher_waiting_calls" not in families
    assert "pusher_devices" not in families
    assert families["pusher_registrations"].samples[0].value == 4
    assert families["pusher_push_requests"].samples[0].labels == {"result": "a"}


def test_status_families_export_the_redis_state_only_with_the_redis_backend() -> None:
    assert not {f.name for f in status_families({})} & {"pusher_redis_up"}
    down = {f.name: f for f in status_families({"redis": {"up": 0, "queued_writes": 7}})}
    assert down["pusher_redis_up"].samples[0].value == 0
    assert down["pusher_redis_queued_writes"].samples[0].value == 7
