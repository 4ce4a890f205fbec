"""Client authentication against the auth_file; server authentication kinds."""

import contextlib
import struct

import psycopg2
import pytest

from conftest import (PASSWORDS, LoginError, RawConn, md5_secret, raw_login, scram_secret,
                      startup_msg, xfail_pgbouncer)

# auth_type -> the Authentication request code the client must be sent first
AUTH_CODE = {"trust": 0, "plain": 3, "md5": 5, "scram-sha-256": 10}

CLIENT_PW = "s3cret-client"


def secret_for(kind, user, password):
    return {"plain": password, "md5": md5_secret(user, password),
            "scram": scram_secret(password)}[kind]


def client_auth_proxy(pg, proxy_factory, auth_type, secret_kind):
    # The server side logs in as trustuser, so only client auth is exercised.
    return proxy_factory(
        settings={"auth_type": auth_type},
        databases={"app": "host=127.0.0.1 port=%d dbname=app user=trustuser" % pg.port},
        userlist={"alice": secret_for(secret_kind, "alice", CLIENT_PW),
                  "admin": PASSWORDS["admin"]})


def first_auth_code(proxy, user, db="app"):
    c = RawConn(proxy.port)
    try:
        c.send(startup_msg(user, db))
        t, p = c.recv_msg()
        assert t == b"R", (t, p)
        return struct.unpack("!I", p[:4])[0]
    finally:
        c.close()


CASES = [
    ("trust", "plain", 0),
    ("plain", "plain", 3),
    ("md5", "plain", 5),
    ("md5", "md5", 5),
    ("md5", "scram", 10),  # an md5 client auth falls back to SCRAM for SCRAM secrets
    ("scram-sha-256", "plain", 10),
    ("scram-sha-256", "scram", 10),
]


def wrong_password_error(proxy, user="alice"):
    c = RawConn(proxy.port)
    try:
        with pytest.raises(LoginError) as ei:
            c.login(user, "app", password="wrong")
    finally:
        c.close()
    return ei.value.fields


@pytest.mark.parametrize("auth_type,secret_kind,code", CASES,
                         ids=["%s-with-%s-secret" % (a, s) for a, s, _ in CASES])
def test_client_auth_accepts_right_password_and_refuses_wrong_one(pg, proxy_factory, auth_type,
                                                                   secret_kind, code):
    p = client_auth_proxy(pg, proxy_factory, auth_type, secret_kind)
    assert first_auth_code(p, "alice") == code
    with contextlib.closing(p.connect("alice", password=CLIENT_PW)) as c, c.cursor() as cur:
        cur.execute("select current_user")
        assert cur.fetchone() == ("trustuser",)
    if auth_type == "trust":
        return
    with pytest.raises(psycopg2.OperationalError):
        p.connect("alice", password="wrong")
    fields = wrong_password_error(p)
    assert fields["S"] == "FATAL"
    # pgbouncer's wording: the SCRAM exchange fails as "SASL authentication failed".
    want = "SASL authentication failed" if code == 10 else "password authentication failed"
    assert fields["M"] == want, fields
    # Unknown users get the same answer as wrong passwords: no user enumeration.
    want_unknown = "SASL authentication failed" if auth_type == "scram-sha-256" \
        else "password authentication failed"
    assert wrong_password_error(p, "mallory")["M"] == want_unknown


@xfail_pgbouncer("answers a failed login with SQLSTATE 08P01")
@pytest.mark.parametrize("auth_type", ["md5", "scram-sha-256"])
def test_wrong_password_sqlstate_is_28p01(pg, proxy_factory, auth_type):
    p = client_auth_proxy(pg, proxy_factory, auth_type, "plain")
    assert wrong_password_error(p)["C"] == "28P01"
    assert wrong_password_error(p, "mallory")["C"] == "28P01"


def unknown_db_error(proxy):
    c = RawConn(proxy.port)
    try:
        with pytest.raises(LoginError) as ei:
            c.login("app", "nosuchdb")
    finally:
        c.close()
    return ei.value.fields


def test_unknown_database_is_refused_with_pgbouncer_wording(proxy_tx):
    fields = unknown_db_error(proxy_tx)
    assert fields["S"] == "FATAL"
    assert fields["M"] == "no such database: nosuchdb", fields


@xfail_pgbouncer("answers an unknown database with SQLSTATE 08P01")
def test_unknown_database_sqlstate_is_3d000(proxy_tx):
    assert unknown_db_error(proxy_tx)["C"] == "3D000"


SERVER_CREDS = {
    # alias -> (server role, password in [databases] or None); hba picks the auth kind
    "via_scram": ("app", PASSWORDS["app"]),
    "via_md5": ("md5user", PASSWORDS["md5user"]),
    "via_cleartext": ("plainuser", PASSWORDS["plainuser"]),
    "via_trust": ("trustuser", None),
}


@pytest.fixture
def server_auth_proxy(pg, proxy_factory):
    dbs = {}
    for alias, (user, pw) in SERVER_CREDS.items():
        dbs[alias] = "host=127.0.0.1 port=%d dbname=app user=%s" % (pg.port, user)
        if pw:
            dbs[alias] += " password=%s" % pw
    return proxy_factory(settings={"auth_type": "scram-sha-256"}, databases=dbs,
                         userlist={"client1": CLIENT_PW, "admin": PASSWORDS["admin"]})


@pytest.mark.parametrize("alias", sorted(SERVER_CREDS))
def test_server_auth_kind_with_credentials_from_databases_section(server_auth_proxy, alias):
    p = server_auth_proxy
    with contextlib.closing(p.connect("client1", alias, password=CLIENT_PW)) as c, \
            c.cursor() as cur:
        cur.execute("select current_user, current_database()")
        assert cur.fetchone() == (SERVER_CREDS[alias][0], "app")


def test_server_passwords_never_reach_the_client_or_the_log(server_auth_proxy):
    p = server_auth_proxy
    secrets = [pw.encode() for _, pw in SERVER_CREDS.values() if pw]
    for alias in SERVER_CREDS:
        c = RawConn(p.port)
        try:
            msgs = c.login("client1", alias, password=CLIENT_PW)
            msgs += c.simple_query("select 1")
            c.send(b"X\0\0\0\4")
            rest, _ = c.read_until_close(2)
        finally:
            c.close()
        wire = b"".join(t + payload for t, payload in msgs) + rest
        for s in secrets:
            assert s not in wire
    with contextlib.closing(p.admin()) as a, a.cursor() as cur:
        for what in ("DATABASES", "CONFIG", "POOLS", "SERVERS"):
            cur.execute("SHOW " + what)
            text = repr(cur.fetchall()).encode()
            for s in secrets:
                assert s not in text, what
    log = p.log().encode()
    for s in secrets:
        assert s not in log


def test_md5_secret_in_userlist_logs_into_md5_server(pg, proxy_factory):
    p = proxy_factory(settings={"auth_type": "md5"},
                      userlist={"md5user": md5_secret("md5user", PASSWORDS["md5user"])})
    assert p.query("select current_user", user="md5user") == [("md5user",)]


def test_scram_secret_in_userlist_logs_into_scram_server_after_client_scram(pg, proxy_factory):
    # The secret copied from pg_authid, as deployments do: the client's proof
    # yields the ClientKey that the proxy reuses for the server exchange.
    secret = pg.sql("select rolpassword from pg_authid where rolname = 'app'")[0][0]
    p = proxy_factory(settings={"auth_type": "scram-sha-256"}, userlist={"app": secret})
    assert p.query("select current_user", user="app") == [("app",)]


def test_raw_scram_login_verifies_server_signature(proxy_factory):
    p = proxy_factory(settings={"auth_type": "scram-sha-256"})
    c = raw_login(p)  # ScramClient checks the server's final signature
    try:
        msgs = c.simple_query("select 7")
        assert b"D" in [t for t, _ in msgs]
    finally:
        c.close()
