"""Admin console: pgbouncer 1.18's SHOW columns, and its commands."""

import contextlib
import time

import psycopg2
import pytest

from conftest import Bg, IS_PGBOUNCER, assert_still_serving, pgmoat_only, wait_until

SHOWS = ["POOLS", "CLIENTS", "SERVERS", "STATS", "DATABASES", "CONFIG", "VERSION", "LISTS",
         "USERS", "STATS_TOTALS", "STATS_AVERAGES", "MEM", "SOCKETS", "ACTIVE_SOCKETS", "FDS",
         "DNS_HOSTS", "DNS_ZONES"]


@pytest.fixture(scope="module")
def reference_pgbouncer(module_proxy_factory):
    """The real pgbouncer 1.18 with the same config, whatever the target is."""
    return module_proxy_factory(kind="pgbouncer")


@pytest.fixture(scope="module")
def busy_proxy_tx(proxy_tx):
    """The target with a client and a server in its lists."""
    c = proxy_tx.connect(autocommit=True)
    with c.cursor() as cur:
        cur.execute("select 1")
    yield proxy_tx
    c.close()


def columns(proxy, what):
    return proxy.show(what)[0]


@pytest.mark.parametrize("what", SHOWS)
def test_show_columns_equal_pgbouncer_1_18(busy_proxy_tx, reference_pgbouncer, what):
    assert columns(busy_proxy_tx, what) == columns(reference_pgbouncer, what)


def test_show_config_lists_the_same_keys_as_pgbouncer(busy_proxy_tx, reference_pgbouncer):
    ours = [r["key"] for r in busy_proxy_tx.show_dicts("CONFIG")]
    theirs = [r["key"] for r in reference_pgbouncer.show_dicts("CONFIG")]
    assert sorted(set(theirs) - set(ours)) == []


def test_show_pools_reports_the_pool_of_a_connected_client(busy_proxy_tx):
    rows = busy_proxy_tx.show_dicts("POOLS")
    app = [r for r in rows if r["database"] == "app" and r["user"] == "app"]
    assert len(app) == 1
    assert app[0]["cl_active"] >= 1
    assert app[0]["pool_mode"] == "transaction"


def test_show_clients_and_servers_name_database_and_user(busy_proxy_tx):
    clients = busy_proxy_tx.show_dicts("CLIENTS")
    assert any(r["database"] == "app" and r["user"] == "app" for r in clients)
    servers = busy_proxy_tx.show_dicts("SERVERS")
    assert any(r["database"] == "app" and r["user"] == "app" for r in servers)


def test_show_clients_gives_the_address_clients_connected_to(busy_proxy_tx):
    app = [r for r in busy_proxy_tx.show_dicts("CLIENTS") if r["database"] == "app"]
    assert app
    for r in app:
        assert (r["local_addr"], int(r["local_port"])) == ("127.0.0.1", busy_proxy_tx.port), r


def test_show_databases_lists_configured_databases(busy_proxy_tx, pg):
    rows = {r["name"]: r for r in busy_proxy_tx.show_dicts("DATABASES")}
    assert {"app", "bench", "postgres", "pgbouncer"} <= set(rows)
    assert rows["app"]["port"] == pg.port
    assert rows["app"]["database"] == "app"


def test_show_version_names_the_product(busy_proxy_tx):
    cols, rows = busy_proxy_tx.show("VERSION")
    assert cols == ["version"]
    assert ("PgBouncer" if IS_PGBOUNCER else "pgmoat") in rows[0][0]


def test_stats_user_can_show_but_not_pause(busy_proxy_tx):
    cols, rows = busy_proxy_tx.show("POOLS", user="stats")
    assert "cl_active" in cols
    with contextlib.closing(busy_proxy_tx.admin("stats")) as c, c.cursor() as cur:
        with pytest.raises(psycopg2.Error) as ei:
            cur.execute("PAUSE")
        assert "admin access needed" in str(ei.value)
    assert_still_serving(busy_proxy_tx)


def test_ordinary_user_cannot_use_the_admin_console(busy_proxy_tx):
    with pytest.raises(psycopg2.Error):
        busy_proxy_tx.admin("app").close()


def test_pause_holds_new_queries_and_resume_releases_them(proxy_factory):
    p = proxy_factory()
    assert p.query("select 1") == [(1,)]
    with contextlib.closing(p.admin()) as a, a.cursor() as cur:
        cur.execute("PAUSE")
        q = Bg(p.query, "select 2")
        time.sleep(1.0)
        assert not q.done()
        cur.execute("RESUME")
        assert q.result(10) == [(2,)]


def test_reload_command_rereads_the_config(proxy_factory):
    p = proxy_factory(settings={"default_pool_size": "3"})
    p.settings["default_pool_size"] = "4"
    p.write_config()
    with contextlib.closing(p.admin()) as a, a.cursor() as cur:
        cur.execute("RELOAD")
    assert p.config_value("default_pool_size") == "4"


def test_pool_mode_changes_reach_existing_pools(proxy_factory):
    """The pool mode is cached per pool: SET and RELOAD must still reach a pool
    that already serves clients."""
    p = proxy_factory(settings={"pool_mode": "transaction"})
    assert p.query("select 1") == [(1,)]

    def modes():
        return {r["pool_mode"] for r in p.show_dicts("POOLS") if r["database"] == "app"}

    assert modes() == {"transaction"}
    with contextlib.closing(p.admin()) as a, a.cursor() as cur:
        cur.execute("SET pool_mode = 'session'")
    assert modes() == {"session"}
    p.settings["pool_mode"] = "statement"
    p.write_config()
    with contextlib.closing(p.admin()) as a, a.cursor() as cur:
        cur.execute("RELOAD")
    assert modes() == {"statement"}
    assert p.query("select 2") == [(2,)]


def test_shutdown_command_stops_the_proxy(proxy_factory):
    p = proxy_factory()
    p.expect_exit = True
    a = p.admin()
    try:
        with a.cursor() as cur:
            try:
                cur.execute("SHUTDOWN")
            except psycopg2.Error:
                pass  # the console may close before answering
    finally:
        a.close()
    wait_until(lambda: not p.alive(), 10, what="proxy to exit after SHUTDOWN")


@pgmoat_only
def test_pgmoat_database_name_is_also_the_admin_console(busy_proxy_tx):
    with contextlib.closing(busy_proxy_tx.admin(db="pgmoat")) as c, c.cursor() as cur:
        cur.execute("SHOW VERSION")
        assert "pgmoat" in cur.fetchone()[0]


# ------------------------------------------------- authorisation, SUSPEND, FDS, KILL_CLIENT

WRITE_COMMANDS = ["PAUSE", "PAUSE app", "RESUME", "RESUME app", "DISABLE app", "ENABLE app",
                  "RECONNECT", "RECONNECT app", "KILL app", "SUSPEND", "SHUTDOWN", "RELOAD",
                  "WAIT_CLOSE", "WAIT_CLOSE app", "SET default_pool_size = 3"]


def console_error(proxy, sql, user):
    with contextlib.closing(proxy.admin(user)) as c, c.cursor() as cur:
        with pytest.raises(psycopg2.Error) as ei:
            cur.execute(sql)
        return str(ei.value)


@pytest.mark.parametrize("sql", WRITE_COMMANDS)
def test_stats_users_are_refused_every_command_that_changes_something(busy_proxy_tx, sql):
    assert "admin access needed" in console_error(busy_proxy_tx, sql, "stats")
    assert_still_serving(busy_proxy_tx)


@pgmoat_only
@pytest.mark.parametrize("sql", ["KILL_CLIENT 1", "SHOW FDS"])
def test_stats_users_may_not_kill_clients_or_see_fds(busy_proxy_tx, sql):
    assert "admin access needed" in console_error(busy_proxy_tx, sql, "stats")


@pytest.mark.parametrize("what", [s for s in SHOWS if s != "FDS"])
def test_stats_users_may_run_every_show(busy_proxy_tx, what):
    cols, _ = busy_proxy_tx.show(what, user="stats")
    assert cols


# pgbouncer fakes these for drivers that ask a fresh connection (1.18 knows fewer of them)
DRIVER_PARAMS = {"client_encoding": "UTF-8", "default_transaction_isolation": "read committed",
                 "standard_conforming_strings": "on", "datestyle": "ISO", "timezone": "GMT",
                 "extra_float_digits": "2"}


@pgmoat_only
@pytest.mark.parametrize("user", ["admin", "stats"])
def test_every_console_user_may_show_and_set_the_parameters_drivers_ask_for(busy_proxy_tx, user):
    with contextlib.closing(busy_proxy_tx.admin(user)) as c, c.cursor() as cur:
        for name, value in DRIVER_PARAMS.items():
            cur.execute("SHOW " + name.upper())
            assert ([d[0] for d in cur.description], cur.fetchall()) == ([name], [(value,)])
            del c.notices[:]
            cur.execute("SET %s = 'x'" % name)
            assert cur.statusmessage == "SET"
            assert [n.strip() for n in c.notices] == ["NOTICE:  SET ignored"]
        cur.execute("SHOW client_encoding")
        assert cur.fetchall() == [("UTF-8",)], "a SET of a faked parameter changes nothing"


@pgmoat_only
def test_kill_client_drops_that_client_only(proxy_factory):
    p = proxy_factory()
    victim = p.connect(autocommit=True)
    other = p.connect(autocommit=True)
    try:
        with victim.cursor() as cur:
            cur.execute("select pg_backend_pid()")
        with other.cursor() as cur:
            cur.execute("select 1")
        before = {r["ptr"] for r in p.show_dicts("CLIENTS") if r["user"] == "app"}
        assert len(before) == 2
        # SHOW CLIENTS does not say which ptr is which connection: kill one of the
        # two and check that exactly one dies and the console forgets only it
        target = sorted(before)[0]
        with contextlib.closing(p.admin()) as a, a.cursor() as cur:
            cur.execute("KILL_CLIENT " + target)
            with pytest.raises(psycopg2.Error) as ei:
                cur.execute("KILL_CLIENT " + target)
            assert "no such client" in str(ei.value)
            with pytest.raises(psycopg2.Error) as ei:
                cur.execute("KILL_CLIENT")
            assert "client id is required" in str(ei.value)
        dead = 0
        for c in (victim, other):
            try:
                with c.cursor() as cur:
                    cur.execute("select 1")
            except psycopg2.Error as e:
                assert "KILL_CLIENT" in str(e) or "terminat" in str(e) or "closed" in str(e)
                dead += 1
        assert dead == 1
        after = {r["ptr"] for r in p.show_dicts("CLIENTS") if r["user"] == "app"}
        assert after == before - {target}
    finally:
        victim.close()
        other.close()
    assert_still_serving(p)


@pgmoat_only
def test_suspend_freezes_traffic_and_resume_releases_it(proxy_factory):
    p = proxy_factory()
    client = p.connect(autocommit=True)
    try:
        with client.cursor() as cur:
            cur.execute("select 1")
        with contextlib.closing(p.admin()) as a, a.cursor() as cur:
            cur.execute("SUSPEND")
            cur.execute("SHOW STATE")
            assert ("suspended", "yes") in cur.fetchall()
            with pytest.raises(psycopg2.Error) as ei:
                cur.execute("SUSPEND")
            assert "already suspended" in str(ei.value)

            def run_query():
                with client.cursor() as c2:
                    c2.execute("select 2")
                    return c2.fetchone()[0]

            q = Bg(run_query)
            fresh = Bg(p.query, "select 3")      # a new connection waits in the backlog
            time.sleep(1.0)
            assert not q.done() and not fresh.done()
            cur.execute("SHOW VERSION")          # the console keeps working
            cur.execute("RESUME")
            assert q.result(10) == 2
            assert fresh.result(10) == [(3,)]
            cur.execute("SHOW STATE")
            assert ("suspended", "no") in cur.fetchall()
    finally:
        client.close()


@pgmoat_only
def test_show_fds_lists_listeners_clients_and_servers_without_secrets(busy_proxy_tx):
    rows = busy_proxy_tx.show_dicts("FDS")
    tasks = {r["task"] for r in rows}
    assert {"pooler", "client", "server"} <= tasks, rows
    pooler = [r for r in rows if r["task"] == "pooler"]
    assert any(r["port"] == busy_proxy_tx.port for r in pooler)
    client = [r for r in rows if r["task"] == "client" and r["user"] == "app"][0]
    assert client["database"] == "app" and client["fd"] > 0
    assert all(r["password"] is None and r["scram_client_key"] is None for r in rows)
