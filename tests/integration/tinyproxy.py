"""A real forward proxy for the tests: Debian's tinyproxy on 127.0.0.1, a free port.

Started in the foreground (`-d`) with a temporary configuration, stopped by its PID.
Missing tinyproxy skips, or fails under CI=true (as tests/e2e does for kamailio/sipp).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

TINYPROXY = shutil.which("tinyproxy") or (
    "/usr/bin/tinyproxy" if os.path.exists("/usr/bin/tinyproxy") else None
)
START_TIMEOUT = 10.0


def require_tinyproxy() -> str:
    if TINYPROXY is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and tinyproxy is not installed")
        pytest.skip("tinyproxy is not installed")
    return TINYPROXY


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Tinyproxy:
    def __init__(self, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
        self.port = port
        self.process = process
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connects(self) -> list[str]:
        """The CONNECT request lines tinyproxy logged ("CONNECT host:port HTTP/1.1")."""
        lines = self.log.read_text(errors="replace").splitlines()
        return [line.split("): ", 1)[1] for line in lines if "): CONNECT " in line]


@contextmanager
def tinyproxy(
    folder: Path,
    *,
    connect_ports: Sequence[int] = (),
    basic_auth: tuple[str, str] | None = None,
) -> Iterator[Tinyproxy]:
    """Run tinyproxy allowing CONNECT to `connect_ports` only (all ports when empty)."""
    binary = require_tinyproxy()
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [
        f"Port {port}",
        "Listen 127.0.0.1",
        "Timeout 30",
        "MaxClients 50",
        "Allow 127.0.0.1",
        "LogLevel Info",
        *(f"ConnectPort {p}" for p in connect_ports),
    ]
    if basic_auth is not None:
        lines.append(f"BasicAuth {basic_auth[0]} {basic_auth[1]}")
    config = folder / "tinyproxy.conf"
    config.write_text("\n".join(lines) + "\n")
    config.chmod(0o600)
    log = folder / "tinyproxy.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [binary, "-d", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"tinyproxy exited: {log.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("tinyproxy did not listen in time") from None
                time.sleep(0.05)
        yield Tinyproxy(port, process, log)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
