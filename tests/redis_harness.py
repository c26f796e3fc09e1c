"""A real redis-server for the tests: its own free port, temp folder, no persistence.

Started with `--save ''` (and no AOF unless asked), stopped by its PID. Missing
redis-server skips the test, but fails it under CI=true (`.ci/run` installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server")
START_TIMEOUT = 10.0


def require_redis() -> str:
    if REDIS_SERVER is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and redis-server is not installed")
        pytest.skip("redis-server not installed")
    return REDIS_SERVER


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process; `restart()` keeps the port (and the data only with AOF)."""

    def __init__(self, folder: Path, *, appendonly: bool = False, extra: list[str] | None = None):
        self.binary = require_redis()
        self.folder = folder
        self.appendonly = appendonly
        self.extra = list(extra or [])
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.unix_socket = str(folder / "redis.sock")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        for _attempt in range(5):
            self.port = self.port or free_port()
            args = [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--dir", str(self.folder), "--unixsocket", self.unix_socket,
                "--unixsocketperm", "700", "--daemonize", "no", "--loglevel", "warning",
                "--logfile", str(self.folder / "redis.log"), *self.extra,
            ]  # fmt: skip
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
            if self._wait_ready():
                return self
            self.stop()
            self.port = 0  # taken meanwhile: another free port
        raise RuntimeError(f"redis-server did not start; see {self.folder / 'redis.log'}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64)[:1] in (b"+", b"-"):  # PONG, or NOAUTH with ACLs
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def command(self, *args: str) -> bytes:
        """One inline command over a plain socket (the harness does not use the code under test)."""
        import hiredis

        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(hiredis.pack_command(args))
            reader = hiredis.Reader()
            while True:
                reader.feed(s.recv(65536))
                reply = reader.gets()
                if reply is not False:
                    return reply  # type: ignore[no-any-return]

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """kill -9: nothing saved, connections reset."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()
