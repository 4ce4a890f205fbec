"""auth_type = hba: auth_hba_file (pg_hba.conf syntax) picks the method per connection."""

import contextlib
import subprocess

import psycopg2
import pytest

from conftest import PASSWORDS, PGMOAT_BIN, pgmoat_only

pytestmark = pgmoat_only

HBA = """\
# type  database  user       address          method
local   all       all                         trust
host    all       stats      127.0.0.1/32     reject
host    app       plainuser  127.0.0.1/32     password
host    all       md5user    127.0.0.1 255.255.255.255 md5
host    all       app        10.0.0.0/8       trust
hostssl all       app        127.0.0.1/32     trust
host    app,"pgbouncer" app,admin 127.0.0.0/8  scram-sha-256
"""


def hba_proxy(proxy_factory, hba=HBA, **kw):
    return proxy_factory(settings={"auth_type": "hba", "auth_hba_file": "hba.conf"},
                         extra_files={"hba.conf": hba}, **kw)


def whoami(proxy, user, password=None, db="app", **extra):
    with contextlib.closing(proxy.connect(user, db, password=password, autocommit=True,
                                          **extra)) as c, c.cursor() as cur:
        cur.execute("select current_user")
        return cur.fetchone()[0]


def login_error(proxy, user, password=None, db="app", **extra):
    with pytest.raises(psycopg2.OperationalError) as ei:
        whoami(proxy, user, password, db, **extra)
    return str(ei.value)


def test_methods_follow_the_first_matching_line(proxy_factory):
    p = hba_proxy(proxy_factory)
    assert whoami(p, "app") == "app"                     # scram-sha-256 line
    assert "authentication failed" in login_error(p, "app", "wrong")
    assert whoami(p, "plainuser") == "plainuser"         # password line
    assert whoami(p, "md5user") == "md5user"             # address + mask line
    assert "authentication failed" in login_error(p, "md5user", "wrong")


def test_reject_line_refuses_with_postgresql_wording(proxy_factory):
    p = hba_proxy(proxy_factory)
    err = login_error(p, "stats")
    assert 'pg_hba.conf rejects connection for host "127.0.0.1", user "stats"' in err, err


def test_no_matching_line_refuses(proxy_factory):
    p = hba_proxy(proxy_factory)
    # plainuser is only allowed into app; nobody is allowed anywhere
    err = login_error(p, "plainuser", db="postgres")
    assert 'no pg_hba.conf entry for host "127.0.0.1", user "plainuser", database "postgres"' \
        in err, err
    assert "no pg_hba.conf entry" in login_error(p, "nobody", "x")


def test_local_line_trusts_unix_socket_clients(proxy_factory):
    p = hba_proxy(proxy_factory)
    assert whoami(p, "app", "wrong-but-trusted", host=str(p.dir)) == "app"
    # the same user over TCP with that password is refused
    assert "authentication failed" in login_error(p, "app", "wrong-but-trusted")


def test_admin_console_is_covered_by_the_file(proxy_factory):
    p = hba_proxy(proxy_factory)
    with contextlib.closing(p.admin()) as c, c.cursor() as cur:
        cur.execute("SHOW VERSION")
        assert cur.fetchall()
    assert "pg_hba.conf rejects" in login_error(p, "stats", db="pgbouncer")


def test_reload_picks_up_a_changed_file_and_keeps_the_old_one_when_broken(proxy_factory):
    p = hba_proxy(proxy_factory)
    assert "pg_hba.conf rejects" in login_error(p, "stats")
    hba_path = p.dir / "hba.conf"
    hba_path.write_text(HBA.replace("stats      127.0.0.1/32     reject",
                                    "stats      127.0.0.1/32     md5"))
    p.reload()
    p.wait_log("configuration reloaded")
    # stats may now log in (its server login uses its own password)
    assert whoami(p, "stats") == "stats"
    hba_path.write_text("host all all all bogus-method\n")
    p.reload()
    p.wait_log("unsupported authentication method")
    assert whoami(p, "stats") == "stats"


def test_broken_file_stops_start_naming_file_and_line(proxy_factory):
    p = hba_proxy(proxy_factory, hba="host all all all trust\nhost all +admins all trust\n",
                  start=False)
    p.write_config()
    r = subprocess.run([PGMOAT_BIN, "--check", str(p.config_path)], capture_output=True,
                       text=True, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "hba.conf:2" in out and "+admins" in out, out


def test_auth_type_hba_without_a_file_is_a_config_error(proxy_factory):
    p = proxy_factory(settings={"auth_type": "hba"}, start=False)
    p.write_config()
    r = subprocess.run([PGMOAT_BIN, "--check", str(p.config_path)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0
    assert "auth_hba_file" in r.stdout + r.stderr
