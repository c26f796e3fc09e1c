"""Parse rates of pusher-trio's `sip` next to `sipmessage`, in one run.

The job measured is what the sniffer does per datagram: parse, every Contact with
its URI and header params, Call-ID, CSeq, Expires and User-Agent. Rates are
messages per CPU second (``time.process_time``); both parsers run interleaved, in
rounds, and the best round of each counts, so other load on the machine moves
both alike. Bounded: about ``seconds`` of CPU in total (default 8).

Run: ``python -m load.bench_sip [--seconds S]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sip

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "sip"
MESSAGES = {
    "REGISTER (RFC 8599, digest auth)": "linphone_rfc8599_register.sip",
    "200 OK (3 Contacts)": "kamailio_200ok_3contacts.sip",
}


def ours(data: bytes) -> int:
    msg = sip.parse_message(data)
    n = 0
    for contact in msg.contacts():
        n += len(contact.uri.params) + len(contact.params) + (contact.expires or 0)
    _ = (msg.call_id, msg.cseq, msg.expires, msg.user_agent)
    return n


def _sipmessage() -> Callable[[bytes], int] | None:
    try:
        from sipmessage import Address, CSeq, Message
    except ImportError:
        return None

    def theirs(data: bytes) -> int:
        msg: Any = Message.parse(data)
        n = 0
        for value in msg.headers.getlist("Contact"):
            for contact in Address.parse_many(value):
                n += len(contact.uri.parameters) + len(contact.parameters)
                expires = contact.parameters.get("expires")
                n += int(expires) if expires else 0
        _ = (
            msg.headers.get("Call-ID"),
            CSeq.parse(msg.headers.get("CSeq")),
            msg.headers.get("Expires"),
            msg.headers.get("User-Agent"),
        )
        return n

    return theirs


def _round(fn: Callable[[bytes], int], data: bytes, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        fn(data)
    return time.process_time() - start


def measure(seconds: float = 8.0) -> list[dict[str, Any]]:
    """Rates per message kind: ``[{"message", "bytes", "sip", "sipmessage", "ratio"}]``."""
    impls: dict[str, Callable[[bytes], int]] = {"sip": ours}
    theirs = _sipmessage()
    if theirs is not None:
        impls["sipmessage"] = theirs
    results = []
    budget = seconds / len(MESSAGES)
    for label, name in MESSAGES.items():
        data = (CORPUS / name).read_bytes()
        best: dict[str, float] = {}
        batch = {k: 200 for k in impls}
        spent = 0.0
        rounds = 0
        while spent < budget or rounds < 3:
            for key, fn in impls.items():
                took = _round(fn, data, batch[key])
                spent += took
                if took > 0:
                    best[key] = max(best.get(key, 0.0), batch[key] / took)
                    # aim at ~50 ms per round
                    batch[key] = max(50, min(20000, int(batch[key] * 0.05 / took)))
            rounds += 1
            if rounds >= 200:
                break
        row: dict[str, Any] = {"message": label, "bytes": len(data), "sip": best["sip"]}
        if "sipmessage" in best:
            row["sipmessage"] = best["sipmessage"]
            row["ratio"] = best["sip"] / best["sipmessage"]
        results.append(row)
    return results


def main(argv: list[str] | None = None) -> int:
    """Print the figures; 0 always (a benchmark asserts nothing about speed).

    Unknown arguments are ignored, so ``load.bench`` can call ``main()`` under its own argv.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="CPU seconds in total")
    args, _ = parser.parse_known_args(argv)
    print("SIP parse + Contacts with params + Call-ID + CSeq + Expires + User-Agent")
    print("(messages per CPU second, best round)")
    results = measure(args.seconds)
    for row in results:
        line = f"  {row['message']:<34} {row['bytes']:>5} B  sip {row['sip']:>9,.0f}/s"
        if "sipmessage" in row:
            line += f"  sipmessage {row['sipmessage']:>9,.0f}/s  ratio {row['ratio']:.2f}x"
        else:
            line += "  (sipmessage not installed)"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
