"""Real processes for the end-to-end tests: Kamailio with the shipped config, and sipp.

Kamailio runs in the foreground (`-DD -E`) on free loopback ports, its defines passed
with `-A`; it is stopped with SIGTERM to the PID in its pid file. sipp runs one
scenario from load/sipp/ per process, with explicit `-p`, `-mp`, `-cp` ports (never
5060 or sipp's default 8888). Used by tests/e2e and by load/storm.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]
KAMAILIO_CFG = ROOT / "conf" / "kamailio" / "kamailio.cfg"
SIPP_DIR = ROOT / "load" / "sipp"

KAMAILIO = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/sbin")
SIPP = shutil.which("sipp")

_used_ports: set[int] = set()


def free_port(kind: int = socket.SOCK_DGRAM, *, both: bool = False) -> int:
    """A loopback port free now (UDP by default; `both`: free for UDP and TCP)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port in _used_ports:
            continue
        if both:
            other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
            try:
                with socket.socket(socket.AF_INET, other) as s:
                    s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _used_ports.add(port)
        return port
    raise RuntimeError("no free port")


def free_port_range(n: int) -> int:
    """First of `n` consecutive free UDP ports (sipp -mp uses a few after its base)."""
    for _ in range(200):
        base = free_port()
        ok = True
        for p in range(base + 1, base + n):
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
                break
        if ok:
            _used_ports.update(range(base, base + n))
            return base
    raise RuntimeError("no free port range")


# ---------------------------------------------------------------- Kamailio


@dataclass
class Kamailio:
    rundir: Path
    sip_port: int
    defines: Mapping[str, str | int | None] = field(default_factory=dict)
    cfg: Path = KAMAILIO_CFG
    shm_mb: int = 64
    pkg_mb: int = 8
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    ctl_socket: str = ""  # "unix:PATH" when started with KAM_CTL_SOCKET (kamcmd -s)

    @property
    def pidfile(self) -> Path:
        return self.rundir / "kamailio.pid"

    def argv(self) -> list[str]:
        assert KAMAILIO is not None
        argv = [
            KAMAILIO,
            "-f",
            str(self.cfg),
            "-DD",
            "-E",
            "-Y",
            str(self.rundir),
            "-P",
            str(self.pidfile),
        ]
        argv += ["-m", str(self.shm_mb), "-M", str(self.pkg_mb)]
        defines: dict[str, str | int | None] = {"SIP_PORT": self.sip_port, **self.defines}
        for name, value in defines.items():
            argv += ["-A", name if value is None else f"{name}={value}"]
        return argv

    def check(self) -> None:
        """`kamailio -c` with the same defines; raises with its output on failure."""
        out = subprocess.run([*self.argv(), "-c"], capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"kamailio -c failed:\n{out.stdout}\n{out.stderr}")

    def start(self, timeout: float = 10.0) -> None:
        self.rundir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.rundir / "kamailio.log"
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kamailio exited {self.proc.returncode}:\n{self.log()[-4000:]}")
            if self._ping():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"kamailio did not answer OPTIONS within {timeout}s:\n{self.log()[-4000:]}"
        )

    def _ping(self) -> bool:
        msg = (
            f"OPTIONS sip:127.0.0.1:{self.sip_port} SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKping{n}\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:ping@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1>\r\n"
            "Call-ID: ping-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).format(n=time.monotonic_ns())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.3)
            # the reply goes to the Via's address; put ours there
            port = s.getsockname()[1]
            s.sendto(
                msg.replace("127.0.0.1:9;", f"127.0.0.1:{port};").encode(),
                ("127.0.0.1", self.sip_port),
            )
            try:
                data = s.recv(65535)
            except OSError:
                return False
        return data.startswith(b"SIP/2.0 200")

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        pid = None
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.pidfile.read_text().strip())
        if pid is None:
            pid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # our own process group (start_new_session): the children follow
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None


@contextlib.contextmanager
def running_kamailio(rundir: Path, defines: Mapping[str, str | int | None]) -> Iterator[Kamailio]:
    kam = Kamailio(rundir=rundir, sip_port=free_port(), defines=defines)
    kam.start()
    try:
        yield kam
    finally:
        kam.stop()


SQLITE_SCHEMA = Path("/usr/share/kamailio/db_sqlite")  # Debian's kamailio-sqlite-modules


def subscriber_db(path: Path, users: Mapping[str, str], realm: str = "127.0.0.1") -> str:
    """A SQLite database for `WITH_AUTH`, made with the commands conf/kamailio/README.md
    documents (Debian's schema files, then one INSERT of HA1 per user); returns its DBURL."""
    sqlite3 = shutil.which("sqlite3")
    if sqlite3 is None:
        raise RuntimeError("sqlite3 is not installed (apt-get install sqlite3)")
    for schema in ("standard-create.sql", "auth_db-create.sql"):
        subprocess.run(
            [sqlite3, str(path)], input=(SQLITE_SCHEMA / schema).read_bytes(), check=True
        )
    for user, password in users.items():
        ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
        sql = (
            f"INSERT INTO subscriber (username, domain, ha1) VALUES ('{user}', '{realm}', '{ha1}');"
        )
        subprocess.run([sqlite3, str(path), sql], check=True)
    path.chmod(0o600)
    return quoted(f"sqlite://{path}")


def quoted(value: str) -> str:
    """A string define for `-A NAME=...` (Kamailio wants the quotes)."""
    return '"' + value.replace('"', '\\"') + '"'


# ---------------------------------------------------------------- sipp


@dataclass
class SippResult:
    returncode: int
    messages: str
    errors: str
    stdout: str

    def statuses(self) -> list[tuple[int, str]]:
        """Final and provisional (status, reason) received, in order."""
        found = []
        for block in self.messages.split("----------------------------------------------- "):
            if "message received" not in block:
                continue
            m = re.search(r"^SIP/2\.0 (\d{3}) ([^\r\n]*)", block, re.M)
            if m:
                found.append((int(m.group(1)), m.group(2).strip()))
        return found


def sipp_argv(
    scenario: str,
    *,
    remote: int,
    workdir: Path,
    name: str,
    local_port: int | None = None,
    keys: Mapping[str, str] | None = None,
    service: str | None = None,
    calls: int = 1,
    rate: float | None = None,
    timeout_s: float = 30,
    extra: Sequence[str] = (),
    nice: int = 0,
) -> list[str]:
    assert SIPP is not None
    argv = ["nice", "-n", str(nice)] if nice else []
    argv += [
        SIPP,
        f"127.0.0.1:{remote}",
        "-sf", str(SIPP_DIR / scenario),
        "-t", "u1",
        "-i", "127.0.0.1",
        "-mi", "127.0.0.1",
        "-p", str(local_port or free_port()),
        "-mp", str(free_port_range(4)),
        "-cp", str(free_port()),
        "-m", str(calls),
        "-timeout", f"{timeout_s}s",
        "-timeout_error",
        "-nostdin",
        "-trace_msg", "-message_file", str(workdir / f"{name}.messages.log"),
        "-trace_err", "-error_file", str(workdir / f"{name}.errors.log"),
    ]  # fmt: skip
    if rate is not None:
        argv += ["-r", str(rate)]
    if service is not None:
        argv += ["-s", service]
    for k, v in (keys or {}).items():
        argv += ["-key", k, v]
    argv += list(extra)
    return argv


async def run_sipp(scenario: str, *, workdir: Path, name: str, **kw: object) -> SippResult:
    argv = sipp_argv(scenario, workdir=workdir, name=name, **kw)  # type: ignore[arg-type]
    proc = await trio.run_process(
        argv, capture_stdout=True, capture_stderr=True, check=False, cwd=workdir
    )
    return _result(proc.returncode, workdir, name, proc.stdout + proc.stderr)


def _result(rc: int, workdir: Path, name: str, out: bytes) -> SippResult:
    def read(suffix: str) -> str:
        p = workdir / f"{name}.{suffix}"
        return p.read_text(errors="replace") if p.exists() else ""

    return SippResult(
        rc, read("messages.log"), read("errors.log"), out.decode(errors="replace")[-3000:]
    )


class SippProcess:
    """A sipp started in the background (the phone's UAS); `wait()` for its result."""

    def __init__(self, scenario: str, *, workdir: Path, name: str, **kw: object) -> None:
        self.workdir = workdir
        self.name = name
        argv = sipp_argv(scenario, workdir=workdir, name=name, **kw)  # type: ignore[arg-type]
        self.proc = subprocess.Popen(
            argv, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    async def wait(self) -> SippResult:
        await trio.to_thread.run_sync(self.proc.wait, abandon_on_cancel=True)
        out = self.proc.stdout.read() if self.proc.stdout else b""
        return _result(self.proc.returncode, self.workdir, self.name, out)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()


# ---------------------------------------------------------------- the sidecar


@dataclass
class Sidecar:
    """`pusher-trio serve --config <tmp toml>` as a subprocess, on free loopback ports."""

    workdir: Path
    hep_auth_key: str = ""
    wait_timeout: float = 5
    max_wait: float = 60
    max_waiting: int = 10000
    ca_file: str = ""
    log_level: str = "info"
    log_format: str = "json"
    hep_capture: str = ""  # [hep] capture (Homer), e.g. "udp:127.0.0.1:PORT"
    binding_refresh_lead: float | None = None  # None: the default
    store_backend: str = "sqlite"  # "redis": redis_url below (DESIGN §10)
    redis_url: str = ""
    control_port: int = field(default_factory=lambda: free_port(socket.SOCK_STREAM))
    sniffer_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "pusher.toml"

    @property
    def socket_path(self) -> Path:
        return self.workdir / "control.sock"

    @property
    def log_path(self) -> Path:
        return self.workdir / "sidecar.log"

    @property
    def control(self) -> str:
        return f"127.0.0.1:{self.control_port}"

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            f"""\
[control]
unix_socket = "{self.socket_path}"
unix_mode = "0600"
tcp = "{self.control}"

[sniffer]
listen = ["udp:127.0.0.1:{self.sniffer_port}"]
allow_from = ["127.0.0.0/8"]
hep_auth_key = "{self.hep_auth_key}"
require_2xx = true

[store]
path = "{self.workdir / "pusher.db"}"
backend = "{self.store_backend}"
{f'redis_url = "{self.redis_url}"' if self.redis_url else ""}

[push]
wait_timeout = {self.wait_timeout}
max_wait = {self.max_wait}
max_waiting = {self.max_waiting}
ca_file = "{self.ca_file}"
{"" if self.binding_refresh_lead is None else f"binding_refresh_lead = {self.binding_refresh_lead}"}

[log]
level = "{self.log_level}"
format = "{self.log_format}"
"""
            + (f'\n[hep]\ncapture = "{self.hep_capture}"\n' if self.hep_capture else "")
        )
        return self.config_path

    def cli(
        self, *args: str, check: bool = True, timeout: float = 20
    ) -> subprocess.CompletedProcess[str]:
        """Run `pusher-trio --config <ours> ARGS...` (works whether serve runs or not)."""
        out = subprocess.run(
            [*PUSHER_TRIO, "--config", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.workdir,
        )
        if check and out.returncode != 0:
            raise RuntimeError(
                f"pusher-trio {' '.join(args)} -> {out.returncode}: {out.stderr.strip()}"
            )
        return out

    def start(self, timeout: float = 15.0) -> None:
        self.write_config()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*PUSHER_TRIO, "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"pusher-trio serve exited {self.proc.returncode}:\n{self.log()[-4000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.control_port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"pusher-trio serve did not listen within {timeout}s:\n{self.log()[-4000:]}"
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        rc = self.proc.returncode
        self.proc = None
        return rc


PUSHER_TRIO = [shutil.which("pusher-trio") or "pusher-trio"]
if shutil.which("pusher-trio") is None:
    import sys

    PUSHER_TRIO = [sys.executable, "-m", "pusher_trio"]
