"""`pusher-trio status` as tables an operator reads on a terminal (pure: a status in, text out).

Like `kamcmd`/`kamcli`: a few headline numbers, then one table per subject
(pushes by provider and outcome, push requests by result, datagrams by outcome,
latencies). Piped or with `--json`, the CLI prints the JSON instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

OUTCOMES = ("delivered", "token_invalid", "retry_later", "auth_failed", "rejected")


def table(rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> list[str]:
    """Columns padded to their widest cell (`right`: column indexes aligned right, numbers)."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


def status_text(status: Mapping[str, Any]) -> str:
    """The `status` result as headline numbers plus tables."""
    out: list[str] = []
    waiters = _map(status.get("waiters"))
    providers = _map(status.get("providers"))
    headline = [
        ("uptime", f"{_num(status.get('uptime_s'))} s"),
        ("devices", _num(status.get("devices"))),
        (
            "waiting calls",
            f"{_num(status.get('waiting'))} (peak {_num(waiters.get('peak'))},"
            f" max {_num(waiters.get('max_waiting'))})",
        ),
        ("registrations", _num(status.get("registrations"))),
        ("connections", _num(providers.get("connections"))),
    ]
    hep = _map(status.get("hep"))
    if hep.get("capture") not in (None, "-"):
        headline.append(
            (
                "homer",
                f"{hep['capture']}: {_num(hep.get('sent'))} events sent,"
                f" {_num(hep.get('dropped'))} dropped, {_num(hep.get('errors'))} errors",
            )
        )
    out.extend(table([[f"{label}:", value] for label, value in headline]))

    by_provider = _map(status.get("pushes_by_provider"))
    if by_provider:
        rows = [["PUSHES", *(o.upper() for o in OUTCOMES)]]
        for provider, counts in sorted(by_provider.items()):
            rows.append([str(provider), *(_num(_map(counts).get(o, 0)) for o in OUTCOMES)])
        out += ["", *table(rows, right=range(1, len(OUTCOMES) + 1))]
    else:
        pushes = _map(status.get("pushes"))
        out += ["", f"pushes: {sum(v for v in pushes.values() if isinstance(v, int))} (none yet)"]

    requests = _map(status.get("requests"))
    if requests:
        rows = [["PUSH REQUESTS", "COUNT"]]
        rows += [[str(k), _num(v)] for k, v in sorted(requests.items())]
        out += ["", *table(rows, right=[1])]

    latency = _map(status.get("latency_ms"))
    if latency:
        rows = [["LATENCY (ms)", "COUNT", "MEAN", "P50", "P99", "MAX"]]
        for name, summary in latency.items():
            s = _map(summary)
            rows.append(
                [str(name), *(_num(s.get(k)) for k in ("count", "mean", "p50", "p99", "max"))]
            )
        out += ["", *table(rows, right=range(1, 6))]

    datagrams = _map(status.get("datagrams"))
    shown = [
        (k, v)
        for k, v in datagrams.items()
        if k in ("received", "registers", "responses", "ignored_not_register", "errors")
        or str(k).startswith("dropped")
    ]
    if shown:
        rows = [["DATAGRAMS", "COUNT"]] + [[str(k), _num(v)] for k, v in shown]
        out += ["", *table(rows, right=[1])]
    errors = status.get("errors")
    if isinstance(errors, list) and errors:
        out += ["", "errors: " + "; ".join(str(e) for e in errors)]
    return "\n".join(out) + "\n"


__all__ = ["status_text", "table"]
