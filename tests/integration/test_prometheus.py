"""The Grafana dashboard proven against a real Prometheus (Debian's `prometheus`).

Grafana is not packaged by Debian, so the dashboard is checked the other real way:
Prometheus scrapes a running sidecar during push storms, then every PromQL query of
conf/grafana/pusher-trio.json (Grafana's variables filled in as Grafana would) is
evaluated through Prometheus's HTTP API and must return data.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio

from .observability import observed_sidecar, push_storm

DASHBOARD = Path(__file__).parents[2] / "conf" / "grafana" / "pusher-trio.json"
JOB = "pusher-trio"
RATE_INTERVAL = "20s"  # what Grafana's $__rate_interval is for a 1 s scrape interval, with margin


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        reason = "Debian's prometheus is not installed (apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    return path


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every target of every panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    out: list[tuple[str, str]] = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def grafana_expand(expr: str) -> str:
    """Fill in the dashboard's variables as Grafana does (All = the allValue `.*`)."""
    return (
        expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$job", ".*")
        .replace("$instance", ".*")
    )


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Prometheus:
    """Debian's prometheus on 127.0.0.1, scraping `target` every second; stopped by its PID."""

    def __init__(self, folder: Path, target: str) -> None:
        self.port = free_tcp_port()
        config = folder / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: {JOB}\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log = (folder / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    async def query(self, expr: str) -> list[dict[str, Any]]:
        answer = await trio.to_thread.run_sync(lambda: self.get("/api/v1/query", query=expr))
        assert answer["status"] == "success", (expr, answer)
        assert answer["data"]["resultType"] == "vector", expr
        return list(answer["data"]["result"])

    async def ready(self) -> None:
        while True:
            assert self.process.poll() is None, "prometheus exited; see prometheus.log"
            try:
                await trio.to_thread.run_sync(lambda: urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/-/ready", timeout=2).close())  # fmt: skip
                return
            except OSError:
                await trio.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def test_the_dashboard_has_the_panels_operators_look_for() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "pusher-trio"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "job", "instance"}
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
    titles = " | ".join(title for title, _ in dashboard_queries())
    for wanted in ("Push rate", "Push latency", "Wake latency", "Waiting calls", "Datagram"):
        assert wanted in titles
    exprs = " ".join(expr for _, expr in dashboard_queries())
    for metric in (
        "pusher_pushes_total",
        "pusher_push_duration_seconds_bucket",
        "pusher_wake_duration_seconds_bucket",
        "pusher_call_wait_seconds_bucket",
        "pusher_waiting_calls",
        "pusher_datagrams_total",
    ):
        assert metric in exprs


@pytest.mark.slow
async def test_every_dashboard_query_returns_data_from_a_real_prometheus(tmp_path: Path) -> None:
    queries = dashboard_queries()
    prometheus_binary()  # skip (or fail under CI) before starting anything
    with trio.fail_after(90):
        async with observed_sidecar(tmp_path) as world:
            assert world.running.metrics is not None
            prometheus = Prometheus(tmp_path, f"127.0.0.1:{world.running.metrics[1]}")
            try:
                await prometheus.ready()
                # Storms until Prometheus saw the counters move in at least 3 scrapes,
                # so every rate() over the window has two different samples.
                moved = 'changes(pusher_pushes_total{provider="apple",outcome="delivered"}[1m])'
                for round_ in range(30):
                    await push_storm(world, waking=5, sleeping=2, dead=1, prefix=f"r{round_}-")
                    seen = await prometheus.query(moved)
                    if seen and float(seen[0]["value"][1]) >= 3:
                        break
                else:
                    pytest.fail("prometheus did not see the push counters move")
                up = await prometheus.query(f'up{{job="{JOB}"}}')
                assert [s["value"][1] for s in up] == ["1"]

                empty: list[str] = []
                for title, expr in queries:
                    result = await prometheus.query(grafana_expand(expr))
                    values = [float(sample["value"][1]) for sample in result]
                    if not any(not math.isnan(v) for v in values):
                        empty.append(f"{title}: {expr} -> {values}")
                assert not empty, "queries without data:\n" + "\n".join(empty)

                # The dashboard's $job and $instance variables find this sidecar.
                jobs = await trio.to_thread.run_sync(
                    lambda: prometheus.get(
                        "/api/v1/label/job/values", **{"match[]": "pusher_pushes_total"}
                    )
                )
                assert jobs["data"] == [JOB]
            finally:
                prometheus.stop()
