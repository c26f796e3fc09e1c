"""Prometheus metrics at GET /metrics (DESIGN §13, `[metrics] listen`), by prometheus_client.

Two sources, one registry per running sidecar:

* `PushMetrics` is measured on the push path as it happens: pushes by provider and
  outcome, invalidations, and the latency histograms (push, wake, call wait). Label
  children are looked up once and cached, so a push pays a dict lookup plus
  `inc()`/`observe()`, ~3-5 µs per push request (`python -m load.bench metrics`).
* `StatusCollector` exports what the service already counts for `status`
  (datagrams by outcome, registrations, waiting calls, devices, provider
  connections) from one snapshot per scrape: the push path pays nothing for those.

The HTTP side is prometheus_client's own server, in a thread of its own; the
snapshot is taken in the trio thread (`trio.from_thread`), so the scrape never
reads the service's dicts while trio changes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .logs import get_logger
from .model import Device

log = get_logger("metrics")

PROVIDERS = ("apple", "firebase")
PUSH_OUTCOMES = ("delivered", "token_invalid", "retry_later", "auth_failed", "rejected")
# Local stand-ins answer in ~1 ms, APNs/FCM in 50-300 ms, a stalled provider at the deadline.
PUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A phone woken by a push registers in 1-5 s; wait_timeout is 20 s, max_wait 60 s.
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0)
# sniffer.COUNTERS that end a datagram: each datagram read lands in exactly one of them.
DATAGRAM_OUTCOMES = (
    "registers",
    "responses",
    "ignored_not_register",
    "ignored_not_sip",
    "dropped_not_allowed",
    "dropped_auth",
    "dropped_malformed",
    "errors",
)


class PushMetrics:
    """The counters and histograms the push path updates (an events.PushObserver)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.pushes = Counter(
            "pusher_pushes",
            "Pushes answered by a provider (or refused before sending), per device.",
            ["provider", "outcome"],
            registry=registry,
        )
        self.invalidations = Counter(
            "pusher_invalidations",
            "Device tokens invalidated because the provider said they are dead.",
            ["provider"],
            registry=registry,
        )
        self.push_duration = Histogram(
            "pusher_push_duration_seconds",
            "Push request decoded -> provider answer, per device.",
            ["provider"],
            buckets=PUSH_BUCKETS,
            registry=registry,
        )
        self.wake_duration = Histogram(
            "pusher_wake_duration_seconds",
            "Push sent -> the fresh REGISTER that ended a call's wait.",
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.call_wait = Histogram(
            "pusher_call_wait_seconds",
            "Push request decoded -> answered, by result (registered, Timeout, Cancelled...).",
            ["result"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self._pushes: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}
        self._waits: dict[str, Any] = {}
        for provider in PROVIDERS:  # series exist from the start: rate() has a zero to show
            self.invalidations.labels(provider)
            self._durations[provider] = self.push_duration.labels(provider)
            for outcome in PUSH_OUTCOMES:
                self._pushes[provider, outcome] = self.pushes.labels(provider, outcome)

    def push_started(self, call_id: str, aor: str, devices: Sequence[Device]) -> None:
        pass

    def push_answered(
        self, call_id: str, device: Device, outcome: str, reason: str | None, seconds: float
    ) -> None:
        provider = device.type
        counter = self._pushes.get((provider, outcome))
        if counter is None:
            counter = self._pushes[provider, outcome] = self.pushes.labels(provider, outcome)
        counter.inc()
        duration = self._durations.get(provider)
        if duration is None:
            duration = self._durations[provider] = self.push_duration.labels(provider)
        duration.observe(seconds)
        if outcome == "token_invalid":
            self.invalidations.labels(provider).inc()

    def registered(self, call_id: str, aor: str, contact: str, wake_seconds: float | None) -> None:
        if wake_seconds is not None and wake_seconds >= 0:
            self.wake_duration.observe(wake_seconds)

    def request_ended(self, call_id: str, aor: str, result: str, seconds: float) -> None:
        wait = self._waits.get(result)
        if wait is None:
            wait = self._waits[result] = self.call_wait.labels(result)
        wait.observe(seconds)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def status_families(status: Mapping[str, Any]) -> list[Metric]:
    """The `status` snapshot as Prometheus families (pure: testable without a server)."""
    out: list[Metric] = []

    def gauge(name: str, doc: str, value: Any) -> None:
        number = _number(value)
        if number is not None:
            out.append(GaugeMetricFamily(name, doc, value=number))

    def counter(name: str, doc: str, value: Any) -> None:
        number = _number(value)
        if number is not None:
            out.append(CounterMetricFamily(name, doc, value=number))

    datagrams = _mapping(status.get("datagrams"))
    family = CounterMetricFamily(
        "pusher_datagrams", "Sniffer datagrams by how they ended.", labels=["outcome"]
    )
    for outcome in DATAGRAM_OUTCOMES:
        family.add_metric([outcome], _number(datagrams.get(outcome)) or 0.0)
    out.append(family)
    counter(
        "pusher_datagrams_received", "Sniffer datagrams read (all outcomes).",
        datagrams.get("received", 0),
    )  # fmt: skip
    counter(
        "pusher_registrations",
        "Successful registrations seen (REGISTER correlated with its 2xx).",
        status.get("registrations"),
    )
    gauge(
        "pusher_sniffer_pending_registers",
        "REGISTERs waiting for their answer in the correlator.",
        datagrams.get("table_pending"),
    )
    gauge(
        "pusher_sniffer_receive_buffer_bytes",
        "SO_RCVBUF granted to the sniffer socket (Linux doubles it).",
        datagrams.get("rcvbuf_bytes"),
    )

    requests = _mapping(status.get("requests"))
    family = CounterMetricFamily(
        "pusher_push_requests", "Control `push` requests by result.", labels=["result"]
    )
    for result, value in sorted(requests.items()):
        family.add_metric([str(result)], _number(value) or 0.0)
    out.append(family)

    gauge(
        "pusher_waiting_calls", "Push requests waiting for a REGISTER now.", status.get("waiting")
    )
    waiters = _mapping(status.get("waiters"))
    gauge("pusher_waiting_calls_limit", "[push] max_waiting.", waiters.get("max_waiting"))
    gauge(
        "pusher_waiting_calls_peak", "Most push requests waiting at once.", waiters.get("peak")
    )  # fmt: skip
    counter(
        "pusher_overloaded",
        "Push requests refused Overloaded (max_waiting reached).",
        (_number(waiters.get("overloaded")) or 0.0)
        + (_number(status.get("overloaded_without_wait")) or 0.0),
    )
    gauge("pusher_devices", "Device records in the store.", status.get("devices"))

    providers = _mapping(status.get("providers"))
    if providers:
        connections = GaugeMetricFamily(
            "pusher_provider_connections",
            "Open HTTP/2 connections to the push providers, per pool.",
            labels=["pool"],
        )
        for pool, value in sorted(_mapping(providers.get("connections_per_pool")).items()):
            connections.add_metric([str(pool)], _number(value) or 0.0)
        out.append(connections)
        counter("pusher_provider_retries", "Provider retries (429/5xx).", providers.get("retries"))

    control = _mapping(status.get("control"))
    if control:
        gauge("pusher_control_connections", "Open control connections.", control.get("connections"))
    hep = _mapping(status.get("hep"))
    if hep:
        family = CounterMetricFamily(
            "pusher_hep_events",
            "Push events for Homer ([hep] capture): sent, dropped (socket full), errors.",
            labels=["outcome"],
        )
        for outcome in ("sent", "dropped", "errors"):
            family.add_metric([outcome], _number(hep.get(outcome)) or 0.0)
        out.append(family)
    out.extend(redis_families(_mapping(status.get("redis"))))
    return out


def redis_families(redis: Mapping[str, Any]) -> Iterable[Metric]:
    """The Redis backend's state (DESIGN §10): `status["redis"]`, absent with SQLite."""
    out: list[Metric] = []
    up = _number(redis.get("up"))
    if up is not None:
        out.append(GaugeMetricFamily("pusher_redis_up", "1 when Redis answers, else 0.", value=up))
    queued = _number(redis.get("queued_writes"))
    if queued is not None:
        out.append(
            GaugeMetricFamily(
                "pusher_redis_queued_writes",
                "Store writes waiting for Redis (replayed on reconnect).",
                value=queued,
            )
        )
    return out


class StatusCollector(Collector):
    """Exports `status_families(statistics())`, the snapshot taken in the trio thread."""

    def __init__(
        self, statistics: Callable[[], Mapping[str, Any]], trio_token: trio.lowlevel.TrioToken
    ) -> None:
        self._statistics = statistics
        self._token = trio_token

    def collect(self) -> Iterable[Metric]:
        try:
            status = trio.from_thread.run_sync(self._snapshot, trio_token=self._token)
        except trio.RunFinishedError:
            return []
        return status_families(status)

    def _snapshot(self) -> Mapping[str, Any]:
        try:
            return dict(self._statistics())
        except Exception:  # a statistics bug must not break the scrape
            log.exception("statistics failed during a scrape")
            return {}


def new_registry(
    statistics: Callable[[], Mapping[str, Any]],
) -> tuple[CollectorRegistry, PushMetrics]:
    """A registry with the push metrics, the status snapshot and process_*/python_info.

    Call from the trio thread (it keeps the trio token for the scrapes)."""
    registry = CollectorRegistry()
    push_metrics = PushMetrics(registry)
    registry.register(StatusCollector(statistics, trio.lowlevel.current_trio_token()))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry, push_metrics


class MetricsServer:
    """`await nursery.start(server.serve)` -> the bound (host, port); cancel to stop."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        self.host = host
        self.port = port
        self.registry = registry

    async def serve(
        self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        httpd, thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        try:
            bound = httpd.server_address
            address = (str(bound[0]), int(bound[1]))
            log.info(
                "metrics listening", extra={"fields": {"address": f"{address[0]}:{address[1]}"}}
            )
            task_status.started(address)
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                # serve_forever notices within its 0.5 s poll interval
                await trio.to_thread.run_sync(httpd.shutdown)
                await trio.to_thread.run_sync(thread.join)
            httpd.server_close()


__all__ = ["MetricsServer", "PushMetrics", "StatusCollector", "new_registry", "status_families"]
