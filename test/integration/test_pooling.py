"""Pool modes, limits and timeouts, observed from PostgreSQL's side."""

import contextlib
import re
import subprocess
import threading
import time

import psycopg2
import pytest

from conftest import (Bg, RawConn, assert_still_serving, parse_error_fields, parse_messages,
                      query_msg, raw_login, startup_msg, tcp_local_ports, wait_until)


class PeakBackends:
    """Samples the proxy's server connections in pg_stat_activity in a thread."""

    def __init__(self, pg, proxy, interval=0.05):
        self.pg, self.proxy, self.interval = pg, proxy, interval
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                n = len(self.pg.activity(proxy=self.proxy))
                self.peak = max(self.peak, n)
            except Exception:  # noqa: BLE001 - sampling is best effort
                pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)


def run_sql(proxy, sql, user="app", db="app", autocommit=True):
    with contextlib.closing(proxy.connect(user, db, autocommit=autocommit)) as c:
        with c.cursor() as cur:
            cur.execute(sql)
            r = cur.fetchall() if cur.description else None
        if not autocommit:
            c.commit()
        return r


def test_transaction_mode_20_clients_on_pool_of_2_all_complete(pg, proxy_factory):
    p = proxy_factory(settings={"pool_mode": "transaction", "default_pool_size": "2"})
    conns = [p.connect() for _ in range(20)]
    errors = []

    def work(c, i):
        try:
            for j in range(5):
                with c.cursor() as cur:
                    cur.execute("select pg_sleep(0.01), %s", (i * 100 + j,))
                    assert cur.fetchone()[1] == i * 100 + j
                c.commit()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    try:
        with PeakBackends(pg, p) as peak:
            threads = [threading.Thread(target=work, args=(c, i)) for i, c in enumerate(conns)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        assert not errors, errors[:3]
        assert 1 <= peak.peak <= 2
    finally:
        for c in conns:
            c.close()


def test_session_mode_keeps_one_server_per_client(pg, proxy_factory):
    p = proxy_factory(settings={"pool_mode": "session", "default_pool_size": "1",
                                "query_wait_timeout": "30"})
    a = p.connect(autocommit=True)
    try:
        with a.cursor() as cur:
            cur.execute("select pg_backend_pid()")
            pid_a = cur.fetchone()[0]
        # A second client waits while the first stays connected, even idle.
        b = Bg(run_sql, p, "select pg_backend_pid()")
        time.sleep(1.0)
        assert not b.done()
        a.close()
        assert b.result(10) == [(pid_a,)]
    finally:
        a.close()


def test_statement_mode_runs_autocommit_statements(proxy_stmt):
    assert run_sql(proxy_stmt, "select count(*) from items") == [(100,)]
    assert run_sql(proxy_stmt, "select 1; select 2") == [(2,)]


def error_then_close(proxy, sql, timeout=8):
    """Log in raw, send sql; return the ErrorResponse fields seen before the close."""
    c = raw_login(proxy)
    try:
        c.send(query_msg(sql))
        data, closed = c.read_until_close(timeout)
    finally:
        c.close()
    assert closed, "connection not closed"
    return [parse_error_fields(p) for t, p in parse_messages(data) if t == b"E"]


def test_statement_mode_refuses_transaction_blocks(proxy_stmt):
    c = proxy_stmt.connect(autocommit=False)
    try:
        with pytest.raises(psycopg2.Error):
            with c.cursor() as cur:
                cur.execute("select 1")  # psycopg2 opens a transaction first
                cur.execute("select 2")
    finally:
        c.close()
    errors = error_then_close(proxy_stmt, "BEGIN")
    assert [e["M"] for e in errors] == ["transaction blocks not allowed in statement pooling mode"]
    assert_still_serving(proxy_stmt)


def test_session_mode_server_reset_query_does_not_leak_state(pg, proxy_factory):
    p = proxy_factory(settings={"pool_mode": "session", "default_pool_size": "1",
                                "server_reset_query": "DISCARD ALL"})
    with contextlib.closing(p.connect(autocommit=True)) as a, a.cursor() as cur:
        cur.execute("select pg_backend_pid()")
        pid_a = cur.fetchone()[0]
        cur.execute("SET statement_timeout = '1234s'")
        cur.execute("CREATE TEMP TABLE leftover (x int)")
        cur.execute("PREPARE leftover_stmt AS SELECT 1")
    with contextlib.closing(p.connect(autocommit=True)) as b, b.cursor() as cur:
        cur.execute("select pg_backend_pid()")
        assert cur.fetchone()[0] == pid_a  # same server, so the reset is what matters
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone() == ("0",)
        cur.execute("select count(*) from pg_prepared_statements")
        assert cur.fetchone() == (0,)
        cur.execute("select to_regclass('pg_temp.leftover') is null")
        assert cur.fetchone() == (True,)


def test_max_client_conn_refuses_extra_clients(proxy_factory):
    p = proxy_factory(settings={"max_client_conn": "3"})
    held = [p.connect() for _ in range(3)]
    try:
        with pytest.raises(psycopg2.OperationalError) as ei:
            p.connect()
        assert "no more connections allowed (max_client_conn)" in str(ei.value)
    finally:
        for c in held:
            c.close()
    wait_until(lambda: p.query("select 1") == [(1,)], 5, what="a slot after closing")


def _concurrent_sleepers(p, n, seconds, user="app", db="app"):
    return [Bg(run_sql, p, "select pg_sleep(%s)" % seconds, user, db) for _ in range(n)]


def test_max_db_connections_caps_servers_across_pools(pg, proxy_factory):
    p = proxy_factory(settings={"default_pool_size": "5", "max_db_connections": "2",
                                "query_wait_timeout": "30"})
    with PeakBackends(pg, p) as peak:
        jobs = _concurrent_sleepers(p, 3, 0.7, "app") + _concurrent_sleepers(p, 2, 0.7, "trustuser")
        for j in jobs:
            j.result(30)
    assert peak.peak == 2


def test_max_user_connections_caps_servers_per_user(pg, proxy_factory):
    p = proxy_factory(settings={"default_pool_size": "5", "query_wait_timeout": "30"},
                      users={"app": "max_user_connections=1"})
    with PeakBackends(pg, p) as peak:
        jobs = _concurrent_sleepers(p, 3, 0.5, "app", "app") + \
            _concurrent_sleepers(p, 1, 0.5, "app", "bench")
        for j in jobs:
            j.result(30)
    assert peak.peak == 1


def test_min_pool_size_opens_servers_ahead_of_demand(pg, proxy_factory):
    p = proxy_factory(settings={"default_pool_size": "5", "min_pool_size": "3"})
    # pgbouncer keeps min_pool_size for pools that have clients (or a forced user).
    with contextlib.closing(p.connect(autocommit=True)) as c, c.cursor() as cur:
        cur.execute("select 1")
        wait_until(lambda: len(pg.activity(proxy=p)) == 3, 10, 0.2, "3 idle servers")


def test_reserve_pool_serves_a_waiting_client_after_reserve_pool_timeout(pg, proxy_factory):
    p = proxy_factory(settings={"default_pool_size": "1", "reserve_pool_size": "1",
                                "reserve_pool_timeout": "0.5", "query_wait_timeout": "30"})
    start = time.monotonic()
    with PeakBackends(pg, p) as peak:
        jobs = _concurrent_sleepers(p, 2, 2)
        for j in jobs:
            j.result(30)
    elapsed = time.monotonic() - start
    assert peak.peak == 2
    assert elapsed < 3.7, "second client was not served from the reserve (%.1fs)" % elapsed


def test_without_reserve_pool_clients_queue_on_pool_size(pg, proxy_factory):
    p = proxy_factory(settings={"default_pool_size": "1", "query_wait_timeout": "30"})
    with PeakBackends(pg, p) as peak:
        for j in _concurrent_sleepers(p, 2, 0.5):
            j.result(30)
    assert peak.peak == 1


def test_query_wait_timeout_fails_a_client_left_waiting(proxy_factory):
    p = proxy_factory(settings={"default_pool_size": "1", "query_wait_timeout": "1"})
    holder = p.connect(autocommit=False)
    try:
        with holder.cursor() as cur:
            cur.execute("select 1")  # holds the only server in a transaction
        start = time.monotonic()
        errors = error_then_close(p, "select 2")
        assert [e["M"] for e in errors] == ["query_wait_timeout"]
        assert time.monotonic() - start < 5
    finally:
        holder.close()
    assert_still_serving(p)


def test_client_idle_timeout_disconnects_idle_clients(proxy_factory):
    p = proxy_factory(settings={"client_idle_timeout": "1"})
    c = p.connect(autocommit=True)
    try:
        with c.cursor() as cur:
            cur.execute("select 1")
        time.sleep(2.5)  # polling would itself be activity
        assert _fails(c)
    finally:
        c.close()
    assert_still_serving(p)


def _fails(conn):
    try:
        with conn.cursor() as cur:
            cur.execute("select 1")
        return False
    except psycopg2.Error:
        return True


def test_idle_transaction_timeout_closes_client_and_rolls_back(pg, proxy_factory):
    p = proxy_factory(settings={"idle_transaction_timeout": "1"})
    c = p.connect(autocommit=False)
    try:
        with c.cursor() as cur:
            cur.execute("insert into leak_t values ('idle-tx-timeout', 1)")
        time.sleep(2.5)
        with pytest.raises(psycopg2.Error):
            with c.cursor() as cur:
                cur.execute("select 1")
    finally:
        c.close()
    wait_until(lambda: not [r for r in pg.activity(proxy=p) if r["in_xact"]], 5,
               what="no server left in a transaction")
    assert pg.sql("select count(*) from leak_t where tag = 'idle-tx-timeout'", db="app") == [(0,)]
    assert_still_serving(p)


def test_query_timeout_cancels_long_queries(proxy_factory):
    p = proxy_factory(settings={"query_timeout": "1"})
    start = time.monotonic()
    with pytest.raises(psycopg2.Error):
        run_sql(p, "select pg_sleep(5)")
    assert time.monotonic() - start < 4
    assert_still_serving(p)


def test_server_lifetime_replaces_old_server_connections(proxy_factory):
    p = proxy_factory(settings={"server_lifetime": "1", "default_pool_size": "1"})
    first = run_sql(p, "select pg_backend_pid()")
    wait_until(lambda: run_sql(p, "select pg_backend_pid()") != first, 8, 0.5,
               "a new server after server_lifetime")


def test_server_idle_timeout_closes_idle_servers(pg, proxy_factory):
    p = proxy_factory(settings={"server_idle_timeout": "1"})
    assert p.query("select 1") == [(1,)]
    assert len(pg.activity(proxy=p)) == 1
    wait_until(lambda: not pg.activity(proxy=p), 8, 0.2, "idle server to be closed")
    assert_still_serving(p)


def test_client_login_timeout_drops_silent_and_half_logged_in_clients(proxy_factory):
    # (tcp_defer_accept off: with it, the kernel keeps a silent client from pgmoat)
    p = proxy_factory(settings={"client_login_timeout": "1", "tcp_defer_accept": "0"})
    silent = RawConn(p.port)
    half = RawConn(p.port)
    try:
        half.send(startup_msg("app", "app"))  # then never answers the password request
        for c in (silent, half):
            _, closed = c.read_until_close(6)
            assert closed
    finally:
        silent.close()
        half.close()
    assert_still_serving(p)


def _accepted(p, raw):
    """Does pgmoat hold a socket of raw's connection (has it accepted it)?"""
    return bool(tcp_local_ports(p.pid, raw.sock.getsockname()[1]))


def test_tcp_defer_accept_hands_over_a_connection_with_its_first_packet(proxy_factory):
    # pgbouncer's default on Linux: a client that connects and sends nothing
    # costs pgmoat nothing, not even the login timeout.
    p = proxy_factory(settings={"client_login_timeout": "1"})
    raw = RawConn(p.port)
    try:
        time.sleep(1.5)
        assert not _accepted(p, raw)
        raw.send(startup_msg("app", "app"))
        wait_until(lambda: _accepted(p, raw), 5, 0.05, "the connection to be accepted")
    finally:
        raw.close()
    assert_still_serving(p)


def test_tcp_defer_accept_off_accepts_at_once(proxy_factory):
    p = proxy_factory(settings={"tcp_defer_accept": "0"})
    raw = RawConn(p.port)
    try:
        wait_until(lambda: _accepted(p, raw), 5, 0.05, "the connection to be accepted")
    finally:
        raw.close()


def _socket_lines(local_port, remote_port=None):
    """ss's line (timers, memory) for each established TCP socket on local_port."""
    flt = "( sport = :%d )" % local_port if remote_port is None else \
        "( sport = :%d and dport = :%d )" % (local_port, remote_port)
    out = subprocess.run(["ss", "-tnmoH", "state", "established", flt], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    lines = []
    for l in out.split("\n"):
        if l[:1].isspace() and lines:
            lines[-1] += " " + l.strip()  # a socket's memory line follows its line
        elif l.strip():
            lines.append(l)
    return lines


def _keepalive_seconds(line):
    """The keepalive timer's seconds left in an ss line (None without one)."""
    m = re.search(r"timer:\(keepalive,(?:(\d+)min)?(?:(\d+)(?:\.\d+)?sec)?", line)
    if not m:
        return None
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


def test_tcp_keepalive_timers_and_buffers_apply_to_both_sides(pg, proxy_factory):
    p = proxy_factory(settings={"tcp_keepidle": "50", "tcp_keepintvl": "5", "tcp_keepcnt": "3",
                                "tcp_user_timeout": "9000", "tcp_socket_buffer": "65536"})
    with contextlib.closing(p.connect(autocommit=True)) as c, c.cursor() as cur:
        cur.execute("select 1")
        server_ports = tcp_local_ports(p.pid, pg.port)
        assert server_ports

        def lines():
            return _socket_lines(p.port) + [l for port in server_ports
                                            for l in _socket_lines(port, pg.port)]

        # an idle socket shows its keepalive timer (one still sending shows another)
        wait_until(lambda: lines() and all(_keepalive_seconds(l) is not None for l in lines()),
                   10, 0.1, "the sockets to be idle")
        for line in lines():
            assert _keepalive_seconds(line) <= 50, line   # the system's default: 2 hours
            # the kernel doubles what it is given, for its own bookkeeping
            assert "rb131072" in line and "tb131072" in line, line


def test_tcp_keepalive_of_client_sockets_follows_a_reload(pg, proxy_factory):
    """The listener carries SO_KEEPALIVE for the sockets it accepts (they inherit it):
    turning tcp_keepalive off by a reload must still leave new client sockets without
    it, and turning it on again give it back."""
    p = proxy_factory(settings={"tcp_keepidle": "50"})

    def keepalive_of_new_client():
        with contextlib.closing(RawConn(p.port)) as raw:
            raw.send(b"\x00\x00")   # (tcp_defer_accept: accepted once data came)
            port = raw.sock.getsockname()[1]
            wait_until(lambda: _socket_lines(p.port, port), 10, 0.05, "the accepted socket")
            time.sleep(0.2)   # idle: a socket with keepalive now shows its timer
            return [_keepalive_seconds(l) for l in _socket_lines(p.port, port)]

    def reload_with(value):
        p.settings["tcp_keepalive"] = value
        p.write_config()
        before = p.log().count("configuration reloaded")
        p.reload()
        wait_until(lambda: p.log().count("configuration reloaded") > before, 10, 0.05,
                   "the reload")

    first = keepalive_of_new_client()
    assert first and all(s is not None and s <= 50 for s in first), first
    reload_with("0")
    assert keepalive_of_new_client() == [None]
    assert keepalive_of_new_client() == [None]
    reload_with("1")
    again = keepalive_of_new_client()
    assert again and all(s is not None and s <= 50 for s in again), again
    assert_still_serving(p)


def test_server_check_query_runs_before_reusing_an_idle_server(pg, proxy_factory):
    p = proxy_factory(settings={"server_check_query": "select nextval('public.check_seq')",
                                "server_check_delay": "0", "default_pool_size": "1"})
    before = pg.sql("select nextval('check_seq')", db="app")[0][0]
    for _ in range(3):
        assert run_sql(p, "select 1") == [(1,)]
        time.sleep(0.1)
    after = pg.sql("select nextval('check_seq')", db="app")[0][0]
    # At least one check per reuse of the idle server (two reuses).
    assert after - before - 1 >= 2, (before, after)


def test_server_check_delay_skips_the_check_on_a_recently_used_server(pg, proxy_factory):
    p = proxy_factory(settings={"server_check_query": "select nextval('public.check_seq')",
                                "server_check_delay": "30", "default_pool_size": "1"})
    before = pg.sql("select nextval('check_seq')", db="app")[0][0]
    for _ in range(3):
        assert run_sql(p, "select 1") == [(1,)]
    after = pg.sql("select nextval('check_seq')", db="app")[0][0]
    assert after - before == 1, (before, after)


def _cl_waiting(p):
    return sum(int(r["cl_waiting"]) for r in p.show_dicts("POOLS") if r["database"] == "app")


def _run_on(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def test_waiting_clients_get_a_freed_server_in_arrival_order(pg, proxy_factory):
    """A client asking while others wait queues behind them, even when a server
    just went idle (here: after its server_check_query), rather than taking it
    at once (pool_request_server's shortcut is for a pool nobody waits on)."""
    p = proxy_factory(settings={"default_pool_size": "1", "server_check_delay": "0",
                                "query_wait_timeout": "30"})
    holder = p.connect(autocommit=False)
    waiters = [p.connect(autocommit=True) for _ in range(3)]
    try:
        _run_on(holder, "select 1")  # holds the only server in a transaction
        jobs = []
        for i, w in enumerate(waiters):
            jobs.append(Bg(_run_on, w, "select clock_timestamp()"))
            wait_until(lambda: _cl_waiting(p) == i + 1, timeout=10, what="client %d queued" % i)
        holder.commit()
        stamps = [j.result(30) for j in jobs]
        assert stamps == sorted(stamps), "served out of arrival order: %r" % stamps
        assert _cl_waiting(p) == 0
    finally:
        holder.close()
        for w in waiters:
            w.close()
    assert_still_serving(p)
