"""The outbound HTTP proxy (DESIGN §9, `[push] proxy`): pure parts of the CONNECT tunnel.

Many data centres reach Apple and Google only through a forward proxy. Every provider
connection then starts with an HTTP/1.1 `CONNECT host:port` to the proxy (RFC 9110
§9.3.6); a 2xx answer turns the TCP connection into a tunnel and TLS starts inside it,
so the proxy never sees the push (end-to-end TLS to the provider, certificate checks
unchanged). The request and the answer go through `h11`, not a hand-written parser.

Credentials: Basic (RFC 7617) in `Proxy-Authorization` (RFC 9110 §11.7.2); the user
may be named in the URL, the password comes from `[push] proxy_password_file`. No
message and no repr made here contains the password.
"""

from __future__ import annotations

import base64
import urllib.parse

import attrs
import h11

# Answers that will not change by retrying: the proxy refuses us (credentials, ACL,
# port not allowed for CONNECT). 502/503/504 (it could not reach the provider) are
# worth another try.
REFUSING_STATUSES = frozenset({401, 403, 405, 407})
MAX_REPLY_HEAD = 16384  # a proxy's answer head larger than this is not a proxy's answer


class ProxyUrlError(ValueError):
    """`[push] proxy` is not `http://[user@]host:port`."""


@attrs.frozen
class Proxy:
    host: str
    port: int
    username: str = ""
    password: str = attrs.field(default="", repr=False)

    @property
    def address(self) -> str:
        """`host:port`, for messages: never the credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The proxy URL without credentials (httpcore takes them separately)."""
        return f"http://{self.address}"

    @property
    def basic_credentials(self) -> tuple[str, str] | None:
        return (self.username, self.password) if self.username else None

    def authorization(self) -> str | None:
        """RFC 7617 Basic credentials, or None when no user is configured."""
        if not self.username:
            return None
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def parse_proxy_url(url: str, password: str = "") -> Proxy:
    """`http://[user@]host:port` -> Proxy; the password is given apart (from its file).

    A password written into the URL is refused: it would sit in the TOML, in shell
    history and in `ps`. The error never repeats the URL's userinfo.
    """
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError as error:  # a bad port number
        raise ProxyUrlError(f"not a proxy URL ({error})") from None
    if parts.scheme != "http":
        raise ProxyUrlError(
            f"expected http://host:port (CONNECT to a plain HTTP proxy), got scheme "
            f"{parts.scheme or 'none'!r}"
        )
    if not parts.hostname:
        raise ProxyUrlError("expected http://host:port: no host")
    if port is None:
        raise ProxyUrlError("expected http://host:port: no port (proxies have no default)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProxyUrlError("expected http://host:port with no path, query or fragment")
    if parts.password is not None:
        raise ProxyUrlError(
            "a password in the proxy URL is refused: name the user only and put the "
            "password in push.proxy_password_file"
        )
    username = urllib.parse.unquote(parts.username or "")
    if ":" in username:
        raise ProxyUrlError("the proxy user name cannot contain ':' (RFC 7617 §2)")
    if password and not username:
        raise ProxyUrlError("a proxy password is set but the URL names no user (http://user@...)")
    if username and not password:
        raise ProxyUrlError("the proxy URL names a user: set push.proxy_password_file")
    return Proxy(parts.hostname, port, username, password)


@attrs.frozen
class TunnelReply:
    """The proxy's answer to CONNECT."""

    status: int
    reason: str

    @property
    def established(self) -> bool:
        return 200 <= self.status < 300

    @property
    def refused(self) -> bool:
        """The proxy refuses us; retrying will not help (credentials, ACL, port)."""
        return self.status in REFUSING_STATUSES

    def describe(self, proxy: Proxy, target: str) -> str:
        what = f"{self.status} {self.reason}".strip()
        if self.status in (401, 407):  # tinyproxy answers CONNECT with 401, RFC 9110 says 407
            hint = " (check push.proxy user and push.proxy_password_file)"
        elif self.status == 403:
            hint = " (does its ACL allow us and CONNECT to that port?)"
        elif self.status >= 500:
            hint = " (the proxy could not reach the provider)"
        else:
            hint = ""
        return f"proxy {proxy.address} answered CONNECT {target} with {what}{hint}"


class TunnelError(Exception):
    """The proxy's answer is not HTTP, too large, or the proxy closed first."""


class Tunnel:
    """Client side of one CONNECT exchange (sans-IO, h11 style).

    `request()` is the bytes to send; feed what comes back to `receive_data` until it
    returns a TunnelReply. After a 2xx, `trailing` holds bytes that followed the
    answer's head (the tunnel's first bytes; none with TLS, where the client speaks
    first, but they are not lost).
    """

    def __init__(self, proxy: Proxy, host: str, port: int) -> None:
        self.proxy = proxy
        authority = f"[{host}]" if ":" in host else host
        self.target = f"{authority}:{port}"
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_REPLY_HEAD)
        self.trailing = b""

    def request(self) -> bytes:
        headers = [("Host", self.target)]
        authorization = self.proxy.authorization()
        if authorization is not None:
            headers.append(("Proxy-Authorization", authorization))
        event = h11.Request(method="CONNECT", target=self.target, headers=headers)
        data = self._h11.send(event)
        assert data is not None
        return data

    def receive_data(self, data: bytes) -> TunnelReply | None:
        """None: more bytes needed. Pass b"" when the proxy closed (TunnelError)."""
        self._h11.receive_data(data)
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as error:
                if not data:
                    raise TunnelError(
                        f"proxy {self.proxy.address} closed before answering CONNECT"
                    ) from None
                raise TunnelError(
                    f"proxy {self.proxy.address}: not an HTTP answer ({error})"
                ) from None
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.InformationalResponse):
                continue  # 1xx before the real answer (RFC 9110 §15.2)
            if isinstance(event, h11.Response):
                reply = TunnelReply(event.status_code, event.reason.decode("latin-1", "replace"))
                if reply.established:
                    self.trailing = self._h11.trailing_data[0]
                return reply
            if isinstance(event, h11.ConnectionClosed):
                raise TunnelError(f"proxy {self.proxy.address} closed before answering CONNECT")
            raise TunnelError(f"proxy {self.proxy.address}: unexpected {type(event).__name__}")
