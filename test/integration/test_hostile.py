"""Hostile input and runtime faults: the proxy closes the offender and keeps serving."""

import contextlib
import os
import signal
import struct
import time

import psycopg2
import pytest

from conftest import (PROTOCOL_3, RawConn, assert_still_serving, copy_data_msg,
                      gssenc_request, msg, parse_messages, password_msg, pgbench_bg, query_msg,
                      raw_login, ssl_request, startup_msg, wait_until, xfail_pgbouncer)

CLOSE_WITHIN = 5.0


def assert_closed_without_login(proxy, payload, timeout=CLOSE_WITHIN):
    """Send payload on a fresh connection; the proxy must close it and never say AuthOk."""
    c = RawConn(proxy.port)
    try:
        c.send(payload)
        data, closed = c.read_until_close(timeout)
    finally:
        c.close()
    assert closed, "connection still open after %.0fs (got %r)" % (timeout, data[:64])
    for t, p in parse_messages(data):
        assert not (t == b"R" and p[:4] == b"\0\0\0\0"), "login succeeded"
    return data


@pytest.fixture(scope="module")
def hp(module_proxy_factory):
    """A proxy of its own, so faults here cannot disturb other modules' pools."""
    return module_proxy_factory(settings={"pool_mode": "transaction", "default_pool_size": "2"})


@pytest.mark.parametrize("length", [0, 7])
def test_startup_length_below_minimum_is_closed(hp, length):
    assert_closed_without_login(hp, struct.pack("!II", length, PROTOCOL_3))
    assert_still_serving(hp)


def test_startup_length_10001_is_closed(hp):
    body = struct.pack("!I", PROTOCOL_3) + b"user\0app\0database\0app\0options\0"
    body += b"x" * (10001 - 4 - len(body) - 2) + b"\0\0"
    pkt = struct.pack("!I", len(body) + 4) + body
    assert len(pkt) == 10001
    assert_closed_without_login(hp, pkt)
    assert_still_serving(hp)


def test_startup_length_2_pow_31_is_closed_without_waiting_for_data(hp):
    assert_closed_without_login(hp, struct.pack("!II", 2 ** 31, PROTOCOL_3) + b"user\0app\0")
    assert_still_serving(hp)


@xfail_pgbouncer("a startup packet larger than pkt_buf (4096) is 'partial pkt in startup phase'")
def test_startup_length_10000_is_accepted(hp):
    pad = 10000 - 4 - 4 - len(b"user\0app\0database\0app\0application_name\0") - 2
    pkt = startup_msg("app", "app", application_name="a" * pad)
    assert len(pkt) == 10000
    c = RawConn(hp.port)
    try:
        c.send(pkt)
        t, p = c.recv_msg()
        assert t == b"R", p
    finally:
        c.close()


def test_password_message_before_startup_is_closed(hp):
    assert_closed_without_login(hp, password_msg("apppw"))
    assert_still_serving(hp)


def test_second_startup_during_auth_is_closed(hp):
    c = RawConn(hp.port)
    try:
        c.send(startup_msg("app", "app"))
        t, p = c.recv_msg()
        assert t == b"R" and struct.unpack("!I", p[:4])[0] != 0  # a password is asked
        c.send(startup_msg("trustuser", "app"))
        data, closed = c.read_until_close(CLOSE_WITHIN)
    finally:
        c.close()
    assert closed
    assert not any(t == b"R" and p[:4] == b"\0\0\0\0" for t, p in parse_messages(data))
    assert_still_serving(hp)


def test_ssl_request_is_answered_n_and_login_continues(hp):
    c = RawConn(hp.port)
    try:
        c.send(ssl_request())
        assert c.read_bytes(1) == b"N"
        c.login("app", "app")
        msgs = c.simple_query("select 1")
        assert b"D" in [t for t, _ in msgs]
    finally:
        c.close()


def test_gssenc_request_is_answered_n(hp):
    c = RawConn(hp.port)
    try:
        c.send(gssenc_request())
        assert c.read_bytes(1) == b"N"
        c.login("app", "app")
    finally:
        c.close()


def test_ssl_request_with_bytes_behind_it_is_closed(hp):
    assert_closed_without_login(hp, ssl_request() + startup_msg("app", "app"))
    assert_still_serving(hp)


def test_gssenc_request_with_bytes_behind_it_is_closed(hp):
    assert_closed_without_login(hp, gssenc_request() + startup_msg("app", "app"))
    assert_still_serving(hp)


def after_login_send(proxy, payload, timeout=CLOSE_WITHIN):
    c = raw_login(proxy)
    try:
        c.send(payload)
        return c.read_until_close(timeout)
    finally:
        c.close()


@pytest.mark.parametrize("mtype", [b"\x01", b"!", b"z", b"\xff"])
def test_unknown_message_type_after_login_is_closed(hp, mtype):
    _, closed = after_login_send(hp, msg(mtype, b"garbage"))
    assert closed
    assert_still_serving(hp)


@pytest.mark.parametrize("length", [0, 3])
def test_message_length_below_4_after_login_is_closed(hp, length):
    _, closed = after_login_send(hp, b"Q" + struct.pack("!I", length) + b"select 1\0")
    assert closed
    assert_still_serving(hp)


@pytest.mark.parametrize("length", [0x7FFFFFFF, 0xFFFFFFF0])
def test_huge_message_length_after_login_is_closed(hp, length):
    _, closed = after_login_send(hp, b"Q" + struct.pack("!I", length) + b"select 1")
    assert closed
    assert_still_serving(hp)


def no_dirty_servers(pg, proxy):
    return not [r for r in pg.activity(proxy=proxy) if r["in_xact"] or r["state"] != "idle"]


def assert_clean_next_transaction(proxy, tag):
    with contextlib.closing(proxy.connect(autocommit=True)) as c, c.cursor() as cur:
        cur.execute("select count(*) from leak_t where tag = %s", (tag,))
        assert cur.fetchone() == (0,)
        # In a leftover transaction now() would be older than the statement.
        cur.execute("select now() = statement_timestamp(), current_setting('statement_timeout')")
        assert cur.fetchone() == (True, "0")


def test_client_gone_mid_transaction_leaves_no_dirty_server(pg, proxy_factory):
    p = proxy_factory(settings={"default_pool_size": "1"})
    tag = "gone-mid-tx-%d" % os.getpid()
    c = raw_login(p)
    msgs = c.simple_query("BEGIN; SET LOCAL statement_timeout = '77s'; "
                          "INSERT INTO leak_t VALUES ('%s', 1)" % tag)
    assert msgs[-1] == (b"Z", b"T")
    assert [r for r in pg.activity(proxy=p) if r["in_xact"]]
    c.close(abort=True)
    wait_until(lambda: no_dirty_servers(pg, p), 5, 0.1, "no server left in a transaction")
    assert_clean_next_transaction(p, tag)


def test_client_gone_mid_copy_in_leaves_no_dirty_server(pg, proxy_factory):
    p = proxy_factory(settings={"default_pool_size": "1"})
    tag = "gone-mid-copy-%d" % os.getpid()
    c = raw_login(p)
    c.send(query_msg("COPY leak_t (tag, v) FROM STDIN"))
    t, _ = c.recv_msg()
    assert t == b"G"
    c.send(copy_data_msg(("%s\t1\n" % tag).encode() * 100))
    time.sleep(0.2)
    c.close(abort=True)
    wait_until(lambda: no_dirty_servers(pg, p), 5, 0.1, "no server left in COPY")
    assert_clean_next_transaction(p, tag)


@pytest.mark.timeout(90)
def test_backend_killed_mid_transaction_errors_that_client_only(pg, proxy_factory):
    p = proxy_factory(settings={"default_pool_size": "2"})
    victim = p.connect(autocommit=False)
    bystander = p.connect(autocommit=True)
    try:
        with victim.cursor() as cur:
            cur.execute("select pg_backend_pid()")
            backend = cur.fetchone()[0]
        with bystander.cursor() as cur:
            cur.execute("select 1")
        os.kill(backend, signal.SIGKILL)  # postgres then restarts all its backends
        with pytest.raises(psycopg2.Error):
            with victim.cursor() as cur:
                cur.execute("select 1")
        pg.wait_ready(30)
        # The bystander held no server between transactions: its next one works,
        # on the same client connection, once the pool has replaced dead servers.
        def bystander_ok():
            with bystander.cursor() as cur:
                cur.execute("select 2")
                return cur.fetchone() == (2,)
        wait_until(bystander_ok, 15, 0.5, "bystander transaction after the crash")
        assert not bystander.closed
    finally:
        victim.close()
        bystander.close()
    wait_until(lambda: p.query("select 3") == [(3,)], 15, 0.5, "a new client after the crash")


@pytest.mark.timeout(120)
def test_postgres_restart_under_pgbench_load_recovers_without_proxy_restart(pg, proxy_factory):
    p = proxy_factory(settings={"default_pool_size": "4", "server_login_retry": "1"})
    bench = pgbench_bg(p.port, ["-S", "-c", "4", "-T", "6"])
    try:
        time.sleep(2)
        pg.restart()
        out, err = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(10)
    assert bench.returncode != 0 or "aborted" in (out + err), "pgbench saw no error"
    assert p.alive()
    wait_until(lambda: p.query("select 4") == [(4,)], 20, 0.5, "clients after the restart")
    for _ in range(5):
        assert_still_serving(p)
