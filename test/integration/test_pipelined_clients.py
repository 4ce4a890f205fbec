"""Review of session 8's data-path changes (review9): several clients at once, each
pipelining Queries and Parse/Bind/Execute/Sync batches with results of a few bytes to
40 KB, through a pool of two servers, reading with small windows and pauses. A run
that empties its input goes from where it lies to an idle socket (pertx8), a rewritten
Bind goes out from the stack (prepared statements), TLS writes from its own buffer and
hands only a blocked write to the bufferevent (tls8): whichever way the bytes go, each
client gets every reply whole, its own, and in order. And a database removed by a
reload, then added back, while a client holds its old pool (conn8: the login pool a
database remembers must not outlive the pool)."""

import contextlib
import random
import struct
import threading
import time

import psycopg2
import pytest

from conftest import (assert_still_serving, bind_msg, execute_msg, parse_msg,
                      pgmoat_only, query_msg, sync_msg, wait_until)
from test_backpressure import small_window_login
from test_tls import certs, pg_ssl, server_tls, tls_raw, tls_settings  # noqa: F401 (fixtures)

CLIENTS = 8


def value_and_tag(row):
    """The two text columns of a DataRow (v, t)."""
    ln = struct.unpack("!i", row[2:6])[0]
    ln2 = struct.unpack("!i", row[6 + ln:10 + ln])[0]
    return row[6:6 + ln].decode(), row[10 + ln:10 + ln + ln2].decode()


def pipeline(c, k, rounds, named):
    """Batches of one to five statements sent at once, answers checked one by one."""
    rnd = random.Random(k)
    parsed = set()
    for r in range(rounds):
        batch, expect = b"", []
        for j in range(rnd.randrange(1, 6)):
            n = rnd.choice([1, 50, 3000, 40000])
            tag = "%d_%d_%d" % (k, r, j)
            if rnd.random() < 0.5:
                batch += query_msg("select repeat('%s', %d) as v, '%s' as t" % (chr(65 + j), n, tag))
            else:
                name = "s%d" % (j % 3) if named else ""
                if name not in parsed:
                    batch += parse_msg("select repeat($1, $2::int) as v, $3::text as t", name)
                if name:
                    parsed.add(name)
                batch += bind_msg((chr(65 + j), n, tag), stmt=name) + execute_msg() + sync_msg()
            expect.append((chr(65 + j) * n, tag))
        c.send(batch)
        if rnd.random() < 0.5:
            time.sleep(rnd.random() * 0.03)  # the proxy's output to us fills meanwhile
        for v, tag in expect:
            msgs = c.read_until({b"Z"}, timeout=30)
            rows = [p for t, p in msgs if t == b"D"]
            assert len(rows) == 1, (tag, [(t, p[:60]) for t, p in msgs])
            got_v, got_t = value_and_tag(rows[0])
            assert got_t == tag and got_v == v, (tag, got_t, len(got_v), len(v))


def run_clients(connect, rounds, named):
    errors = []

    def client(k):
        try:
            with contextlib.closing(connect(k)) as c:
                pipeline(c, k, rounds, named)
        except Exception as e:  # (reported by the test, not lost in the thread)
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert not any(t.is_alive() for t in threads), "a client hangs"
    assert not errors, errors[:3]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("prepared", [False, True], ids=["plain", "prepared"])
def test_pipelined_clients_on_two_servers_get_every_reply_whole_and_in_order(proxy_factory,
                                                                                 prepared):
    settings = {"pool_mode": "transaction", "default_pool_size": "2"}
    if prepared:
        settings["max_prepared_statements"] = "50"
    p = proxy_factory(settings=settings)
    run_clients(lambda k: small_window_login(p, 4096 + 1024 * k, timeout=20.0), rounds=60, named=prepared)
    assert_still_serving(p)


@pytest.mark.timeout(180)
def test_pipelined_tls_clients_through_tls_servers_get_every_reply_whole_and_in_order(
        proxy_factory, certs, pg_ssl):  # noqa: F811
    s = tls_settings(certs, "require")
    s.update(server_tls(certs, "verify-ca"), pool_mode="transaction", default_pool_size="2")
    p = proxy_factory(settings=s)

    def connect(k):
        c = tls_raw(p, certs)
        c.login("app", "app")
        return c

    run_clients(connect, rounds=20, named=False)
    assert p.alive()


@pgmoat_only
@pytest.mark.timeout(120)
def test_a_database_removed_and_added_back_while_its_old_pool_is_held(proxy_factory):
    p = proxy_factory(settings={"pool_mode": "session", "auth_type": "trust"})
    saved = dict(p.databases)
    holder = p.connect()
    holder.cursor().execute("select 1")  # holds a server of the first "app" pool
    for _ in range(3):
        del p.databases["app"]
        p.write_config()
        p.reload()
        wait_until(lambda: "app" not in [r[0] for r in p.show("DATABASES")[1]], what="app removed")
        with pytest.raises(psycopg2.Error):
            p.connect().close()
        p.databases.update(saved)
        p.write_config()
        p.reload()
        wait_until(lambda: "app" in [r[0] for r in p.show("DATABASES")[1]], what="app back")
        for _ in range(3):
            assert_still_serving(p)

    def app_pools():
        return len([r for r in p.show("POOLS")[1] if r[0] == "app"])

    assert app_pools() >= 2, "the removed databases keep their pools while they have servers"
    holder.rollback()
    holder.close()

    def old_pools_freed():
        return app_pools() == 1

    wait_until(old_pools_freed, timeout=15, what="the removed database's pools freed")
    for _ in range(5):
        assert_still_serving(p)
    assert p.alive()
