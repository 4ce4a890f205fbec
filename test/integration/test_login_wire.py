"""Wire order of a login's answer in the outcomes conn7 touched (review8).

AuthenticationOk is held back until the welcome or the error that ends the
login (client.c: auth_ok_due); the welcome may go straight to the socket
(msgio_output_send_now). A client must see exactly one AuthenticationOk,
never after an ErrorResponse, never a welcome without it, and nothing queued
may be overtaken by what goes out directly.
"""

import contextlib
import hashlib
import struct

import pytest

from conftest import (IS_PGBOUNCER, ConnectionClosed, RawConn, data_row_values, query_msg,
                      startup_msg)


def _is_auth_ok(m):
    return m[0] == b"R" and m[1][:4] == b"\0\0\0\0"


def _recording(c):
    seen = []
    recv = c.recv_msg

    def rec(timeout=5.0):
        m = recv(timeout)
        seen.append(m)
        return m

    c.recv_msg = rec
    return seen


def _rest_until_close(c, seen, timeout=10.0):
    with contextlib.suppress(ConnectionClosed):
        while True:
            c.recv_msg(timeout)
    return seen


def test_server_login_failure_of_a_pools_first_server_is_auth_ok_then_error(pg, proxy_factory):
    # The client authenticates against the userlist; the pool's first server
    # login fails (no such database at the server) while it waits: one
    # AuthenticationOk, then the error, then EOF, and no welcome.
    dbs = {"gone": "host=127.0.0.1 port=%d dbname=no_such_database_review8" % pg.port}
    p = proxy_factory(databases=dbs)
    for _ in range(2):
        with contextlib.closing(RawConn(p.port)) as c:
            seen = _recording(c)
            with pytest.raises(Exception):
                c.login("app", "gone")
            _rest_until_close(c, seen)
            oks = [i for i, m in enumerate(seen) if _is_auth_ok(m)]
            errs = [i for i, m in enumerate(seen) if m[0] == b"E"]
            types = [m[0] for m in seen]
            assert len(oks) == 1 and len(errs) == 1 and oks[0] < errs[0], types
            assert not {b"S", b"K", b"Z"} & set(types), types


def test_query_sent_with_the_startup_packet_is_answered_after_the_welcome(proxy_tx):
    # md5 login, then a query pipelined in the same write as the password:
    # the welcome goes straight to the socket, the query's answer after it.
    for _ in range(3):
        with contextlib.closing(RawConn(proxy_tx.port)) as c:
            c.send(startup_msg("app", "app"))
            t, body = c.recv_msg(10)
            assert t == b"R" and struct.unpack("!I", body[:4])[0] == 5, (t, body)
            inner = hashlib.md5(b"apppw" + b"app").hexdigest().encode()
            md5 = b"md5" + hashlib.md5(inner + body[4:8]).hexdigest().encode()
            pw = b"p" + struct.pack("!I", len(md5) + 5) + md5 + b"\0"
            c.send(pw + query_msg("select 41 + 1"))
            msgs = c.read_until([b"Z"], 10)
            types = [m[0] for m in msgs]
            assert _is_auth_ok(msgs[0]) and types[-2:] == [b"K", b"Z"], types
            assert sum(1 for m in msgs if _is_auth_ok(m)) == 1, types
            answer = c.read_until([b"Z"], 10)
            rows = [data_row_values(p) for t, p in answer if t == b"D"]
            assert rows == [["42"]], answer


@pytest.mark.skipif(IS_PGBOUNCER, reason="checks pgmoat's own console login")
def test_console_login_is_one_auth_ok_then_its_welcome(proxy_tx):
    with contextlib.closing(RawConn(proxy_tx.port)) as c:
        msgs = c.login("admin", "pgbouncer")
        types = [m[0] for m in msgs]
        oks = [i for i, m in enumerate(msgs) if _is_auth_ok(m)]
        assert len(oks) == 1 and types[-1] == b"Z", types
        assert b"R" not in types[oks[0] + 1:], types
        c.send(query_msg("SHOW VERSION"))
        assert c.read_until([b"Z"], 10)[-1][0] == b"Z"


def test_refused_login_gets_no_auth_ok(proxy_tx):
    # A wrong password: the error alone, AuthenticationOk never.
    with contextlib.closing(RawConn(proxy_tx.port)) as c:
        seen = _recording(c)
        with pytest.raises(Exception):
            c.login("app", "app", password="wrong")
        _rest_until_close(c, seen)
        assert not any(_is_auth_ok(m) for m in seen), seen
        assert seen[-1][0] == b"E", seen
