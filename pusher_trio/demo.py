"""`pusher-trio demo`: the whole flow on this machine, with nothing external.

A sidecar (`app.run`) on a temporary state folder; the APNs and FCM stand-ins
shipped in the package (`pusher_trio.standins`) with throw-away credentials; apps added over the control socket; simulated phones that send
their REGISTER and its 200 OK as HEPv3 copies, go to sleep (expires=0), get
pushed and register again; a simulated Kamailio that calls `push` over TCP (as
janssonrpcc does). It prints a timeline with the milliseconds of each step.
"""

from __future__ import annotations

import json
import secrets
import socket
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import attrs
import trio

from .config import (
    Config,
    ControlConfig,
    LogConfig,
    PushConfig,
    SnifferConfig,
    StoreConfig,
)
from .control import jsonrpc
from .control.client import ControlClient, ControlConnectionLost, open_control
from .model import mask_token

DOMAIN = "example.com"
TEAM_ID = "DEMOTEAM42"
IOS_BUNDLE = "org.example.demo"
ANDROID_APP = "org.example.demo.android"
WEB_APP = "org.example.demo.web"
FCM_PROJECT = "pusher-trio-demo"
PUSH_TIMEOUT = 10.0  # seconds the simulated Kamailio lets a push wait
STEP_TIMEOUT = 5.0  # any single step of the demo taking longer is a failure
WAKE_DELAY = 0.02  # the phone app needs a moment to start and register (20 ms)


class DemoError(Exception):
    """A step of the demo failed; the message is the one line to show."""


def local_config(folder: Path, *, tcp: str = "127.0.0.1:0", **push: Any) -> Config:
    """A sidecar on loopback with its state in `folder` (the demo's, and the tests').

    Sniffer on a free UDP port; control socket `folder/run/control.sock` and, unless
    `tcp=""`, TCP on a free port; store `folder/state/pusher.db`; `push` settings
    as given (`wait_timeout`, `ca_file`, ...); log level warning.
    """
    return Config(
        control=ControlConfig(unix_socket=str(folder / "run" / "control.sock"), tcp=tcp),
        sniffer=SnifferConfig(listen=["udp:127.0.0.1:0"]),
        store=StoreConfig(path=str(folder / "state" / "pusher.db")),
        push=PushConfig(**push),
        log=LogConfig(level="warning"),
    )


# --- the timeline ----------------------------------------------------------------------------


@attrs.define
class Timeline:
    out: TextIO
    json_lines: bool = False
    t0: float = attrs.field(factory=time.perf_counter)
    last: float = attrs.field(factory=time.perf_counter)
    events: list[dict[str, Any]] = attrs.field(factory=list)
    closed: bool = False

    def note(self, what: str, detail: str = "", *, since: float | None = None) -> float:
        """Print one step: time since start, step duration (since `since` or the last step)."""
        now = time.perf_counter()
        step_ms = (now - (self.last if since is None else since)) * 1000
        at_ms = (now - self.t0) * 1000
        self.last = now
        self.events.append(
            {"at_ms": round(at_ms, 1), "step_ms": round(step_ms, 1), "what": what, "detail": detail}
        )
        if self.json_lines:
            self._write(json.dumps(self.events[-1], ensure_ascii=False))
        else:
            self._write(f"{at_ms:8.1f} ms  {what:<16} {detail}  (+{step_ms:.1f} ms)")
        return now

    def say(self, text: str) -> None:
        if not self.json_lines:
            self._write(text)

    def _write(self, line: str) -> None:
        if self.closed:
            return
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except BrokenPipeError:  # `pusher-trio demo | head`: the flow still runs to the end
            self.closed = True


# --- SIP messages of the simulated phone ------------------------------------------------------


@attrs.define
class Phone:
    """A mobile SIP app: its AOR, its Contact with push params, its REGISTER dialog."""

    label: str
    user: str
    ip: str
    port: int
    contact_params: str
    user_agent: str
    instance: str = attrs.field(factory=lambda: f"<urn:uuid:{uuid.uuid4()}>")
    call_id: str = attrs.field(factory=lambda: f"{secrets.token_hex(8)}@demo")
    from_tag: str = attrs.field(factory=lambda: secrets.token_hex(4))
    cseq: int = 0

    @property
    def aor(self) -> str:
        return f"{self.user}@{DOMAIN}"

    def register(self, expires: int) -> tuple[bytes, bytes]:
        """(REGISTER, its 200 OK) as Kamailio would copy them."""
        self.cseq += 1
        branch = f"z9hG4bK{secrets.token_hex(6)}"
        contact = (
            f"<sip:{self.user}@{self.ip}:{self.port};transport=tcp;{self.contact_params}>"
            f';+sip.instance="{self.instance}";expires={expires}'
        )
        common = (
            f"Via: SIP/2.0/TCP {self.ip}:{self.port};branch={branch};received={self.ip}\r\n"
            f"From: <sip:{self.user}@{DOMAIN}>;tag={self.from_tag}\r\n"
        )
        register = (
            f"REGISTER sip:{DOMAIN} SIP/2.0\r\n" + common + f"To: <sip:{self.user}@{DOMAIN}>\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {self.cseq} REGISTER\r\n"
            "Max-Forwards: 70\r\n"
            f"Contact: {contact}\r\n"
            f"User-Agent: {self.user_agent}\r\n"
            f"Expires: {expires}\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        ok = (
            "SIP/2.0 200 OK\r\n"
            + common
            + f"To: <sip:{self.user}@{DOMAIN}>;tag={secrets.token_hex(4)}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {self.cseq} REGISTER\r\n"
            + (f"Contact: {contact}\r\n" if expires else "")
            + "Content-Length: 0\r\n\r\n"
        )
        return register.encode(), ok.encode()


class Mirror:
    """What Kamailio's siptrace does: HEPv3 copies of REGISTER traffic to the sniffer."""

    KAMAILIO = ("127.0.0.1", 5060)  # the addresses written inside the HEP packets

    def __init__(self, sniffer: tuple[str, int]) -> None:
        self.sniffer = sniffer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    def send(self, phone: Phone, messages: tuple[bytes, bytes]) -> None:
        import sip

        register, ok = messages
        now = time.time()
        phone_addr = ("127.0.0.1", phone.port)
        for payload, src, dst in (
            (register, phone_addr, self.KAMAILIO),
            (ok, self.KAMAILIO, phone_addr),
        ):
            packet = sip.encode_hep(payload, src=src, dst=dst, timestamp=now, capture_id=2001)
            self.sock.sendto(packet, self.sniffer)

    def close(self) -> None:
        self.sock.close()


# --- the flow -------------------------------------------------------------------------------------


@attrs.define
class Standin:
    """A running provider stand-in, the app that points at it, and its delivery feed."""

    name: str
    port: int
    app: Any  # model.App
    delivered: trio.MemoryReceiveChannel[str]
    server: Any = None  # the stand-in itself (Web Push: the browser subscribes there)


async def _wait_for_device(admin: ControlClient, aor: str) -> dict[str, Any]:
    with trio.fail_after(STEP_TIMEOUT):
        while True:
            result = await admin.call("devices.list", {"aor": aor})
            devices = result.get("devices", []) if isinstance(result, dict) else []
            valid = [d for d in devices if d.get("state", "valid") == "valid"]
            if valid:
                return dict(valid[0])
            await trio.sleep(0.002)


async def _phone_flow(
    timeline: Timeline,
    phone: Phone,
    mirror: Mirror,
    admin: ControlClient,
    kamailio: ControlClient,
    delivered: trio.MemoryReceiveChannel[str],
    provider: str,
) -> None:
    timeline.say(f"\n{phone.label}: {phone.aor} ({provider})")
    start = time.perf_counter()
    mirror.send(phone, phone.register(600))
    timeline.note("registered", "REGISTER + 200 OK copied to the sniffer as HEPv3", since=start)
    device = await _wait_for_device(admin, phone.aor)
    timeline.note(
        "token learned",
        f"{device.get('type')} app {device.get('app')} token {device.get('token')}"
        f"{' (voip)' if device.get('push_type') == 'voip' else ''}",
    )
    first = {
        "APNs": "a new HTTP/2 + TLS connection",
        "FCM": "an OAuth token exchange and a new HTTP/2 + TLS connection",
        "Web Push": "a VAPID JWT, RFC 8291 encryption and a new HTTP/2 + TLS connection",
    }
    await _call(timeline, phone, mirror, kamailio, delivered, provider, first.get(provider, ""))
    await _call(timeline, phone, mirror, kamailio, delivered, provider, "")


async def _call(
    timeline: Timeline,
    phone: Phone,
    mirror: Mirror,
    kamailio: ControlClient,
    delivered: trio.MemoryReceiveChannel[str],
    provider: str,
    first_cost: str,
) -> None:
    """The phone sleeps, a call arrives, Kamailio asks for a push and waits for the REGISTER."""
    mirror.send(phone, phone.register(0))
    timeline.note("phone sleeps", "REGISTER expires=0 (app suspended, no contact left)")
    call_id = f"demo-call-{secrets.token_hex(4)}"
    call_start = timeline.note(
        "call arrives", f"INVITE for {phone.aor}: Kamailio calls push (call-id {call_id})"
    )
    result: dict[str, Any] = {}

    async def ask() -> None:
        result["value"] = await kamailio.call(
            "push",
            {
                "aor": phone.aor,
                "call_id": call_id,
                "caller_number": "+15550100",
                "caller_name": "Demo Caller",
                "timeout": PUSH_TIMEOUT,
            },
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        with trio.fail_after(STEP_TIMEOUT):
            token = await delivered.receive()
        cost = f" (first push: {first_cost})" if first_cost else " (connection reused)"
        timeline.note(
            "push sent",
            f"{provider} stand-in accepted the push for {mask_token(token)}{cost}",
            since=call_start,
        )
        await trio.sleep(WAKE_DELAY)
        mirror.send(phone, phone.register(600))
        timeline.note(
            "REGISTER seen",
            f"the phone woke up ({WAKE_DELAY * 1000:.0f} ms app start) and registered again",
        )
    reply = result["value"]
    if not isinstance(reply, dict) or reply.get("status") != "registered":
        raise DemoError(f"push for {phone.aor} answered {reply!r}")
    timeline.note(
        "call resumed",
        f"push answered registered after {reply.get('waited_ms')} ms; Kamailio relays the INVITE"
        f" to {reply.get('contact')}",
        since=call_start,
    )


async def _start_standins(nursery: trio.Nursery, tmp: Path, fcm: bool) -> tuple[str, list[Standin]]:
    """Start the packaged stand-ins with throw-away credentials; (CA file, stand-ins).

    The apps are built with the same credential checks as `pusher-trio add-*-app`.
    """
    from . import providers
    from .model import App
    from .standins import certs, fake_apns, fake_fcm

    authority = certs.Authority()  # one CA for both stand-ins: one [push] ca_file
    ca_file = str(authority.write_ca(tmp / "ca.pem"))
    standins: list[Standin] = []

    def feed() -> tuple[Callable[[str, Any, Any], None], trio.MemoryReceiveChannel[str]]:
        send, receive = trio.open_memory_channel[str](16)

        def delivered(token: str, headers: Any, payload: Any) -> None:
            send.send_nowait(token)

        return delivered, receive

    hook, delivered = feed()
    apns = fake_apns.FakeApns(authority=authority, topics={IOS_BUNDLE}, on_delivered=hook)
    port = await nursery.start(apns.serve)
    auth, _warnings = providers.load_apple_cert(apns.client_pem(IOS_BUNDLE), time.time())
    app = App(IOS_BUNDLE, "apple", auth, host=f"127.0.0.1:{port}", push_type="voip")
    standins.append(Standin("APNs", port, app, delivered))
    if fcm:
        hook, delivered = feed()
        server = fake_fcm.FakeFcm(authority=authority, on_delivered=hook)
        port = await nursery.start(server.serve)
        account = server.new_service_account(FCM_PROJECT)
        firebase = providers.load_service_account(json.dumps(account), base_url=server.base_url)
        standins.append(Standin("FCM", port, App(ANDROID_APP, "firebase", firebase), delivered))
        # A browser SIP client (JsSIP, SIP.js): Web Push with a VAPID key, as
        # `pusher-trio add-webpush-app --generate-vapid-key` makes one.
        from .model import WebPushAuth
        from .standins import fake_webpush

        hook, delivered = feed()
        web = fake_webpush.FakeWebPush(authority=authority, on_delivered=hook)
        port = await nursery.start(web.serve)
        vapid = WebPushAuth(providers.webpush.generate_vapid_key(), "mailto:ops@example.com")
        app = App(WEB_APP, "webpush", vapid, push_type="voip")
        standins.append(Standin("Web Push", port, app, delivered, web))
    return ca_file, standins


async def _phones(
    timeline: Timeline,
    sniffer: tuple[str, int],
    admin: ControlClient,
    kamailio: ControlClient,
    standins: list[Standin],
    fcm: bool,
) -> None:
    """An iOS phone (APNs), then an Android phone (FCM) and a browser (Web Push): register,
    sleep, get a call twice."""
    from . import providers

    mirror = Mirror(sniffer)
    try:
        ios = Phone(
            "iOS phone",
            "alice",
            "198.51.100.7",
            50601,
            f"pn-provider=apns;pn-prid={secrets.token_hex(32)};pn-param={TEAM_ID}.{IOS_BUNDLE}.voip",
            "DemoPhone/1.0 (iOS 17)",
        )
        await _phone_flow(timeline, ios, mirror, admin, kamailio, standins[0].delivered, "APNs")
        if fcm:
            android = Phone(
                "Android phone",
                "bob",
                "198.51.100.8",
                50602,
                f"pn-provider=fcm;pn-prid={secrets.token_urlsafe(120)};pn-param={FCM_PROJECT}",
                "DemoPhone/1.0 (Android 14)",
            )
            await _phone_flow(
                timeline, android, mirror, admin, kamailio, standins[1].delivered, "FCM"
            )
            web = standins[2]
            browser = web.server.subscribe(providers.webpush.app_vapid_public_key(web.app))
            endpoint = urllib.parse.quote(browser.endpoint, safe="")
            webphone = Phone(
                "Browser",
                "carol",
                "198.51.100.9",
                50603,
                f"pn-provider=webpush;pn-prid={endpoint};pn-param={browser.p256dh}.{browser.auth}",
                "JsSIP 3.10.1 (demo browser)",
            )
            await _phone_flow(
                timeline, webphone, mirror, admin, kamailio, web.delivered, "Web Push"
            )
    finally:
        mirror.close()


async def run_demo(out: TextIO, *, fcm: bool = True, json_lines: bool = False) -> None:
    from .app import run
    from .store import unstructure_app

    timeline = Timeline(out, json_lines)
    with tempfile.TemporaryDirectory(prefix="pusher-trio-demo-") as tmpdir:
        tmp = Path(tmpdir)
        async with trio.open_nursery() as nursery:
            ca_file, standins = await _start_standins(nursery, tmp, fcm)
            config = local_config(tmp, wait_timeout=PUSH_TIMEOUT, ca_file=ca_file)
            stopped = trio.Event()

            async def sidecar(*, task_status: trio.TaskStatus[Any]) -> None:
                try:
                    await run(config, task_status=task_status, handle_signals=False)
                finally:
                    stopped.set()

            running = await nursery.start(sidecar)
            timeline.say(f"pusher-trio demo (temporary state in {tmp})")
            timeline.note(
                "sidecar up",
                f"sniffer udp:{running.sniffer[0][0]}:{running.sniffer_port}, control"
                f" {running.control_socket} and tcp:{running.control_tcp[0]}:{running.control_port}; "
                + ", ".join(f"{s.name} stand-in https://127.0.0.1:{s.port}" for s in standins),
            )
            tcp = "{}:{}".format(*running.control_tcp)
            async with open_control(running.control_socket) as admin, open_control(tcp) as kamailio:
                for standin in standins:
                    app = standin.app
                    await admin.call("apps.add", {"app": unstructure_app(app)})
                    timeline.note(
                        "app added", f"{app.type} app {app.app_id} -> {standin.name} stand-in"
                    )
                await _phones(timeline, running.sniffer[0], admin, kamailio, standins, fcm)
                status = await admin.call("status", {})
            timeline.say(
                f"\nstatus: {status.get('devices', '?')} devices, pushes {json.dumps(status.get('pushes', {}))},"
                f" registrations {status.get('registrations', '?')}"
                if isinstance(status, dict)
                else ""
            )
            running.shutdown()  # the graceful stop, as SIGTERM does it
            with trio.move_on_after(5.0):
                await stopped.wait()
            nursery.cancel_scope.cancel()  # the stand-ins serve until cancelled
        timeline.say("done: every call was delivered after a push")


def _single(exc: BaseException) -> BaseException:
    """The one failure inside nested one-exception groups (nurseries wrap what they raise)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main(*, fcm: bool = True, out: TextIO | None = None, json_lines: bool = False) -> int:
    """Entry point of `pusher-trio demo`; returns the exit code."""
    stream = out if out is not None else sys.stdout
    from .logs import reset_logging, setup_logging

    setup_logging("error", "text")  # the timeline is the output; only errors besides it
    try:
        trio.run(lambda: run_demo(stream, fcm=fcm, json_lines=json_lines))
    except BaseException as raised:
        failure = _single(raised)
        if not isinstance(
            failure, DemoError | jsonrpc.ControlError | ControlConnectionLost | trio.TooSlowError
        ):
            raise
        message = str(failure) or type(failure).__name__
        if isinstance(failure, trio.TooSlowError):
            message = f"a step took longer than {STEP_TIMEOUT:g} s"
        sys.stderr.write(f"pusher-trio: error: demo failed: {' '.join(message.split())}\n")
        return 1
    finally:
        reset_logging()
    return 0
