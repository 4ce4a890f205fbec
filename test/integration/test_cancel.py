"""Cancel requests: routed to the right query only, with keys that are the proxy's own."""

import socket
import time

import psycopg2
import pytest

from conftest import Bg, cancel_request, raw_login


def sleep_query(conn, seconds):
    with conn.cursor() as cur:
        cur.execute("select pg_sleep(%s)", (seconds,))
    return "finished"


def test_cancel_stops_only_that_query_quickly(proxy_tx):
    victim = proxy_tx.connect(autocommit=True)
    other = proxy_tx.connect(autocommit=True)
    try:
        v = Bg(sleep_query, victim, 10)
        o = Bg(sleep_query, other, 2)
        time.sleep(0.5)
        victim.cancel()
        with pytest.raises(psycopg2.extensions.QueryCanceledError):
            v.result(5)
        assert v.elapsed() < 3
        assert o.result(10) == "finished"
        assert o.elapsed() >= 1.9
        # The cancelled client's connection goes on working.
        with victim.cursor() as cur:
            cur.execute("select 1")
            assert cur.fetchone() == (1,)
    finally:
        victim.close()
        other.close()


def test_cancel_key_seen_by_client_is_not_the_backends(proxy_tx):
    c = raw_login(proxy_tx)
    try:
        assert c.backend_pid is not None and c.backend_key is not None
        msgs = c.simple_query("select pg_backend_pid()")
        real_pid = int([p for t, p in msgs if t == b"D"][0][6:].decode())
        assert c.backend_pid != real_pid
    finally:
        c.close()
    # Two clients never share a key.
    a, b = raw_login(proxy_tx), raw_login(proxy_tx)
    try:
        assert (a.backend_pid, a.backend_key) != (b.backend_pid, b.backend_key)
    finally:
        a.close()
        b.close()


def send_cancel(proxy, pid, key):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(cancel_request(pid, key))
        s.settimeout(5)
        try:
            while s.recv(1024):
                pass
        except (socket.timeout, ConnectionResetError):
            pass


def test_stale_cancel_does_not_hit_the_next_client_of_the_server(pg, proxy_factory):
    p = proxy_factory(settings={"pool_mode": "transaction", "default_pool_size": "1"})
    a = raw_login(p)
    b = p.connect(autocommit=True)
    try:
        a.simple_query("select 1")  # a used the only server and released it
        job = Bg(sleep_query, b, 2)  # now b runs on that same server
        time.sleep(0.5)
        send_cancel(p, a.backend_pid, a.backend_key)
        assert job.result(10) == "finished"
    finally:
        a.close()
        b.close()


def test_cancel_with_a_wrong_key_is_ignored(proxy_tx):
    c = proxy_tx.connect(autocommit=True)
    raw = raw_login(proxy_tx)
    try:
        job = Bg(sleep_query, c, 1.5)
        time.sleep(0.3)
        send_cancel(proxy_tx, raw.backend_pid, raw.backend_key ^ 0x5A5A5A5A)
        assert job.result(10) == "finished"
    finally:
        raw.close()
        c.close()
