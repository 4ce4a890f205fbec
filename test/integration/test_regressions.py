"""Regressions found by review of the data path; each failed before its fix."""

import signal
import time

import pytest

from conftest import (IS_PGBOUNCER, PGMOAT_BIN, RawConn, assert_still_serving,
                      binary_is_sanitized, bind_msg, copy_data_msg, describe_msg, execute_msg,
                      msg, parse_error_fields, parse_messages, parse_msg, query_msg, raw_login,
                      sync_msg, wait_until)


def test_extended_protocol_copy_in_releases_the_server_afterwards(proxy_factory, pg):
    # libpq's PQexecParams("COPY ... FROM STDIN") sends a Sync before CopyInResponse;
    # PostgreSQL ignores it in copy-in, so only one ReadyForQuery comes for two Syncs.
    pg.sql("create table if not exists copy_ext(a text); grant all on copy_ext to app", db="app")
    p = proxy_factory(settings={"pool_mode": "transaction", "default_pool_size": "1",
                                "query_wait_timeout": "5"})
    c = raw_login(p)
    try:
        c.send(parse_msg("copy copy_ext from stdin") + bind_msg() + describe_msg() +
               execute_msg() + sync_msg())
        assert [t for t, _ in c.read_until({b"G", b"Z"})][-1] == b"G"
        c.send(copy_data_msg(b"one\n") + msg(b"c") + sync_msg())
        msgs = c.read_until({b"Z"})
        assert msgs[-1] == (b"Z", b"I")
        started = time.monotonic()
        assert p.query("select 7") == [(7,)]	# pool_size 1: only if the server came back
        assert time.monotonic() - started < 2
    finally:
        c.close()


def test_long_queue_of_waiting_clients_is_served_without_deep_recursion(proxy_factory):
    # Each waiter's request leaves the server clean and then quits: handing the server
    # down the queue must not nest one client's teardown inside the previous one's.
    n = 6000 if binary_is_sanitized(PGMOAT_BIN) else 3000
    p = proxy_factory(settings={"pool_mode": "transaction", "default_pool_size": "1",
                                "auth_type": "trust", "max_client_conn": str(n + 50),
                                "log_connections": "0", "log_disconnections": "0",
                                "query_wait_timeout": "60"})
    holder = raw_login(p)
    waiters = []
    try:
        holder.send(query_msg("begin"))
        holder.read_until({b"Z"})
        holder.send(query_msg("select 1"))
        holder.read_until({b"Z"})
        for _ in range(n):
            w = RawConn(p.port)
            w.login("app", "app")
            w.send(copy_data_msg(b"x") + msg(b"X"))
            waiters.append(w)
        holder.send(query_msg("commit"))
        holder.read_until({b"Z"})
        assert p.alive()
        assert_still_serving(p)
    finally:
        holder.close()
        for w in waiters:
            w.close(abort=True)


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgmoat-only check of the reviewed behaviour")
def test_server_lifetime_zero_uses_each_connection_once(proxy_factory):
    p = proxy_factory(settings={"pool_mode": "transaction", "server_lifetime": "0"})
    pids = {p.query("select pg_backend_pid()")[0][0] for _ in range(3)}
    assert len(pids) == 3


def test_sigterm_drain_sends_the_last_client_its_shutdown_error(proxy_factory):
    p = proxy_factory(settings={"pool_mode": "transaction"})
    p.expect_exit = True
    c = raw_login(p)
    try:
        c.send(query_msg("begin"))
        c.read_until({b"Z"})
        p.signal(signal.SIGTERM)
        time.sleep(0.5)
        c.send(query_msg("select 1"))
        assert c.read_until({b"Z"})[-1] == (b"Z", b"T")
        c.send(query_msg("commit"))
        c.read_until({b"Z"})
        data, closed = c.read_until_close(5)
        errors = [parse_error_fields(m) for t, m in parse_messages(data) if t == b"E"]
        assert closed and errors and errors[0]["C"] == "57P01", data
    finally:
        c.close()
    wait_until(lambda: not p.alive(), 10, what="pgmoat exits after the drain")
