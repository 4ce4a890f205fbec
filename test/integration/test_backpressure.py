"""Backpressure both ways through the data path's own buffers, and what is handed to the
bufferevent when a socket blocks or closes: nothing lost, torn or reordered, plain and TLS."""

import contextlib
import socket
import struct
import time

import pytest

from conftest import (ConnectionClosed, RawConn, assert_still_serving, parse_error_fields,
                      pgmoat_only, query_msg, raw_login, tcp_local_ports, wait_until)


@pytest.fixture(scope="module")
def proxy(module_proxy_factory):
    return module_proxy_factory(settings={"pool_mode": "transaction"})


def small_window_login(proxy, rcvbuf=32768, timeout=5.0):
    """A client whose receive buffer is small from the start (set before connect: shrinking
    it later stalls TCP on zero-window probes, which says nothing about the proxy)."""
    c = RawConn.__new__(RawConn)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", proxy.port))
    c.sock, c.buf, c.backend_pid, c.backend_key, c.params = sock, b"", None, None, {}
    c.login("app", "app")
    return c


def drain_slowly(c, total_rows, row_len, pause=0.002, timeout=60.0):
    """Read a result in small bites with pauses: the proxy's output to us blocks."""
    deadline = time.monotonic() + timeout
    rows = 0
    while True:
        t, p = c.recv_msg(max(0.01, deadline - time.monotonic()))
        if t == b"D":
            ncol = struct.unpack("!H", p[:2])[0]
            assert ncol == 1
            ln = struct.unpack("!i", p[2:6])[0]
            assert ln == row_len and p[6:] == b"x" * row_len
            rows += 1
            if rows % 500 == 0:
                time.sleep(pause)
        elif t == b"Z":
            return rows
        elif t == b"E":
            raise AssertionError(parse_error_fields(p))


def test_slow_client_gets_a_big_result_whole_and_in_order(proxy):
    c = small_window_login(proxy)
    rows, row_len = 20000, 1000
    c.send(query_msg("select repeat('x', %d) from generate_series(1, %d)" % (row_len, rows)))
    time.sleep(0.5)  # let the proxy's output to us fill and block
    assert drain_slowly(c, rows, row_len) == rows
    assert c.simple_query("select 1")[-1][0] == b"Z"
    c.close()


def test_client_pipelining_behind_a_sleeping_server_is_paused_and_resumed(proxy):
    """The server does not read while it sleeps: its output blocks, the client is paused
    (> MSGIO_OUT_HIGH pending), and resumed by server_write_cb once the server reads."""
    c = raw_login(proxy)
    pad = "x" * 8000
    n = 1500  # 12 MB of queries behind the sleep
    batch = query_msg("select pg_sleep(1.5)") + b"".join(
        query_msg("select %d /* %s */" % (i, pad)) for i in range(n))
    c.sock.settimeout(60)
    c.sock.sendall(batch)
    got = 0
    deadline = time.monotonic() + 60
    while got < n + 1:
        t, p = c.recv_msg(max(0.01, deadline - time.monotonic()))
        if t == b"E":
            raise AssertionError(parse_error_fields(p))
        if t == b"Z":
            got += 1
    c.close()
    assert_still_serving(proxy)


def test_replies_sent_straight_from_the_servers_input_stay_whole_and_in_order(proxy):
    """pertx8: a reply that empties the server's input goes to the client's socket from
    where it lies; what a nearly full socket does not take is queued, and the replies
    after it wait behind that. Replies of a few KB, one at a time, to a client that
    reads nothing until the end: each distinct, none torn, none out of order."""
    c = small_window_login(proxy, rcvbuf=4096)
    n, row_len = 1500, 4000  # more than the proxy's socket send buffer takes
    for i in range(n):
        c.send(query_msg("select repeat('%s', %d) as v, %d as i" % (chr(65 + i % 26), row_len, i)))
        time.sleep(0.002)  # mostly one reply per server read: each run empties the input
    for i in range(n):
        msgs = c.read_until({b"Z"}, timeout=30)
        assert [t for t, _ in msgs] == [b"T", b"D", b"C", b"Z"], msgs[:3]
        d = msgs[1][1]
        ln = struct.unpack("!i", d[2:6])[0]
        assert ln == row_len and d[6:6 + ln] == chr(65 + i % 26).encode() * row_len
        assert d[6 + ln + 4:] == str(i).encode()
    assert c.simple_query("select 1")[-1][0] == b"Z"
    c.close()


@pgmoat_only
def test_error_after_a_blocked_result_comes_after_the_result(pg, proxy):
    """A client whose output is blocked (part in the bufferevent, part in our buffer)
    loses its server: the FATAL goes after every byte queued before it."""
    c = small_window_login(proxy)
    c.send(query_msg("select pg_backend_pid()"))
    msgs = c.read_until({b"Z"})
    pid = int([p for t, p in msgs if t == b"D"][0][6:].decode())
    c.send(query_msg("begin"))
    c.read_until({b"Z"})
    rows, row_len = 5000, 1000
    c.send(query_msg("select repeat('x', %d) from generate_series(1, %d)" % (row_len, rows)))
    time.sleep(0.5)
    pg.sql("select pg_terminate_backend(%s)" % pid)
    time.sleep(0.3)
    data, closed = c.read_until_close(timeout=10)
    assert closed
    # walk the messages: rows, then the FATAL, nothing torn
    buf = c.buf + data
    pos, seen_rows, types = 0, 0, []
    while pos + 5 <= len(buf):
        t = buf[pos:pos + 1]
        ln = struct.unpack("!I", buf[pos + 1:pos + 5])[0]
        if pos + 1 + ln > len(buf):
            break
        types.append(t)
        if t == b"D":
            seen_rows += 1
        pos += 1 + ln
    assert pos == len(buf), "torn message at %d of %d" % (pos, len(buf))
    assert types[-1] == b"E"
    assert b"D" not in types[types.index(b"E"):]
    assert_still_serving(proxy)


def blocked_then_killed(proxy):
    """A plain client whose output from pgmoat is blocked (a big result it does not read),
    then dropped with KILL_CLIENT: its FATAL is queued behind the result (close after
    flush on a bare socket). (client, its local port, when it was killed)"""
    c = small_window_login(proxy)
    port = c.sock.getsockname()[1]
    c.send(query_msg("select repeat('x', 1000) from generate_series(1, 50000)"))
    wait_until(lambda: tcp_local_ports(proxy.pid, port), what="pgmoat's end of the connection")
    time.sleep(1.0)  # the result fills every buffer on the way: pgmoat's write blocks
    ptrs = [r["ptr"] for r in proxy.show_dicts("CLIENTS") if r["user"] == "app"]
    assert len(ptrs) == 1
    with contextlib.closing(proxy.admin()) as a:
        a.autocommit = True
        a.cursor().execute("KILL_CLIENT " + ptrs[0])
    return c, port, time.monotonic()


@pgmoat_only
def test_killed_client_that_never_reads_is_cut_off_by_the_flush_timeout(proxy_factory):
    """Nobody reads the FATAL: the socket is closed once the flush has waited
    FLUSH_TIMEOUT_SEC (5 s) -- not kept for as long as the client stays silent,
    and not closed at once either (a slow reader would lose the FATAL)."""
    p = proxy_factory(settings={"pool_mode": "transaction"})
    c, port, killed = blocked_then_killed(p)
    wait_until(lambda: not tcp_local_ports(p.pid, port), timeout=30, what="the socket closed")
    waited = time.monotonic() - killed
    assert waited >= 3, "closed after %.1f s: the queued FATAL was never tried" % waited
    c.close()
    assert_still_serving(p)


@pgmoat_only
def test_killed_client_that_reads_late_gets_the_result_then_the_fatal_then_eof(proxy_factory):
    """The same, but the client reads (within the flush timeout): every byte queued
    before the kill, whole, then the FATAL, then the socket closes."""
    p = proxy_factory(settings={"pool_mode": "transaction"})
    c, port, _ = blocked_then_killed(p)
    time.sleep(1.0)
    data, closed = c.read_until_close(timeout=20)
    assert closed
    pos, types = 0, []
    while pos + 5 <= len(data):
        ln = struct.unpack("!I", data[pos + 1:pos + 5])[0]
        if pos + 1 + ln > len(data):
            break
        types.append(data[pos:pos + 1])
        last = data[pos + 5:pos + 1 + ln]
        pos += 1 + ln
    assert pos == len(data), "torn message at %d of %d" % (pos, len(data))
    assert types[-1] == b"E" and types.count(b"E") == 1, types[-3:]
    assert parse_error_fields(last).get("C") == "57P01", parse_error_fields(last)
    assert set(types[:-1]) <= {b"T", b"D"}
    assert not tcp_local_ports(p.pid, port)
    c.close()
    assert_still_serving(p)


# ---------------------------------------------------------------- the same over TLS

from test_tls import certs, client_ctx, tls_settings  # noqa: E402,F401 (fixture)
from conftest import ssl_request  # noqa: E402


def test_tls_slow_client_and_pipelining_behind_a_sleeping_server(certs, proxy_factory):
    p = proxy_factory(settings=dict(tls_settings(certs, "require"), pool_mode="transaction"))
    c = RawConn.__new__(RawConn)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    sock.settimeout(10.0)
    sock.connect(("127.0.0.1", p.port))
    c.sock, c.buf, c.backend_pid, c.backend_key, c.params = sock, b"", None, None, {}
    c.send(ssl_request())
    assert c.read_bytes(1) == b"S"
    c.sock = client_ctx(certs).wrap_socket(c.sock, server_hostname="localhost")
    c.login("app", "app")
    rows, row_len = 20000, 1000
    c.send(query_msg("select repeat('x', %d) from generate_series(1, %d)" % (row_len, rows)))
    time.sleep(0.5)
    assert drain_slowly(c, rows, row_len) == rows
    pad = "x" * 8000
    n = 1000
    c.sock.settimeout(60)
    c.sock.sendall(query_msg("select pg_sleep(1)") + b"".join(
        query_msg("select %d /* %s */" % (i, pad)) for i in range(n)))
    got = 0
    deadline = time.monotonic() + 60
    while got < n + 1:
        t, q = c.recv_msg(max(0.01, deadline - time.monotonic()))
        assert t != b"E", parse_error_fields(q)
        if t == b"Z":
            got += 1
    c.close()
