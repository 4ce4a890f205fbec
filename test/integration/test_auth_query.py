"""auth_user + auth_query: clients missing from auth_file are looked up in the database."""

import contextlib

import psycopg2
import pytest

from conftest import PASSWORDS, pgmoat_only, wait_until

pytestmark = pgmoat_only

AUTH_USER, AUTH_PW = "aq_auth", "aq-auth-pw"
ALICE, ALICE_PW = "aq_alice", "alice-pw"
QUOTED = "aq_o'brien"       # a quote in the name: it must travel as a parameter
QUOTED_PW = "quoted-pw"
APPNAME = "pgmoat auth_query"

SETUP = [
    "DROP FUNCTION IF EXISTS public.aq_lookup(text)",
    "DROP ROLE IF EXISTS aq_auth",
    "DROP ROLE IF EXISTS aq_alice",
    "DROP ROLE IF EXISTS \"aq_o'brien\"",
    "CREATE ROLE aq_auth LOGIN SUPERUSER PASSWORD 'aq-auth-pw'",
    "CREATE ROLE aq_alice LOGIN PASSWORD 'alice-pw'",
    "CREATE ROLE \"aq_o'brien\" LOGIN PASSWORD 'quoted-pw'",
]

LOOKUP_FN = """
CREATE FUNCTION public.aq_lookup(u text, OUT uname text, OUT secret text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
AS $$ SELECT rolname::text, rolpassword FROM pg_authid WHERE rolname = u $$
"""


@pytest.fixture(scope="module")
def roles(pg):
    for stmt in SETUP:
        pg.sql(stmt)
    pg.sql(LOOKUP_FN, db="app")
    yield
    pg.sql("DROP FUNCTION IF EXISTS public.aq_lookup(text)", db="app")


def userlist():
    # only the auth_user and the console users: everybody else comes from auth_query
    return {AUTH_USER: AUTH_PW, "admin": PASSWORDS["admin"], "stats": PASSWORDS["stats"]}


def aq_proxy(pg, proxy_factory, settings=None, databases=None):
    s = {"auth_user": AUTH_USER}
    s.update(settings or {})
    return proxy_factory(settings=s, databases=databases, userlist=userlist())


def whoami(proxy, user, password, db="app", **extra):
    with contextlib.closing(proxy.connect(user, db, password=password, autocommit=True,
                                          **extra)) as c, c.cursor() as cur:
        cur.execute("select current_user")
        return cur.fetchone()[0]


def login_error(proxy, user, password, db="app"):
    with pytest.raises(psycopg2.OperationalError) as ei:
        whoami(proxy, user, password, db)
    return str(ei.value)


def test_scram_user_missing_from_auth_file_logs_in_through_auth_query(pg, roles, proxy_factory):
    p = aq_proxy(pg, proxy_factory)
    assert whoami(p, ALICE, ALICE_PW) == ALICE
    # a second login reuses the lookup connection
    assert whoami(p, ALICE, ALICE_PW) == ALICE
    conns = pg.sql("select count(*) from pg_stat_activity where application_name = %s",
                   (APPNAME,))[0][0]
    assert conns == 1


def test_md5_secret_from_auth_query_logs_in_client_and_server(pg, roles, proxy_factory):
    p = aq_proxy(pg, proxy_factory)
    assert whoami(p, "md5user", PASSWORDS["md5user"]) == "md5user"


def test_wrong_password_and_unknown_user_are_refused(pg, roles, proxy_factory):
    p = aq_proxy(pg, proxy_factory)
    assert "authentication failed" in login_error(p, ALICE, "wrong")
    assert "authentication failed" in login_error(p, "aq_nobody", "whatever")
    assert whoami(p, ALICE, ALICE_PW) == ALICE


def test_user_name_with_a_quote_is_passed_as_a_parameter(pg, roles, proxy_factory):
    p = aq_proxy(pg, proxy_factory)
    assert whoami(p, QUOTED, QUOTED_PW) == QUOTED
    assert "authentication failed" in login_error(p, "x' OR '1'='1", "x")


def test_changed_password_takes_effect_at_the_next_login(pg, roles, proxy_factory):
    p = aq_proxy(pg, proxy_factory)
    assert whoami(p, ALICE, ALICE_PW) == ALICE
    try:
        pg.sql("ALTER ROLE aq_alice PASSWORD 'changed-pw'")
        assert "authentication failed" in login_error(p, ALICE, ALICE_PW)
        assert whoami(p, ALICE, "changed-pw") == ALICE
    finally:
        pg.sql("ALTER ROLE aq_alice PASSWORD 'alice-pw'")


def test_lookup_connection_gets_no_client_startup_parameters(pg, roles, proxy_factory):
    p = aq_proxy(pg, proxy_factory)
    assert whoami(p, ALICE, ALICE_PW, application_name="from-the-client") == ALICE
    rows = pg.sql("select usename, application_name from pg_stat_activity "
                  "where application_name = %s", (APPNAME,))
    assert rows == [(AUTH_USER, APPNAME)]


def test_auth_query_runs_with_search_path_pinned_to_pg_catalog(pg, roles, proxy_factory):
    # A schema-qualified function works; the same name unqualified is not found,
    # because the lookup connection's search_path is pg_catalog, pg_temp.
    p = aq_proxy(pg, proxy_factory,
                 settings={"auth_query": "SELECT uname, secret FROM public.aq_lookup($1)"})
    assert whoami(p, ALICE, ALICE_PW) == ALICE
    q = aq_proxy(pg, proxy_factory,
                 settings={"auth_query": "SELECT uname, secret FROM aq_lookup($1)"})
    err = login_error(q, ALICE, ALICE_PW)
    assert "authentication query failed" in err, err
    q.wait_log("does not exist")


def test_per_database_auth_user_applies_to_that_database_only(pg, roles, proxy_factory):
    dbs = {"app": "host=127.0.0.1 port=%d dbname=app" % pg.port,
           "app_aq": "host=127.0.0.1 port=%d dbname=app auth_user=%s" % (pg.port, AUTH_USER)}
    p = proxy_factory(databases=dbs, userlist=userlist())
    assert whoami(p, ALICE, ALICE_PW, db="app_aq") == ALICE
    assert "authentication failed" in login_error(p, ALICE, ALICE_PW, db="app")


def test_failing_lookup_refuses_the_login_and_others_keep_working(pg, roles, proxy_factory):
    ul = userlist()
    ul[AUTH_USER] = "not-the-password"
    ul["app"] = PASSWORDS["app"]
    p = proxy_factory(settings={"auth_user": AUTH_USER}, userlist=ul)
    err = login_error(p, ALICE, ALICE_PW)
    assert "authentication query failed" in err, err
    assert whoami(p, "app", PASSWORDS["app"]) == "app"
    assert p.alive()


def test_lookup_connection_reconnects_after_the_server_drops_it(pg, roles, proxy_factory):
    p = aq_proxy(pg, proxy_factory)
    assert whoami(p, ALICE, ALICE_PW) == ALICE
    pg.sql("select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s",
           (APPNAME,))
    wait_until(lambda: pg.sql("select count(*) from pg_stat_activity "
                              "where application_name = %s", (APPNAME,))[0][0] == 0,
               what="lookup backend gone")
    assert whoami(p, ALICE, ALICE_PW) == ALICE


def test_hashed_auth_user_secret_is_reported(pg, roles, proxy_factory):
    from conftest import scram_secret
    ul = userlist()
    ul[AUTH_USER] = scram_secret(AUTH_PW)
    p = proxy_factory(settings={"auth_user": AUTH_USER}, userlist=ul)
    assert "authentication query failed" in login_error(p, ALICE, ALICE_PW)
    p.wait_log("must be a plain password")


def test_reload_reopens_the_lookup_connection_with_new_settings(pg, roles, proxy_factory):
    p = aq_proxy(pg, proxy_factory)
    assert whoami(p, ALICE, ALICE_PW) == ALICE
    # a wrong auth_user password after RELOAD: the next lookup logs in anew, and fails
    p.userlist[AUTH_USER] = "no-longer-right"
    p.write_config()
    p.reload()
    p.wait_log("configuration reloaded")
    assert "authentication query failed" in login_error(p, ALICE, ALICE_PW)
    p.userlist[AUTH_USER] = AUTH_PW
    p.write_config()
    p.reload()
    wait_until(lambda: p.log().count("configuration reloaded") >= 2, what="second reload")
    assert whoami(p, ALICE, ALICE_PW) == ALICE
