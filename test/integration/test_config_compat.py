"""An unmodified pgbouncer.ini + userlist.txt works; bad configs are refused."""

import contextlib
import os
import re
import signal
import subprocess
import time

import psycopg2
import pytest

from conftest import (IS_PGBOUNCER, PASSWORDS, PGBOUNCER_BIN, PGMOAT_BIN, md5_secret,
                      pgmoat_only, pid_alive, psql, wait_until, xfail_pgbouncer)


def pgbouncer_style_ini(pg, proxy):
    """A pgbouncer.ini written the way pgbouncer users write them, with %include."""
    return """\
;; pgbouncer configuration, as shipped by a typical deployment
[databases]
%include {dir}/databases.ini

[users]
app = pool_mode=transaction

[pgbouncer]
logfile = {dir}/proxy.log
pidfile = {dir}/proxy.pid
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir = {dir}
auth_type = md5
auth_file = {dir}/userlist.txt
admin_users = admin
stats_users = stats
pool_mode = session
server_reset_query = DISCARD ALL
max_client_conn = 100
default_pool_size = 4
ignore_startup_parameters = extra_float_digits
server_login_retry = 1
; comments in both styles
# are accepted
""".format(dir=proxy.dir, port=proxy.port)


def test_unmodified_pgbouncer_ini_with_include_and_userlist_serves_queries(pg, proxy_factory):
    p = proxy_factory(start=False)
    p.ini_text = pgbouncer_style_ini(pg, p)
    p.extra_files = {"databases.ini": "app = host=127.0.0.1 port=%d dbname=app\n"
                                      "postgres = host=127.0.0.1 port=%d\n" % (pg.port, pg.port)}
    p.extra_files["userlist.txt"] = (
        ';; comment lines are ignored, as pgbouncer does\n'
        '"app" "%s"\n"admin" "%s"\n\n"md5user" "%s"\n'
        % (PASSWORDS["app"], PASSWORDS["admin"], md5_secret("md5user", PASSWORDS["md5user"])))
    p.start()
    assert p.query("select current_database(), current_user") == [("app", "app")]
    r = psql(p.port, "select count(*) from items")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "100"
    assert p.config_value("default_pool_size") == "4"
    assert p.query("select current_user", user="md5user", db="postgres") == [("md5user",)]


def test_star_fallback_database_serves_any_database_name(pg, proxy_factory):
    p = proxy_factory(databases={"*": "host=127.0.0.1 port=%d" % pg.port})
    assert p.query("select current_database()", db="bench") == [("bench",)]
    assert p.query("select current_database()", db="app") == [("app",)]


def test_users_section_pool_mode_overrides_global_mode(pg, proxy_factory):
    p = proxy_factory(settings={"pool_mode": "statement"},
                      users={"app": "pool_mode=transaction"})
    # app is in transaction mode: a transaction block works.
    with contextlib.closing(p.connect("app")) as c, c.cursor() as cur:
        cur.execute("select 1")
        cur.execute("select 2")
        c.commit()
    # md5user keeps the global statement mode: transaction blocks are refused.
    c = p.connect("md5user")
    try:
        with pytest.raises(psycopg2.Error):
            with c.cursor() as cur:
                cur.execute("select 1")  # psycopg2 sends BEGIN first
                cur.execute("select 2")
    finally:
        c.close()


def test_database_entry_pool_mode_and_pool_size_apply(pg, proxy_factory):
    p = proxy_factory(settings={"pool_mode": "session"},
                      databases={"app": "host=127.0.0.1 port=%d dbname=app pool_mode=transaction "
                                        "pool_size=1" % pg.port})
    # pool_size=1 in transaction mode: two connected clients share one server.
    c1 = p.connect(autocommit=True)
    c2 = p.connect(autocommit=True)
    try:
        for c in (c1, c2, c1, c2):
            with c.cursor() as cur:
                cur.execute("select 1")
        assert len(pg.activity(proxy=p)) == 1
    finally:
        c1.close()
        c2.close()


def bad_value_ini(proxy):
    return proxy.render_ini().replace("default_pool_size = 5", "default_pool_size = notanumber")


def test_bad_config_refuses_to_start_naming_file_line_and_key(pg, proxy_factory):
    p = proxy_factory(start=False)
    p.ini_text = bad_value_ini(p)
    line = next(i for i, l in enumerate(p.ini_text.splitlines(), 1)
                if l.startswith("default_pool_size"))
    p.start(wait=False)
    p.expect_exit = True
    rc = p.proc.wait(10)
    assert rc != 0
    out = p.log()
    assert "default_pool_size" in out, out
    assert str(p.config_path) in out or p.config_path.name in out, out
    assert re.search(r"\b%d\b" % line, out), out


@pgmoat_only
def test_check_exits_zero_on_a_good_config_and_one_on_a_bad_one(pg, proxy_factory):
    p = proxy_factory(start=False)
    p.write_config()
    good = subprocess.run([PGMOAT_BIN, "--check", str(p.config_path)], capture_output=True,
                          text=True, timeout=10)
    assert good.returncode == 0, good.stdout + good.stderr
    p.config_path.write_text(bad_value_ini(p))
    bad = subprocess.run([PGMOAT_BIN, "--check", str(p.config_path)], capture_output=True,
                         text=True, timeout=10)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    out = bad.stdout + bad.stderr
    assert "default_pool_size" in out and str(p.config_path) in out, out
    missing = subprocess.run([PGMOAT_BIN, "--check", str(p.dir / "nonexistent.ini")],
                             capture_output=True, text=True, timeout=10)
    assert missing.returncode == 1


def test_version_prints_name_and_version_and_exits_zero():
    binary = PGBOUNCER_BIN if IS_PGBOUNCER else PGMOAT_BIN
    r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    first = (r.stdout + r.stderr).splitlines()[0]
    assert re.search(r"\d+\.\d+\.\d+", first), first
    assert ("PgBouncer" if IS_PGBOUNCER else "pgmoat") in first


def test_daemon_mode_writes_pidfile_and_serves_until_sigterm(pg, proxy_factory):
    # the unknown key makes the parent log a warning before it forks
    p = proxy_factory(start=False, settings={"no_such_key_for_the_test": "1"})
    p.start(wait=False, args=("-d",))
    p.expect_exit = True
    assert p.proc.wait(10) == 0, p.log_tail()
    pid = int(wait_until(lambda: p.pidfile.exists() and p.pidfile.read_text().strip(), 10,
                         what="pidfile"))
    try:
        assert pid != p.proc.pid and pid_alive(pid)
        p.wait_accepting(watch_proc=False)
        assert p.query("select 1") == [(1,)]
        if not IS_PGBOUNCER:
            # lines logged after the forks carry the daemon's pid, not the parent's
            lines = wait_until(lambda: [l for l in p.logfile.read_text().splitlines()
                                        if "login attempt" in l], 10, what="a login line")
            assert "[%d]" % pid in lines[-1], lines[-1]
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(pid), 10, what="daemon to exit")
    wait_until(lambda: not p.pidfile.exists(), 5, what="pidfile removal")


@xfail_pgbouncer("a reload with a bad value resets that key to its default")
def test_reload_with_broken_file_keeps_old_config_and_keeps_serving(pg, proxy_factory):
    p = proxy_factory(settings={"default_pool_size": "3"})
    held = p.connect(autocommit=False)
    with held.cursor() as cur:
        cur.execute("select 1")  # a transaction stays open across the reload
    p.config_path.write_text(p.render_ini().replace("default_pool_size = 3",
                                                    "default_pool_size = notanumber"))
    p.reload()
    time.sleep(1.0)
    assert p.alive()
    assert p.config_value("default_pool_size") == "3"
    assert p.query("select 2") == [(2,)]
    with held.cursor() as cur:
        cur.execute("select 3")
        assert cur.fetchone() == (3,)
    held.commit()
    held.close()


def test_reload_with_good_file_applies_new_settings(pg, proxy_factory):
    p = proxy_factory(settings={"default_pool_size": "3"})
    p.settings["default_pool_size"] = "6"
    p.write_config()
    p.reload()
    wait_until(lambda: p.config_value("default_pool_size") == "6", 5, what="reload")
    assert p.query("select 1") == [(1,)]


def native_yaml(pg, p):
    return """\
listen: {{ host: 127.0.0.1, port: {port} }}
admin: {{ users: [admin], stats_users: [stats] }}
pooling:
  pool_mode: transaction
  default_pool_size: 3
  max_client_conn: 50
  unix_socket_dir: "{dir}"
  logfile: "{dir}/proxy.log"
  pidfile: "{dir}/proxy.pid"
databases:
  app: {{ host: 127.0.0.1, port: {pgport}, dbname: app }}
auth:
  type: scram-sha-256
  file: "{dir}/userlist.txt"
""".format(port=p.port, pgport=pg.port, dir=p.dir)


@pgmoat_only
def test_native_yaml_config_serves_queries(pg, proxy_factory):
    p = proxy_factory(start=False, config_name="pgmoat.yaml")
    p.ini_text = native_yaml(pg, p)
    p.start()
    assert p.query("select current_database()") == [("app",)]
    assert p.config_value("default_pool_size") == "3"


@pgmoat_only
def test_native_yaml_unknown_key_is_an_error_with_file_and_line(pg, proxy_factory):
    p = proxy_factory(start=False, config_name="pgmoat.yaml")
    text = native_yaml(pg, p).replace("  default_pool_size: 3\n",
                                      "  default_pool_size: 3\n  no_such_key: 1\n")
    p.ini_text = text
    p.write_config()
    line = text.splitlines().index("  no_such_key: 1") + 1
    r = subprocess.run([PGMOAT_BIN, "--check", str(p.config_path)], capture_output=True,
                       text=True, timeout=10)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "no_such_key" in out and ("%s:%d" % (p.config_path, line)) in out, out


@pgmoat_only
def test_repository_example_configs_pass_check():
    from conftest import REPO
    for name in ("pgmoat.ini", "pgmoat.yaml"):
        path = REPO / "etc" / name
        r = subprocess.run([PGMOAT_BIN, "--check", str(path)], capture_output=True, text=True,
                           timeout=10, cwd=str(REPO / "etc"))
        assert r.returncode == 0, "%s: %s%s" % (name, r.stdout, r.stderr)


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgmoat's reload log line")
def test_users_section_shows_in_show_users_and_follows_reload(pg, proxy_factory):
    p = proxy_factory(settings={"pool_mode": "transaction"},
                      users={"md5user": "pool_mode=session max_user_connections=2"})
    p.query("select 1", user="md5user", db="postgres")
    users = {r["name"]: r["pool_mode"] for r in p.show_dicts("USERS")}
    assert users["md5user"] == "session"
    pools = [r for r in p.show_dicts("POOLS") if r["user"] == "md5user"]
    assert pools and pools[0]["pool_mode"] == "session"
    p.users = {"md5user": "pool_mode=statement"}
    p.write_config()
    p.reload()
    p.wait_log("configuration reloaded")
    users = {r["name"]: r["pool_mode"] for r in p.show_dicts("USERS")}
    assert users["md5user"] == "statement"


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgmoat --check")
def test_users_section_unknown_key_is_refused(pg, proxy_factory):
    p = proxy_factory(users={"app": "pool_size=3"}, start=False)
    p.write_config()
    r = subprocess.run([PGMOAT_BIN, "--check", str(p.config_path)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0
    assert "pool_size" in r.stdout + r.stderr
