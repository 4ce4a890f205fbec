"""PROXY protocol v1/v2 on the listener: the balancer's client address is the
client's in SHOW CLIENTS, logs and policies; only trusted sources may send a
header; malformed or missing headers are refused; the proxy keeps serving."""

import contextlib
import socket
import struct
import time

import psycopg2
import pytest

from conftest import (IS_PGBOUNCER, ConnectionClosed, LoginError, RawConn, assert_still_serving,
                      parse_error_fields, parse_messages, start_yaml_proxy)

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgmoat-only behaviour")

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src="203.0.113.9", sport=55555, dst="127.0.0.1", dport=6432, proto="TCP4"):
    return ("PROXY %s %s %s %d %d\r\n" % (proto, src, dst, sport, dport)).encode()


def v2_inet(src="198.51.100.23", sport=40001, dst="127.0.0.1", dport=6432, tlv=b"", cmd=1):
    addr = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport) + tlv
    return V2_SIG + bytes([0x20 | cmd, 0x11]) + struct.pack("!H", len(addr)) + addr


def v2_inet6(src="2001:db8::7", sport=40002, dst="::1", dport=6432):
    addr = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + struct.pack("!HH", sport, dport))
    return V2_SIG + bytes([0x21, 0x21]) + struct.pack("!H", len(addr)) + addr


def pp_proxy(proxy_factory, mode="any", trusted="127.0.0.1", **extra):
    s = {"proxy_protocol": mode, "proxy_protocol_trusted": trusted}
    s.update(extra)
    return proxy_factory(settings=s)


def client_addrs(proxy):
    """(addr, port) of app's clients, asked over the unix socket (not a trusted source)."""
    with contextlib.closing(psycopg2.connect(proxy.dsn("admin", "pgbouncer",
                                                       host=str(proxy.dir)))) as a:
        a.autocommit = True
        with a.cursor() as cur:
            cur.execute("SHOW CLIENTS")
            cols = [d[0] for d in cur.description]
            rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    return {(r["addr"], r["port"]) for r in rows if r["user"] == "app"}


def login_behind(proxy, header):
    c = RawConn(proxy.port)
    c.send(header)
    c.login("app", "app")
    return c


def refused(conn, timeout=5):
    """The connection is closed; returns the ErrorResponse fields sent first, if any."""
    data, closed = conn.read_until_close(timeout)
    assert closed, "connection left open"
    errors = [parse_error_fields(p) for t, p in parse_messages(data) if t == b"E"]
    return errors[0] if errors else None


@pytest.mark.parametrize("header,addr", [
    (v1(), ("203.0.113.9", 55555)),
    (v1(proto="TCP6", src="2001:db8::1", dst="::1", sport=1234), ("2001:db8::1", 1234)),
    (v2_inet(), ("198.51.100.23", 40001)),
    (v2_inet(tlv=b"\x04\x00\x02ab"), ("198.51.100.23", 40001)),
    (v2_inet6(), ("2001:db8::7", 40002)),
])
def test_header_address_shows_in_show_clients_and_log(proxy_factory, header, addr):
    p = pp_proxy(proxy_factory)
    c = login_behind(p, header)
    try:
        assert any(t == b"T" for t, _ in c.simple_query("select 1"))
        assert addr in client_addrs(p)
        p.wait_log(r"@%s:%d" % (addr[0].replace(".", r"\."), addr[1]))
    finally:
        c.close()


def test_v2_local_keeps_the_socket_address(proxy_factory):
    p = pp_proxy(proxy_factory, mode="v2")
    c = login_behind(p, V2_SIG + b"\x20\x00\x00\x00")
    try:
        assert {a for a, _ in client_addrs(p)} == {"127.0.0.1"}
    finally:
        c.close()


def test_untrusted_source_sending_a_header_is_refused(proxy_factory):
    p = pp_proxy(proxy_factory, trusted="10.0.0.0/8, fd00::/8")
    c = RawConn(p.port)
    c.send(v1())
    refused(c)
    c.close()
    # ...and it connects normally without one: its own address is used
    assert_still_serving(p)
    c = RawConn(p.port)
    c.login("app", "app")
    assert {a for a, _ in client_addrs(p)} == {"127.0.0.1"}
    c.close()


def test_trusted_source_without_a_header_is_refused(proxy_factory):
    p = pp_proxy(proxy_factory)
    c = RawConn(p.port)
    with pytest.raises((LoginError, ConnectionClosed)):
        c.login("app", "app")
    c.close()


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",
    b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
    b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY " + b"A" * 120 + b"\r\n",
    V2_SIG + b"\x21\x11\x00\x04abcd",          # too short for IPv4
    V2_SIG + b"\x21\x12\x00\x0c" + b"\0" * 12,  # UDP
    V2_SIG + b"\x31\x11\x00\x0c" + b"\0" * 12,  # version 3
    V2_SIG + b"\x21\x11\xff\xff",               # length past the cap
    b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" + b"\0" * 12,
])
def test_malformed_headers_are_refused_and_others_still_served(proxy_factory, header):
    p = pp_proxy(proxy_factory)
    c = RawConn(p.port)
    c.send(header + b"\0" * 8)
    err = refused(c)
    assert err is None or err["C"] == "08P01", err
    c.close()
    good = login_behind(p, v1())
    good.close()


def test_version_restricted_listener_refuses_the_other_version(proxy_factory):
    p = pp_proxy(proxy_factory, mode="v1")
    c = RawConn(p.port)
    c.send(v2_inet())
    refused(c)
    c.close()
    login_behind(p, v1()).close()


def test_header_split_over_segments_is_reassembled(proxy_factory):
    p = pp_proxy(proxy_factory)
    c = RawConn(p.port)
    h = v2_inet()
    for i in range(0, len(h), 5):
        c.send(h[i:i + 5])
        time.sleep(0.02)
    c.login("app", "app")
    assert ("198.51.100.23", 40001) in client_addrs(p)
    c.close()


def test_incomplete_header_times_out(proxy_factory):
    p = pp_proxy(proxy_factory, proxy_protocol_timeout="1")
    c = RawConn(p.port)
    c.send(b"PROXY TCP4 1.2.")
    t0 = time.monotonic()
    refused(c, timeout=8)
    assert time.monotonic() - t0 < 6
    c.close()


def test_policy_sees_the_real_client_addr(proxy_factory):
    policy = ('local moat = require "moat"\n'
              'return { on_connect = function(s)\n'
              '  if s.client_addr == "203.0.113.66" then return moat.deny("blocked " .. s.client_addr) end\n'
              'end }\n')
    p = start_yaml_proxy(proxy_factory, policies={"addr.lua": policy},
                         settings={"proxy_protocol": "v1", "proxy_protocol_trusted": "127.0.0.1"})
    with pytest.raises(LoginError) as e:
        login_behind(p, v1(src="203.0.113.66"))
    assert "blocked 203.0.113.66" in e.value.fields.get("M", "")
    login_behind(p, v1(src="203.0.113.67")).close()


def test_proxy_protocol_without_trusted_sources_is_a_config_error(proxy_factory):
    p = proxy_factory(start=False, settings={"proxy_protocol": "v1"})
    p.write_config()
    import subprocess
    out = subprocess.run(p.command("--check", str(p.config_path)), capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1 and "proxy_protocol_trusted" in out.stderr
