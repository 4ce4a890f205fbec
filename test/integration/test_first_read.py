"""The first read of a connection (conn8: client.c, client_read_at_accept).

A plain connection's first bytes are read at accept into a buffer on the
stack, and a StartupMessage found whole there is parsed in place; only what
follows it enters the input. These tests make sure that the first read finds
what they sent -- the proxy is stopped (SIGSTOP) while the client connects
and writes, so the accept and its read see all of it at once -- and check
every shape that path must treat as the ordinary reader would: a Query or a
Terminate behind the StartupMessage, a packet in pieces or larger than the
buffer, encryption requests with bytes behind them, a CancelRequest, a bad
length, and a client that half-closes after its StartupMessage.
"""

import contextlib
import os
import signal
import socket
import struct
import time

import pytest

from conftest import (RawConn, assert_still_serving, cancel_request,
                      data_row_values, gssenc_request, parse_messages, query_msg, ssl_request,
                      startup_msg, terminate_msg)

CLOSE_WITHIN = 5.0


@pytest.fixture(scope="module")
def fr(module_proxy_factory):
    return module_proxy_factory(settings={"auth_type": "trust", "pool_mode": "transaction",
                                          "default_pool_size": "2"})


@contextlib.contextmanager
def frozen(proxy):
    """The proxy stopped: what a client connects and sends meanwhile is there at its accept."""
    os.kill(proxy.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proxy.pid, signal.SIGCONT)


def connect_and_send_frozen(proxy, data):
    with frozen(proxy):
        c = RawConn(proxy.port)
        c.send(data)
        time.sleep(0.05)  # (loopback: the bytes are in the proxy's socket by now)
    return c


def is_auth_ok(m):
    return m[0] == b"R" and m[1][:4] == b"\0\0\0\0"


def welcome_types(msgs):
    return [t for t, _ in msgs]


def assert_answer_42(c):
    answer = c.read_until([b"Z"], 10)
    rows = [data_row_values(p) for t, p in answer if t == b"D"]
    assert rows == [["42"]], welcome_types(answer)


def test_startup_alone_at_accept_logs_in(fr):
    for _ in range(3):
        with contextlib.closing(connect_and_send_frozen(fr, startup_msg("app", "app"))) as c:
            msgs = c.read_until([b"Z"], 10)
            assert is_auth_ok(msgs[0]) and welcome_types(msgs)[-2:] == [b"K", b"Z"]
            c.send(query_msg("select 41 + 1"))
            assert_answer_42(c)


def test_query_behind_the_startup_in_the_first_read_is_answered_after_the_welcome(fr):
    for _ in range(3):
        data = startup_msg("app", "app", application_name="first_read") + query_msg("select 41 + 1")
        with contextlib.closing(connect_and_send_frozen(fr, data)) as c:
            msgs = c.read_until([b"Z"], 10)
            types = welcome_types(msgs)
            assert is_auth_ok(msgs[0]) and types[-2:] == [b"K", b"Z"], types
            assert sum(1 for m in msgs if is_auth_ok(m)) == 1, types
            assert_answer_42(c)


def test_terminate_behind_the_startup_closes_after_the_welcome(fr):
    data = startup_msg("app", "app") + terminate_msg()
    with contextlib.closing(connect_and_send_frozen(fr, data)) as c:
        data, closed = c.read_until_close(CLOSE_WITHIN)
        assert closed
    msgs = parse_messages(data)
    assert msgs and is_auth_ok(msgs[0]) and msgs[-1][0] == b"Z", [t for t, _ in msgs]
    assert_still_serving(fr)


def test_queries_and_terminate_behind_the_startup_leave_the_pool_usable(fr):
    # (a Terminate behind unanswered queries closes at once, as before: the
    # server is dropped or cleaned, never handed on dirty)
    data = (startup_msg("app", "app") + query_msg("select 41 + 1") + query_msg("select 41 + 1") +
            terminate_msg())
    for _ in range(3):
        with contextlib.closing(connect_and_send_frozen(fr, data)) as c:
            _, closed = c.read_until_close(CLOSE_WITHIN)
            assert closed
    for _ in range(3):
        assert_still_serving(fr)


def test_startup_larger_than_the_first_read_with_a_query_behind(fr):
    # over the stack buffer (1 KB): the first read takes part of it, the
    # reader's event the rest (in one or more reads), then the Query.
    name = "n" * 3000
    data = startup_msg("app", "app", application_name=name) + query_msg("select 41 + 1")
    with contextlib.closing(connect_and_send_frozen(fr, data)) as c:
        msgs = c.read_until([b"Z"], 10)
        status = [p.split(b"\0")[:2] for t, p in msgs if t == b"S"]
        assert [b"application_name", name.encode()] in status
        assert_answer_42(c)
    assert_still_serving(fr)


@pytest.mark.parametrize("split", [1, 3, 4, 9, -1])
def test_startup_in_pieces_logs_in(fr, split):
    # the first read finds a piece of the packet: it waits in the input for the rest
    pkt = startup_msg("app", "app", application_name="pieces")
    split = split if split > 0 else len(pkt) - 1
    with contextlib.closing(connect_and_send_frozen(fr, pkt[:split])) as c:
        time.sleep(0.2)
        c.send(pkt[split:] + query_msg("select 41 + 1"))
        msgs = c.read_until([b"Z"], 10)
        assert is_auth_ok(msgs[0]), welcome_types(msgs)
        assert_answer_42(c)


def test_startup_after_a_delay_logs_in(fr):
    # the first read finds nothing: the reader's event brings the packet
    c = RawConn(fr.port)
    with contextlib.closing(c):
        time.sleep(0.3)
        c.send(startup_msg("app", "app") + query_msg("select 41 + 1"))
        msgs = c.read_until([b"Z"], 10)
        assert is_auth_ok(msgs[0])
        assert_answer_42(c)


def assert_closed_without_login(c):
    with contextlib.closing(c):
        data, closed = c.read_until_close(CLOSE_WITHIN)
    assert closed, data[:64]
    for t, p in parse_messages(data):
        assert not (t == b"R" and p[:4] == b"\0\0\0\0"), "login succeeded"
    return data


@pytest.mark.parametrize("request_msg", [ssl_request, gssenc_request])
def test_encryption_request_with_a_startup_behind_it_in_the_first_read_is_closed(fr, request_msg):
    # CVE-2021-23214: bytes behind the request, before its answer
    data = assert_closed_without_login(connect_and_send_frozen(fr, request_msg() +
                                                               startup_msg("app", "app")))
    assert not data.startswith(b"S")
    assert_still_serving(fr)


def test_encryption_request_alone_in_the_first_read_is_answered_n(fr):
    with contextlib.closing(connect_and_send_frozen(fr, ssl_request())) as c:
        assert c.read_bytes(1) == b"N"
        c.login("app", "app")
        c.send(query_msg("select 41 + 1"))
        assert_answer_42(c)


@pytest.mark.parametrize("length", [0, 7, 10001, 2 ** 31])
def test_bad_length_in_the_first_read_is_closed(fr, length):
    payload = struct.pack("!I", length) + b"\0" * 8
    assert_closed_without_login(connect_and_send_frozen(fr, payload))
    assert_still_serving(fr)


def test_second_startup_behind_the_first_is_closed(fr):
    # (trust: the login completes, then the second StartupMessage is a bad message)
    data = startup_msg("app", "app") + startup_msg("app", "app")
    with contextlib.closing(connect_and_send_frozen(fr, data)) as c:
        _, closed = c.read_until_close(CLOSE_WITHIN)
        assert closed
    assert_still_serving(fr)


def test_cancel_request_in_the_first_read_cancels(fr):
    with contextlib.closing(RawConn(fr.port)) as a:
        a.login("app", "app")
        a.send(query_msg("select pg_sleep(30)"))
        time.sleep(0.5)  # (the query runs on its server)
        b = connect_and_send_frozen(fr, cancel_request(a.backend_pid, a.backend_key))
        with contextlib.closing(b):
            _, closed = b.read_until_close(CLOSE_WITHIN)
            assert closed
        msgs = a.read_until([b"Z"], 10)
        errs = [p for t, p in msgs if t == b"E"]
        assert errs and b"57014" in errs[0], welcome_types(msgs)


def test_half_close_after_the_startup_closes_cleanly(fr):
    with frozen(fr):
        c = RawConn(fr.port)
        c.send(startup_msg("app", "app"))
        c.sock.shutdown(socket.SHUT_WR)
        time.sleep(0.05)
    with contextlib.closing(c):
        data, closed = c.read_until_close(CLOSE_WITHIN)
        assert closed
    msgs = parse_messages(data)
    assert msgs and is_auth_ok(msgs[0]) and msgs[-1][0] == b"Z", [t for t, _ in msgs]
    assert_still_serving(fr)


def test_empty_database_parameter_means_the_user_name(fr):
    # (as PostgreSQL: database "" is the user's name; the parameter is allowed)
    with contextlib.closing(connect_and_send_frozen(fr, startup_msg("app", "") +
                                                    query_msg("select 41 + 1"))) as c:
        msgs = c.read_until([b"Z"], 10)
        assert is_auth_ok(msgs[0]), welcome_types(msgs)
        assert_answer_42(c)


@pytest.mark.parametrize("dblen", [1, 60, 123, 124, 200, 400])
def test_names_of_every_size_are_kept_whole(fr, dblen):
    # user and database names share one block, in the Client itself when
    # they fit (128 bytes with their NULs), else allocated: either way the
    # error names the database whole
    db = ("q%d_" % dblen + "d" * dblen)[:dblen]
    with contextlib.closing(connect_and_send_frozen(fr, startup_msg("app", db))) as c:
        data, closed = c.read_until_close(CLOSE_WITHIN)
        assert closed
    errs = [p for t, p in parse_messages(data) if t == b"E"]
    assert errs and b"3D000" in errs[0], data[:200]
    assert ("no such database: %s" % db).encode() + b"\0" in errs[0]
