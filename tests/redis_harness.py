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


class TwoNodes:
    """The `Store` interface over two Redis-backed nodes: writes go to node A, reads are
    answered by node B from what Redis holds (its cache is dropped first), so a test
    written for one store checks that every behaviour survives the trip through Redis.

    The two nodes run in a trio loop of their own thread; the calls cross over with
    `trio.from_thread`. After each write A's queue is flushed and B is given (≤ 2 s)
    to receive the app/config change events.
    """

    def __init__(self, url: str, prefix: str, secret_key: str | None = None) -> None:
        import threading

        self.url = url
        self.prefix = prefix
        self.secret_key = secret_key
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._thread_main, daemon=True)
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("the Redis nodes did not start")
        if self._error is not None:
            raise self._error

    def _thread_main(self) -> None:
        import trio

        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        import trio

        from pusher_trio.config import StoreConfig
        from pusher_trio.redis.cluster import Cluster

        key_file = ""
        if self.secret_key is not None:
            key_path = self._key_path()
            key_file = str(key_path)
        config = StoreConfig(
            backend="redis", redis_url=self.url, key_prefix=self.prefix, secret_key_file=key_file
        )
        self.token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        self.a = Cluster.from_config(config, refresh_interval=0.0)
        self.b = Cluster.from_config(config, refresh_interval=0.0)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.a.run)
            await nursery.start(self.b.run)
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def _key_path(self) -> Path:
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="pusher-key-"))
        path = folder / "secret.key"
        path.write_text(self.secret_key + "\n")  # type: ignore[operator]
        os.chmod(path, 0o600)
        return path

    # --- crossing into the trio thread -------------------------------------------------
    def _run_sync(self, fn, *args):  # type: ignore[no-untyped-def]
        import trio

        return trio.from_thread.run_sync(fn, *args, trio_token=self.token)

    def _run(self, afn, *args):  # type: ignore[no-untyped-def]
        import trio

        return trio.from_thread.run(afn, *args, trio_token=self.token)

    def _write(self, name: str, *args):  # type: ignore[no-untyped-def]
        result = self._run_sync(getattr(self.a.store, name), *args)
        self._run(self._settle)
        return result

    async def _settle(self) -> None:
        import trio

        with trio.fail_after(10):
            assert await self.a.store.aflush(), "node A could not write to Redis"
        with trio.move_on_after(2.0):
            while (self.b.store.apps(), self.b.store.get_config()) != (  # noqa: ASYNC110
                self.a.store.apps(),
                self.a.store.get_config(),
            ):
                await trio.sleep(0.005)

    async def _read(self, aor: str | None):  # type: ignore[no-untyped-def]
        if aor is not None:
            self.b.store.forget(aor)
        return await self.b.store.fetch_devices(aor)

    async def _count(self) -> int:
        await self.b.store._refresh_count()
        return self.b.store.device_count()

    # --- the Store interface ---------------------------------------------------------------
    def devices(self, aor: str | None = None):  # type: ignore[no-untyped-def]
        return self._run(self._read, aor)

    def device(self, aor: str, device_id: str):  # type: ignore[no-untyped-def]
        return next((d for d in self.devices(aor) if d.device_id == device_id), None)

    def device_count(self) -> int:
        return self._run(self._count)  # type: ignore[no-any-return]

    def put_devices(self, devices):  # type: ignore[no-untyped-def]
        return self._write("put_devices", list(devices))

    def unbind(self, aor, device_ids=None):  # type: ignore[no-untyped-def]
        return self._write("unbind", aor, device_ids)

    def invalidate(self, aor, device_id, reason, now):  # type: ignore[no-untyped-def]
        return self._write("invalidate", aor, device_id, reason, now)

    def remove_devices(self, aor, token=None):  # type: ignore[no-untyped-def]
        return self._write("remove_devices", aor, token)

    def apps(self):  # type: ignore[no-untyped-def]
        return self._run_sync(self.b.store.apps)

    def put_app(self, app):  # type: ignore[no-untyped-def]
        return self._write("put_app", app)

    def remove_app(self, app_id):  # type: ignore[no-untyped-def]
        return self._write("remove_app", app_id)

    def get_config(self, key=None):  # type: ignore[no-untyped-def]
        return self._run_sync(self.b.store.get_config, key)

    def set_config(self, key, value):  # type: ignore[no-untyped-def]
        return self._write("set_config", key, value)

    def delete_config(self, key):  # type: ignore[no-untyped-def]
        return self._write("delete_config", key)

    def flush(self) -> None:
        self._run(self._settle)

    def statistics(self):  # type: ignore[no-untyped-def]
        return self._run_sync(self.b.store.statistics)

    def close(self) -> None:
        if self._thread.is_alive():
            self._run_sync(self._stop.set)
            self._thread.join(10)
