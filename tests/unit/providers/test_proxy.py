"""The pure side of the outbound proxy: URL rules, the CONNECT request, the answer."""

from __future__ import annotations

import base64

import pytest

from pusher_trio.providers.proxy import (
    Proxy,
    ProxyUrlError,
    Tunnel,
    TunnelError,
    TunnelReply,
    parse_proxy_url,
)

SECRET = "s3cr3t-pw"


def test_parse_plain_proxy_url() -> None:
    proxy = parse_proxy_url("http://proxy.example:3128")
    assert proxy == Proxy("proxy.example", 3128)
    assert proxy.url == "http://proxy.example:3128"
    assert proxy.authorization() is None and proxy.basic_credentials is None


def test_parse_user_with_password_from_its_file() -> None:
    proxy = parse_proxy_url("http://pusher%40dc1@10.0.0.1:8080/", SECRET)
    assert (proxy.username, proxy.password) == ("pusher@dc1", SECRET)
    assert proxy.authorization() == "Basic " + base64.b64encode(
        f"pusher@dc1:{SECRET}".encode()
    ).decode()
    assert SECRET not in repr(proxy) and SECRET not in proxy.url


def test_ipv6_proxy_address_is_bracketed() -> None:
    assert parse_proxy_url("http://[::1]:3128").address == "[::1]:3128"


@pytest.mark.parametrize(
    ("url", "password", "words"),
    [
        ("https://proxy:3128", "", "scheme 'https'"),
        ("proxy:3128", "", "scheme"),
        ("http://:3128", "", "no host"),
        ("http://proxy", "", "no port"),
        ("http://proxy:99999", "", "not a proxy URL"),
        ("http://proxy:3128/path", "", "no path"),
        ("http://user:" + SECRET + "@proxy:3128", "", "proxy_password_file"),
        ("http://user@proxy:3128", "", "set push.proxy_password_file"),
        ("http://proxy:3128", SECRET, "names no user"),
    ],
)
def test_bad_proxy_urls_are_refused_without_echoing_secrets(
    url: str, password: str, words: str
) -> None:
    with pytest.raises(ProxyUrlError, match=words) as info:
        parse_proxy_url(url, password)
    assert SECRET not in str(info.value)


def test_connect_request_names_the_origin_and_carries_basic_credentials() -> None:
    tunnel = Tunnel(Proxy("p", 3128, "u", SECRET), "api.push.apple.com", 443)
    data = tunnel.request()
    token = base64.b64encode(f"u:{SECRET}".encode())
    assert data == (
        b"CONNECT api.push.apple.com:443 HTTP/1.1\r\nHost: api.push.apple.com:443\r\n"
        b"Proxy-Authorization: Basic " + token + b"\r\n\r\n"
    )


def test_connect_request_to_an_ipv6_origin() -> None:
    assert Tunnel(Proxy("p", 1), "2001:db8::1", 443).request().startswith(
        b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\n"
    )


ESTABLISHED = b"HTTP/1.0 200 Connection established\r\nProxy-agent: tinyproxy/1.11.1\r\n\r\n"


@pytest.mark.parametrize("chunk", [1, 7, len(ESTABLISHED)])
def test_established_answer_in_any_chunking_keeps_the_tunnels_first_bytes(chunk: int) -> None:
    tunnel = Tunnel(Proxy("p", 1), "h", 443)
    tunnel.request()
    data = ESTABLISHED + b"\x16\x03\x03"
    reply = None
    for start in range(0, len(data), chunk):
        reply = tunnel.receive_data(data[start : start + chunk])
        if reply is not None:
            break
    assert reply == TunnelReply(200, "Connection established")
    assert reply.established and not reply.refused
    rest = data[start + chunk :]
    assert tunnel.trailing + rest == b"\x16\x03\x03"


def test_interim_answer_before_the_real_one_is_skipped() -> None:
    tunnel = Tunnel(Proxy("p", 1), "h", 443)
    tunnel.request()
    reply = tunnel.receive_data(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n")
    assert reply is not None and reply.status == 200


@pytest.mark.parametrize(
    ("head", "refused", "hint"),
    [
        (b"HTTP/1.1 407 Proxy Authentication Required\r\n", True, "proxy_password_file"),
        (b"HTTP/1.0 401 Unauthorized\r\n", True, "proxy_password_file"),
        (b"HTTP/1.0 403 Access violation\r\n", True, "ACL"),
        (b"HTTP/1.1 502 Bad Gateway\r\n", False, "could not reach"),
        (b"HTTP/1.0 500 Unable to connect\r\n", False, "could not reach"),
    ],
)
def test_refusals_and_gateway_errors(head: bytes, refused: bool, hint: str) -> None:
    proxy = Proxy("proxy.example", 3128, "u", SECRET)
    tunnel = Tunnel(proxy, "fcm.googleapis.com", 443)
    tunnel.request()
    reply = tunnel.receive_data(head + b"Content-Length: 5\r\n\r\nerror")
    assert reply is not None and not reply.established
    assert reply.refused is refused
    text = reply.describe(proxy, tunnel.target)
    assert text.startswith(
        f"proxy proxy.example:3128 answered CONNECT fcm.googleapis.com:443 with {head[9:12].decode()}"
    )
    assert hint in text and SECRET not in text


def test_proxy_closing_before_answering_is_a_tunnel_error() -> None:
    tunnel = Tunnel(Proxy("p", 1), "h", 443)
    tunnel.request()
    assert tunnel.receive_data(b"HTTP/1.1 200 Conn") is None
    with pytest.raises(TunnelError, match="closed before answering"):
        tunnel.receive_data(b"")


def test_not_http_is_a_tunnel_error() -> None:
    tunnel = Tunnel(Proxy("p", 1), "h", 443)
    tunnel.request()
    with pytest.raises(TunnelError, match="not an HTTP answer"):
        tunnel.receive_data(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
