"""Time-boxed mutation fuzzing of ``sip.parse_message`` and ``sip.decode_hep``.

The promise under test: on any input, ``parse_message`` (and every lazy accessor
of what it returns) raises nothing but ``sip.SipParseError``, and ``decode_hep``
nothing but ``sip.HepParseError``. Seeds are the messages in ``tests/data/sip``
and their HEPv3 encodings; mutations are byte-level (flips, inserts, deletes,
splices) and grammar-aware (SIP delimiters, line ends, folding, HEP length fields).
Inputs that still parse go back into the pool, so mutations pile up.

Run: ``python -m load.fuzz --seconds 60 [--seed 1]``. Prints iterations and
outcomes by kind; exits 1 if anything else escaped (and prints those inputs).
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sip

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "sip"
POOL_LIMIT = 2000  # inputs kept for further mutation, per target

# Fragments that steer mutations into the grammar's corners.
SIP_TOKENS = [
    b";", b",", b'"', b"\\", b"<", b">", b":", b"=", b"@", b"%", b"%4", b"[", b"]", b"?", b"*",
    b"\r\n", b"\n", b"\r", b"\r\n ", b"\n\t", b"\r\n\r\n", b"\n\n", b" ", b"\t", b"\x00", b"\xff",
    b"sip:", b"sips:", b"tel:", b"[::1]", b"[2001:db8::1]:5061", b":65536", b":99999",
    b"Contact: ", b"m: ", b"Content-Length: ", b"Content-Length: 99999", b"CSeq: ",
    b"Call-ID: ", b"Expires: ", b"expires=", b";expires=4294967296", b'+sip.instance="<urn:',
    b"9" * 12, b"SIP/2.0", b"SIP/2.0 200 OK\r\n", b"REGISTER ", b"\xc3\xa9", b"\xe2\x80\xa8",
]  # fmt: skip
HEP_U16 = [0, 1, 5, 6, 7, 8, 16, 22, 0x7FFF, 0xFFFF]


@dataclass
class Result:
    iterations: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, bytes, str]] = field(default_factory=list)  # target, input, error

    @property
    def ok(self) -> bool:
        return not self.failures


def seeds() -> tuple[list[bytes], list[bytes]]:
    """The SIP corpus, its HEPv3 encodings (IPv4 and IPv6, with and without extras),
    and the HEP packets captured from Kamailio's siptrace."""
    messages = [p.read_bytes() for p in sorted(CORPUS.glob("*.sip"))]
    heps = []
    for i, m in enumerate(messages):
        if i % 2:
            heps.append(sip.encode_hep(m, src=("2001:db8::1", 5060), dst=("::1", 9060)))
        else:
            heps.append(
                sip.encode_hep(
                    m,
                    src=("192.0.2.1", 5060),
                    dst=("127.0.0.1", 9060),
                    timestamp=1764147600.5,
                    capture_id=i,
                    auth_key="key",
                    correlation_id=b"c",
                )
            )
    heps += [p.read_bytes() for p in sorted(CORPUS.glob("*.hep"))]  # captured from Kamailio
    return messages, heps


def _exercise(msg: sip.Request | sip.Response) -> None:
    for accessor in (
        msg.contacts,
        lambda: msg.to,
        lambda: msg.from_,
        lambda: msg.expires,
        lambda: msg.user_agent,
        lambda: msg.uri if isinstance(msg, sip.Request) else None,
        msg.headers.items,
    ):
        try:
            accessor()
        except sip.SipParseError:
            pass
    for contact in msg.contacts() if _safe_contacts(msg) else ():
        sip.unquote_param(contact.params.get("pn-tok"))


def _safe_contacts(msg: sip.Request | sip.Response) -> bool:
    try:
        msg.contacts()
    except sip.SipParseError:
        return False
    return True


def check_sip(data: bytes) -> str:
    """'ok' or 'SipParseError'; anything else propagates."""
    try:
        msg = sip.parse_message(data)
    except sip.SipParseError:
        return "SipParseError"
    _exercise(msg)
    return "ok"


def check_hep(data: bytes) -> str:
    try:
        packet = sip.decode_hep(data)
    except sip.HepParseError:
        return "HepParseError"
    # what the sniffer does next
    check_sip(packet.payload)
    return "ok"


def mutate(rng: random.Random, data: bytes, pool: list[bytes], hep: bool) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 5))):
        n = len(buf)
        op = rng.randrange(10 if hep else 9)
        pos = rng.randrange(n + 1)
        if op == 0 and n:  # flip a bit
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # random byte
            buf[rng.randrange(n)] = rng.randrange(256)
        elif op == 2:  # insert random bytes
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and n:  # delete a range
            del buf[pos : pos + rng.randint(1, 32)]
        elif op == 4 and n:  # duplicate a range
            end = min(n, pos + rng.randint(1, 64))
            buf[end:end] = buf[pos:end]
        elif op == 5:  # insert a grammar fragment
            buf[pos:pos] = rng.choice(SIP_TOKENS)
        elif op == 6:  # overwrite with a grammar fragment
            tok = rng.choice(SIP_TOKENS)
            buf[pos : pos + len(tok)] = tok
        elif op == 7 and pool:  # splice with another input
            other = rng.choice(pool)
            cut = rng.randrange(len(other) + 1)
            buf[pos:] = other[cut:]
        elif op == 8 and n:  # truncate
            del buf[rng.randrange(n) :]
        elif op == 9 and n >= 2:  # HEP: a length-like u16 at an even offset
            i = rng.randrange(0, n - 1) & ~1
            value = rng.choice([*HEP_U16, n, n - i, rng.randrange(65536)]) & 0xFFFF
            buf[i : i + 2] = struct.pack("!H", value)
    return bytes(buf[:70000])


def run(
    seconds: float,
    seed: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Result:
    """Fuzz both targets for about ``seconds`` of wall time; never raises for findings."""
    rng = random.Random(seed)
    messages, heps = seeds()
    pools: dict[str, list[bytes]] = {"sip": list(messages), "hep": list(heps)}
    checks: dict[str, Callable[[bytes], str]] = {"sip": check_sip, "hep": check_hep}
    result = Result()
    deadline = time.monotonic() + seconds
    next_report = time.monotonic() + 10
    while True:
        for _ in range(200):
            target = "hep" if rng.random() < 0.3 else "sip"
            pool = pools[target]
            data = mutate(rng, rng.choice(pool), pool, target == "hep")
            if target == "sip" and rng.random() < 0.02:
                data = sip.encode_hep(data[:60000], src=("10.0.0.1", 1), dst=("10.0.0.2", 2))
                target = "hep"
            try:
                outcome = checks[target](data)
            except Exception as exc:  # the bug class we hunt
                outcome = f"BUG {type(exc).__name__}"
                if len(result.failures) < 20:
                    result.failures.append((target, data, repr(exc)))
            result.outcomes[f"{target}: {outcome}"] += 1
            result.iterations += 1
            if outcome == "ok":
                if len(pool) < POOL_LIMIT:
                    pool.append(data)
                else:
                    pool[rng.randrange(len(messages), POOL_LIMIT)] = data
        now = time.monotonic()
        if now >= deadline:
            return result
        if log is not None and now >= next_report:
            next_report = now + 10
            log(f"  ... {result.iterations} iterations")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fuzz sip.parse_message and sip.decode_hep.")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"fuzzing parse_message and decode_hep for {args.seconds:g} s, seed {seed}")
    started = time.process_time()
    result = run(args.seconds, seed, log=print)
    cpu = time.process_time() - started
    print(
        f"iterations: {result.iterations} ({result.iterations / max(cpu, 1e-9):,.0f} per CPU second)"
    )
    for kind, count in sorted(result.outcomes.items()):
        print(f"  {kind:<28} {count}")
    if result.ok:
        print("only SipParseError / HepParseError escaped: OK")
        return 0
    print(f"FAILED: {len(result.failures)} inputs raised something else (seed {seed}):")
    for target, data, error in result.failures:
        print(f"  [{target}] {error}\n    input: {data[:400]!r}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
