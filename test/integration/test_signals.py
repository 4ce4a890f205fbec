"""Signals: SIGHUP reloads; SIGINT (and pgmoat's SIGTERM) let transactions finish."""

import signal
import socket
import time

import psycopg2
import pytest

from conftest import pgmoat_only, wait_until


def test_sighup_reload_changes_default_pool_size(proxy_factory):
    p = proxy_factory(settings={"default_pool_size": "3"})
    assert p.config_value("default_pool_size") == "3"
    p.settings["default_pool_size"] = "9"
    p.write_config()
    p.reload()
    wait_until(lambda: p.config_value("default_pool_size") == "9", 5, 0.1, "reload")
    assert p.query("select 1") == [(1,)]


def refuses_new_clients(proxy):
    try:
        c = proxy.connect(connect_timeout=2)
    except psycopg2.OperationalError:
        return True
    try:
        with c.cursor() as cur:
            cur.execute("select 1")
        return False
    except psycopg2.Error:
        return True
    finally:
        c.close()


def drain_on(proxy, sig):
    c = proxy.connect(autocommit=False)
    try:
        with c.cursor() as cur:
            cur.execute("insert into leak_t values ('drain', 1) returning v")
        proxy.expect_exit = True
        proxy.signal(sig)
        time.sleep(0.5)
        assert proxy.alive(), "proxy exited with a transaction open"
        with c.cursor() as cur:
            cur.execute("select 2")
            assert cur.fetchone() == (2,)
            cur.execute("delete from leak_t where tag = 'drain'")
        c.commit()
    finally:
        c.close()
    wait_until(lambda: not proxy.alive(), 10, 0.1, "proxy to exit after the transaction")


def test_sigint_lets_open_transaction_finish_then_exits(proxy_factory):
    p = proxy_factory(settings={"pool_mode": "transaction"})
    drain_on(p, signal.SIGINT)


@pgmoat_only
def test_sigterm_drains_like_sigint(proxy_factory):
    p = proxy_factory(settings={"pool_mode": "transaction"})
    drain_on(p, signal.SIGTERM)


def test_sigterm_exits_promptly_when_idle(proxy_factory):
    p = proxy_factory()
    assert p.query("select 1") == [(1,)]
    p.expect_exit = True
    p.signal(signal.SIGTERM)
    wait_until(lambda: not p.alive(), 10, 0.1, "proxy to exit")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", p.port), timeout=1).close()


# ---------------------------------------------------------------- the SIGTERM drain (ops)

def http_get(port, path, timeout=3):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


@pgmoat_only
def test_sigterm_turns_readiness_false_and_refuses_new_connections(proxy_factory):
    from conftest import free_port
    hport = free_port()
    p = proxy_factory(settings={"pool_mode": "transaction", "http_listen": "127.0.0.1:%d" % hport})
    assert http_get(hport, "/readyz") == (200, "ready\n")
    c = p.connect(autocommit=False)
    try:
        with c.cursor() as cur:
            cur.execute("select 1")  # a transaction stays open: the drain waits for it
        p.expect_exit = True
        p.signal(signal.SIGTERM)
        wait_until(lambda: http_get(hport, "/readyz") == (503, "draining\n"), 5, 0.05, "readyz 503")
        assert http_get(hport, "/healthz")[0] == 200
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", p.port), timeout=1).close()
        with c.cursor() as cur:
            cur.execute("select 2")
            assert cur.fetchone() == (2,)
        c.commit()
        # closed at the boundary (libpq may report only the closure: the 57P01
        # error itself is checked byte by byte in test_idle_client_gets_57p01_at_once)
        with pytest.raises(psycopg2.OperationalError):
            with c.cursor() as cur:
                cur.execute("select 3")
    finally:
        c.close()
    wait_until(lambda: not p.alive(), 10, 0.1, "proxy to exit after the last client")
    assert p.proc.returncode == 0


@pgmoat_only
def test_idle_client_gets_57p01_at_once(proxy_factory):
    from conftest import raw_login, parse_messages, parse_error_fields
    p = proxy_factory(settings={"pool_mode": "transaction"})
    c = raw_login(p)
    p.expect_exit = True
    p.signal(signal.SIGTERM)
    data, closed = c.read_until_close(timeout=5)
    assert closed
    errs = [parse_error_fields(m) for t, m in parse_messages(data) if t == b"E"]
    assert errs and errs[0]["C"] == "57P01" and errs[0]["S"] == "FATAL", errs
    c.close()
    wait_until(lambda: not p.alive(), 10, 0.1, "proxy to exit")


@pgmoat_only
def test_shutdown_timeout_ends_a_transaction_that_never_finishes(proxy_factory, pg):
    p = proxy_factory(settings={"pool_mode": "transaction", "shutdown_timeout": "1"})
    c = p.connect(autocommit=False)
    try:
        with c.cursor() as cur:
            cur.execute("insert into leak_t values ('drain_timeout', 1)")
        p.expect_exit = True
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        wait_until(lambda: not p.alive(), 10, 0.05, "proxy to exit after shutdown_timeout")
        assert 0.8 <= time.monotonic() - t0 < 6
        with pytest.raises(psycopg2.Error):
            with c.cursor() as cur:
                cur.execute("select 1")
    finally:
        c.close()
    # the unfinished transaction was rolled back, never committed
    wait_until(lambda: pg.sql("select count(*) from leak_t where tag = 'drain_timeout'",
                              db="app") == [(0,)], 10, 0.1, "rollback")
    assert "shutdown_timeout" in p.log()


PGBENCH_SCRIPT = """\\set n random(1, 2000000000)
BEGIN;
INSERT INTO drain_count VALUES (:client_id, :n, 1, NULL);
SELECT pg_sleep(0.002);
UPDATE drain_count SET b = 2 WHERE client = :client_id AND n = :n;
COMMIT;
"""


@pgmoat_only
@pytest.mark.parametrize("mode,protocol", [("transaction", "simple"), ("transaction", "extended"),
                                           ("session", "simple")])
def test_sigterm_under_pgbench_load_loses_no_transaction(proxy_factory, pg, mode, protocol):
    from conftest import pgbench_bg
    pg.sql("drop table if exists drain_count", db="bench")
    pg.sql("create table drain_count (client int, n bigint, a int, b int)", db="bench")
    pg.sql("grant all on drain_count to public", db="bench")
    p = proxy_factory(settings={"pool_mode": mode, "default_pool_size": "5" if mode ==
                                "transaction" else "8", "shutdown_timeout": "30"})
    script = p.dir / "drain.sql"
    script.write_text(PGBENCH_SCRIPT)
    bench = pgbench_bg(p.port, ["-c", "8", "-j", "2", "-T", "60", "-M", protocol,
                                 "-f", str(script)])
    try:
        wait_until(lambda: pg.sql("select count(*) from drain_count", db="bench")[0][0] >= 50,
                   30, 0.05, "load to start")
        p.expect_exit = True
        p.signal(signal.SIGTERM)
        out, err = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(10)
    wait_until(lambda: not p.alive(), 30, 0.1, "proxy to exit")
    import re
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    assert m, out + err
    processed = int(m.group(1))
    rows = pg.sql("select count(*), count(*) filter (where b is distinct from 2) from drain_count",
                  db="bench")[0]
    # every transaction pgbench counted is in the table, and none is half done
    assert rows == (processed, 0), (rows, processed, out, err)
    # pgbench's only failures are connections closed at a boundary: each client
    # was told 57P01 and stopped at its BEGIN (command 1; command 0 is \set)
    # pgbench words it two ways: "client N aborted in command 1 (SQL) ..." when the
    # connection is found closed, "client N script 0 aborted in command 1 query 0: ..."
    # when the 57P01 arrived as the query's result
    aborted = re.findall(r"client (\d+) (?:script \d+ )?aborted in command (\d+)", err)
    assert sorted(int(c) for c, _ in aborted) == list(range(8)), err
    assert {cmd for _, cmd in aborted} == {"1"}, err
    assert err.count("pgmoat is shutting down (admin_shutdown)") == 8, err
    others = [ln for ln in err.splitlines()
              if "shutting down" not in ln and not re.search(r"client \d+ (?:script \d+ )?aborted in command 1 ", ln)
              and "Run was aborted" not in ln]
    assert not others, err
    assert p.proc.returncode == 0


@pgmoat_only
def test_repeated_sigterm_does_not_cut_the_drain_short(proxy_factory):
    p = proxy_factory(settings={"pool_mode": "transaction"})
    c = p.connect(autocommit=False)
    try:
        with c.cursor() as cur:
            cur.execute("insert into leak_t values ('drain2', 1)")
        p.expect_exit = True
        p.signal(signal.SIGTERM)   # preStop: kill -TERM 1
        time.sleep(0.3)
        p.signal(signal.SIGTERM)   # the kubelet's own SIGTERM
        time.sleep(0.5)
        assert p.alive(), "the second SIGTERM stopped the drain"
        with c.cursor() as cur:
            cur.execute("delete from leak_t where tag = 'drain2'")
        c.commit()
    finally:
        c.close()
    wait_until(lambda: not p.alive(), 10, 0.1, "proxy to exit")
