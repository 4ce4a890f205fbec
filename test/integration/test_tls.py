"""TLS on both sides: client sslmodes with psql/libpq verify-full and client certificates,
server_tls_sslmode up to verify-full against the harness's PostgreSQL with ssl=on, bytes
smuggled behind SSLRequest (both directions), messages split across TLS records, big values
and pgbench over TLS, a certificate changed at the same path picked up by RELOAD,
clients and servers closing inside a record, a corrupted record, and 100 MB each way with a
slow reader.

Certificates are made here with the openssl CLI in a temp dir: a CA, a proxy certificate
(CN localhost, SAN localhost and 127.0.0.1), a client certificate (CN app), PostgreSQL's
certificate (SAN localhost only, so verify-full to 127.0.0.1 must fail), and a rogue CA.
"""

import contextlib
import hashlib
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time

import psycopg2
import pytest

from conftest import (IS_PGBOUNCER, PGBIN, PASSWORDS, ConnectionClosed, RawConn, chown_postgres,
                      client_env, cstr, free_port, make_tempdir, msg, parse_error_fields, parse_messages,
                      pgbench_cmd, PgbenchResult, query_msg, startup_msg, ssl_request,
                      start_yaml_proxy, wait_until)

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgmoat TLS tests (certificates per proxy)")


# ---------------------------------------------------------------- certificates

def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=%s" % name, "-keyout", "%s.key" % name, "-out", "%s.crt" % name,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_cert(d, name, cn, ca, san=None, client=False):
    """A key and a certificate signed by ca; san like 'DNS:localhost,IP:127.0.0.1'."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % cn,
            "-keyout", "%s.key" % name, "-out", "%s.csr" % name, cwd=d)
    ext = ["basicConstraints=CA:FALSE",
           "extendedKeyUsage=%s" % ("clientAuth" if client else "serverAuth")]
    if san:
        ext.append("subjectAltName=%s" % san)
    (d / ("%s.ext" % name)).write_text("\n".join(ext) + "\n")
    openssl("x509", "-req", "-in", "%s.csr" % name, "-CA", "%s.crt" % ca, "-CAkey", "%s.key" % ca,
            "-CAcreateserial", "-days", "2", "-extfile", "%s.ext" % name,
            "-out", "%s.crt" % name, cwd=d)
    os.chmod(d / ("%s.key" % name), 0o600)


@pytest.fixture(scope="module")
def certs():
    d = make_tempdir("pgmoat-it-tls-")
    make_ca(d, "ca")
    make_ca(d, "rogue")
    make_cert(d, "proxy", "localhost", "ca", "DNS:localhost,IP:127.0.0.1")
    make_cert(d, "proxy2", "localhost", "ca", "DNS:localhost,IP:127.0.0.1")
    make_cert(d, "app", "app", "ca", client=True)
    make_cert(d, "stranger", "app", "rogue", client=True)
    make_cert(d, "pg", "localhost", "ca", "DNS:localhost")
    for p in d.iterdir():
        chown_postgres(p)
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_ssl(pg, certs):
    """The harness's PostgreSQL with ssl=on (key owned by postgres, mode 0600); off afterwards."""
    key = certs / "pg.key"
    os.chmod(key, 0o600)
    chown_postgres(key)
    pg.sql("ALTER SYSTEM SET ssl = on")
    pg.sql("ALTER SYSTEM SET ssl_cert_file = %s", (str(certs / "pg.crt"),))
    pg.sql("ALTER SYSTEM SET ssl_key_file = %s", (str(key),))
    pg.sql("SELECT pg_reload_conf()")
    wait_until(lambda: pg.sql("SHOW ssl")[0][0] == "on", 10, 0.1, "postgres ssl=on")
    yield pg
    for k in ("ssl", "ssl_cert_file", "ssl_key_file"):
        pg.sql("ALTER SYSTEM RESET %s" % k)
    pg.sql("SELECT pg_reload_conf()")


def tls_settings(certs, mode, ca=True):
    s = {"client_tls_sslmode": mode,
         "client_tls_cert_file": str(certs / "proxy.crt"),
         "client_tls_key_file": str(certs / "proxy.key")}
    if ca:
        s["client_tls_ca_file"] = str(certs / "ca.crt")
    return s


def libpq_connect(proxy, certs, sslmode, cert=None, host="127.0.0.1", **extra):
    kw = dict(sslmode=sslmode, host=host)
    if sslmode in ("verify-ca", "verify-full"):
        kw["sslrootcert"] = str(certs / "ca.crt")
    if cert:
        kw["sslcert"] = str(certs / ("%s.crt" % cert))
        kw["sslkey"] = str(certs / ("%s.key" % cert))
    kw.update(extra)
    c = proxy.connect(**kw)
    c.autocommit = True
    return c


def tls_show(proxy, what, **extra):
    """SHOW over TLS (the proxy may refuse plaintext), as dicts."""
    dsn = proxy.dsn("admin", "pgbouncer", sslmode="require", **extra)
    with contextlib.closing(psycopg2.connect(dsn)) as c:
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute("SHOW " + what)
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]


def one(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0]


def client_ctx(certs, verify=True, cert=None):
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(str(certs / ("%s.crt" % cert)), str(certs / ("%s.key" % cert)))
    return ctx


def tls_raw(proxy, certs, cert=None):
    """A RawConn whose socket went through SSLRequest/'S' and a verified handshake."""
    c = RawConn(proxy.port)
    c.send(ssl_request())
    assert c.read_bytes(1) == b"S"
    c.sock = client_ctx(certs, cert=cert).wrap_socket(c.sock, server_hostname="localhost")
    return c


def peer_fingerprint(port):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(ssl_request())
        assert s.recv(1) == b"S"
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            return hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest()


def cert_fingerprint(path):
    der = ssl.PEM_cert_to_DER_cert(path.read_text())
    return hashlib.sha256(der).hexdigest()


# ---------------------------------------------------------------- client side

def test_psql_verify_full_with_root_cert_reaches_the_database(proxy_factory, certs):
    p = proxy_factory(settings=tls_settings(certs, "require"))
    env = client_env(PASSWORDS["app"])
    conninfo = ("host=localhost port=%d user=app dbname=app sslmode=verify-full sslrootcert=%s"
                % (p.port, certs / "ca.crt"))
    cp = subprocess.run(["/usr/bin/psql", conninfo, "-XAtc", "select 40 + 2"], env=env,
                        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "42"
    # An error over TLS reaches the client before the close.
    with pytest.raises(psycopg2.OperationalError, match="no such database: nosuchdb"):
        libpq_connect(p, certs, "verify-full", dbname="nosuchdb")
    # Same over 127.0.0.1: the certificate names the address too.
    with contextlib.closing(libpq_connect(p, certs, "verify-full")) as c:
        assert one(c, "select 1") == 1
        row = [r for r in tls_show(p, "CLIENTS") if r["user"] == "app"]
        assert row and row[0]["tls"].startswith("TLSv1.3/TLS_"), row


def test_verify_full_refuses_a_proxy_certificate_from_another_ca(proxy_factory, certs):
    p = proxy_factory(settings=tls_settings(certs, "require"))
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
        p.connect(sslmode="verify-full", sslrootcert=str(certs / "rogue.crt"))


@pytest.mark.parametrize("mode,plain_ok,tls_ok,cert_needed", [
    ("disable", True, False, False),
    ("allow", True, True, False),
    ("prefer", True, True, False),
    ("require", False, True, False),
    ("verify-ca", False, True, True),
    ("verify-full", False, True, True),
])
def test_client_sslmode(proxy_factory, certs, mode, plain_ok, tls_ok, cert_needed):
    p = proxy_factory(settings=tls_settings(certs, mode))
    if plain_ok:
        with contextlib.closing(libpq_connect(p, certs, "disable")) as c:
            assert one(c, "select 1") == 1
    else:
        with pytest.raises(psycopg2.OperationalError, match="SSL required"):
            libpq_connect(p, certs, "disable")
    if not tls_ok:
        with pytest.raises(psycopg2.OperationalError, match="does not support SSL"):
            libpq_connect(p, certs, "require")
        # prefer falls back to plaintext
        with contextlib.closing(libpq_connect(p, certs, "prefer")) as c:
            assert one(c, "select 1") == 1
        return
    if cert_needed:
        with pytest.raises(psycopg2.OperationalError):
            libpq_connect(p, certs, "verify-full")
        with pytest.raises(psycopg2.OperationalError):
            libpq_connect(p, certs, "verify-full", cert="stranger")
        assert p.alive()
    with contextlib.closing(libpq_connect(p, certs, "verify-full", cert="app")) as c:
        assert one(c, "select 2") == 2
    with contextlib.closing(libpq_connect(p, certs, "require", cert="app")) as c:
        assert one(c, "select 3") == 3


def test_auth_type_cert_takes_the_user_from_the_certificate(proxy_factory, certs):
    s = tls_settings(certs, "verify-full")
    s["auth_type"] = "cert"
    p = proxy_factory(settings=s)
    with contextlib.closing(libpq_connect(p, certs, "verify-full", cert="app", password="")) as c:
        assert one(c, "select current_user") == "app"
    with pytest.raises(psycopg2.OperationalError, match="TLS certificate name mismatch"):
        libpq_connect(p, certs, "verify-full", cert="app", user="md5user", password="")
    # Without verification a certificate proves nothing.
    s["client_tls_sslmode"] = "require"
    q = proxy_factory(settings=s)
    with pytest.raises(psycopg2.OperationalError, match="TLS client certificate required"):
        libpq_connect(q, certs, "verify-full", cert="app", password="")


def test_hba_hostssl_lines_match_tls_clients_only(proxy_factory, certs):
    hba = ("hostssl all app    127.0.0.1/32 trust\n"
           "hostssl all md5user 127.0.0.1/32 cert\n"
           "host    all all    127.0.0.1/32 scram-sha-256\n")
    s = tls_settings(certs, "verify-ca")
    s.update(auth_type="hba", auth_hba_file="hba.conf", client_tls_sslmode="prefer")
    p = proxy_factory(settings=s, extra_files={"hba.conf": hba})
    with contextlib.closing(libpq_connect(p, certs, "require", password="wrong")) as c:
        assert one(c, "select current_user") == "app"       # hostssl: trust
    with pytest.raises(psycopg2.OperationalError, match="authentication failed"):
        libpq_connect(p, certs, "disable", password="wrong")  # host: scram
    # cert on a listener that does not verify certificates proves nothing
    with pytest.raises(psycopg2.OperationalError, match="TLS client certificate required"):
        libpq_connect(p, certs, "require", cert="app", user="md5user", password="")


def test_unix_socket_clients_are_local_and_exempt_from_require(proxy_factory, certs):
    p = proxy_factory(settings=tls_settings(certs, "require"))
    # The TCP port answers first; the unix socket is made right after it.
    wait_until(lambda: (p.dir / (".s.PGSQL.%d" % p.port)).exists(), 10, 0.05, "unix socket")
    with contextlib.closing(p.connect(host=str(p.dir))) as c:
        with c.cursor() as cur:
            cur.execute("select 1")
            assert cur.fetchone()[0] == 1


def test_bytes_behind_ssl_request_are_a_protocol_error(proxy_factory, certs):
    p = proxy_factory(settings=tls_settings(certs, "prefer"))
    c = RawConn(p.port)
    try:
        c.send(ssl_request() + startup_msg("app", "app"))
        data, closed = c.read_until_close(5)
    finally:
        c.close()
    assert closed
    msgs = parse_messages(data)
    assert msgs and msgs[0][0] == b"E", data
    fields = parse_error_fields(msgs[0][1])
    assert fields["C"] == "08P01" and "behind" in fields["M"], fields
    assert not any(t == b"R" for t, _ in msgs)
    # Still serving everyone else.
    with contextlib.closing(libpq_connect(p, certs, "verify-full")) as conn:
        assert one(conn, "select 1") == 1


def test_ssl_request_inside_tls_is_a_protocol_error(proxy_factory, certs):
    p = proxy_factory(settings=tls_settings(certs, "require"))
    c = tls_raw(p, certs)
    try:
        c.send(ssl_request())
        data, closed = c.read_until_close(5)
    finally:
        c.close()
    assert closed
    msgs = parse_messages(data)
    assert msgs and msgs[0][0] == b"E"
    assert parse_error_fields(msgs[0][1])["C"] == "08P01"


def test_plaintext_after_ssl_answer_fails_the_handshake_not_the_proxy(proxy_factory, certs):
    p = proxy_factory(settings=tls_settings(certs, "prefer"))
    c = RawConn(p.port)
    try:
        c.send(ssl_request())
        assert c.read_bytes(1) == b"S"
        c.send(startup_msg("app", "app"))
        data, closed = c.read_until_close(5)
    finally:
        c.close()
    assert closed
    assert not any(t == b"R" for t, _ in parse_messages(data))
    p.wait_log("TLS handshake failed")
    with contextlib.closing(libpq_connect(p, certs, "require")) as conn:
        assert one(conn, "select 1") == 1


def send_in_records(sock, data, sizes):
    """Send data as TLS records of the given sizes (cycled): each SSLSocket.send is a record."""
    pos, i = 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        sock.sendall(data[pos:pos + n])
        pos += n
        i += 1


def test_messages_split_across_records_at_any_offset_never_stall(proxy_factory, certs):
    p = proxy_factory(settings=tls_settings(certs, "require"))
    c = tls_raw(p, certs)
    try:
        c.login("app", "app")
        q = query_msg("select 'x' || 41 + 1")
        for size in (1, 2, 3, 5, 7, len(q) - 1):
            send_in_records(c.sock, q, [size])
            msgs = c.read_until({b"Z"}, 10)
            rows = [m for t, m in msgs if t == b"D"]
            assert len(rows) == 1, (size, msgs)
        # One record holding several messages, then one message over several records.
        many = b"".join(query_msg("select %d" % i) for i in range(20))
        c.sock.sendall(many)
        for i in range(20):
            msgs = c.read_until({b"Z"}, 10)
            assert any(t == b"D" and m.endswith(str(i).encode()) for t, m in msgs), (i, msgs)
        big = query_msg("select length('%s')" % ("y" * 200000))
        send_in_records(c.sock, big, [16384, 1, 9000, 3])
        msgs = c.read_until({b"Z"}, 20)
        assert any(t == b"D" and m.endswith(b"200000") for t, m in msgs), msgs
    finally:
        c.close()


def test_judged_messages_split_across_records_never_stall(policy_proxy, certs):
    """Under policies a Query is read whole (the read watermark is raised for it)."""
    policy = ('local P = {}\n'
              'function P.on_query(s, q) end\n'
              'return P\n')
    p = policy_proxy(policies={"all.lua": policy}, settings=tls_settings(certs, "require"))
    c = tls_raw(p, certs)
    try:
        c.login("app", "app")
        for n in (1000, 300000, 600000):
            big = query_msg("select length('%s')" % ("z" * n))
            send_in_records(c.sock, big, [16384, 7, 16383, 1])
            msgs = c.read_until({b"Z"}, 30)
            assert any(t == b"D" and m.endswith(str(n).encode()) for t, m in msgs), msgs
    finally:
        c.close()


def test_show_clients_and_policies_see_tls(policy_proxy, certs):
    policy = ('local moat = require "moat"\n'
              'local P = {}\n'
              'function P.on_connect(s)\n'
              '  if not s.tls then return moat.deny("tls only") end\n'
              'end\n'
              'return P\n')
    p = policy_proxy(policies={"tlsonly.lua": policy}, settings=tls_settings(certs, "prefer"))
    with pytest.raises(psycopg2.OperationalError, match="tls only"):
        libpq_connect(p, certs, "disable")
    with contextlib.closing(libpq_connect(p, certs, "require")) as c:
        assert one(c, "select 5") == 5


def test_yaml_listen_tls_block(proxy_factory, certs, pg):
    text = """\
listen: { host: 127.0.0.1, port: %(port)d,
          tls: { mode: verify-full, cert: %(d)s/proxy.crt, key: %(d)s/proxy.key, ca: %(d)s/ca.crt } }
logfile: %(dir)s/proxy.log
pidfile: %(dir)s/proxy.pid
admin: { users: [admin] }
auth: { type: md5, file: %(dir)s/userlist.txt }
databases:
  app: { host: 127.0.0.1, port: %(pgport)d, dbname: app }
"""
    p = start_yaml_proxy(proxy_factory, start=False)
    p.ini_text = text % {"port": p.port, "d": certs, "dir": p.dir, "pgport": pg.port}
    p.start()
    conf = {r["key"]: r["value"] for r in tls_show(p, "CONFIG", sslcert=certs / "app.crt",
                                                   sslkey=certs / "app.key")}
    assert conf["client_tls_sslmode"] == "verify-full"
    assert conf["client_tls_ca_file"] == str(certs / "ca.crt")
    with pytest.raises(psycopg2.OperationalError):
        libpq_connect(p, certs, "verify-full")
    with contextlib.closing(libpq_connect(p, certs, "verify-full", cert="app")) as c:
        assert one(c, "select 7") == 7


def test_reload_serves_a_certificate_changed_at_the_same_path(proxy_factory, certs):
    d = make_tempdir("pgmoat-it-tls-reload-")
    try:
        shutil.copy(certs / "proxy.crt", d / "server.crt")
        shutil.copy(certs / "proxy.key", d / "server.key")
        s = tls_settings(certs, "prefer")
        s.update(client_tls_cert_file=str(d / "server.crt"), client_tls_key_file=str(d / "server.key"))
        p = proxy_factory(settings=s)
        assert peer_fingerprint(p.port) == cert_fingerprint(certs / "proxy.crt")
        old = libpq_connect(p, certs, "verify-full")
        # New content at the same path; a broken pair is refused and the old one kept.
        (d / "server.crt").write_text((certs / "proxy2.crt").read_text())
        p.reload()
        p.wait_log("reload failed")
        assert peer_fingerprint(p.port) == cert_fingerprint(certs / "proxy.crt")
        (d / "server.key").write_text((certs / "proxy2.key").read_text())
        with contextlib.closing(p.admin()) as a, a.cursor() as cur:
            cur.execute("RELOAD")
        assert peer_fingerprint(p.port) == cert_fingerprint(certs / "proxy2.crt")
        # The connection made before keeps working on its own context.
        assert one(old, "select 9") == 9
        old.close()
        with contextlib.closing(libpq_connect(p, certs, "verify-full")) as c:
            assert one(c, "select 10") == 10
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- server side

def server_tls(certs, mode, ca="ca"):
    return {"server_tls_sslmode": mode, "server_tls_ca_file": str(certs / ("%s.crt" % ca))}


def backend_ssl(pg, proxy):
    """pg_stat_ssl.ssl of the proxy's server connections."""
    pids = [r["pid"] for r in pg.activity(usename="app", proxy=proxy)]
    if not pids:
        return []
    return [r[0] for r in pg.sql("select ssl from pg_stat_ssl where pid = any(%s)", (pids,))]


def test_server_verify_full_by_name_uses_tls_to_postgres(proxy_factory, certs, pg_ssl):
    dbs = {"app": "host=localhost port=%d dbname=app" % pg_ssl.port,
           "bench": "host=localhost port=%d dbname=bench" % pg_ssl.port}
    p = proxy_factory(settings=server_tls(certs, "verify-full"), databases=dbs)
    with contextlib.closing(p.connect(autocommit=True)) as c:
        assert one(c, "select 1") == 1
        assert one(c, "select ssl from pg_stat_ssl where pid = pg_backend_pid()") is True
    assert backend_ssl(pg_ssl, p) and all(backend_ssl(pg_ssl, p))
    servers = p.show_dicts("SERVERS")
    assert servers and all(r["tls"].startswith("TLSv1.3/") for r in servers), servers


def test_server_verify_full_refuses_a_name_the_certificate_lacks(proxy_factory, certs, pg_ssl):
    # PostgreSQL's certificate names localhost only.
    p = proxy_factory(settings=server_tls(certs, "verify-full"))
    with pytest.raises(psycopg2.OperationalError):
        p.connect()
    p.wait_log("certificate verify failed")
    # verify-ca does not check the name.
    q = proxy_factory(settings=server_tls(certs, "verify-ca"))
    with contextlib.closing(q.connect(autocommit=True)) as c:
        assert one(c, "select ssl from pg_stat_ssl where pid = pg_backend_pid()") is True


def test_server_certificate_from_another_ca_is_refused(proxy_factory, certs, pg_ssl):
    p = proxy_factory(settings=server_tls(certs, "verify-ca", ca="rogue"))
    with pytest.raises(psycopg2.OperationalError):
        p.connect()
    p.wait_log("certificate verify failed")
    assert p.alive()


def test_yaml_per_database_tls_overrides_the_server_keys(proxy_factory, certs, pg_ssl):
    text = """\
listen: { host: 127.0.0.1, port: %(port)d }
logfile: %(dir)s/proxy.log
pidfile: %(dir)s/proxy.pid
admin: { users: [admin] }
auth: { type: md5, file: %(dir)s/userlist.txt }
pooling: { server_tls_sslmode: disable }
databases:
  app: { host: localhost, port: %(pgport)d, dbname: app,
         tls: { mode: verify-full, ca: %(d)s/ca.crt } }
  plain: { host: 127.0.0.1, port: %(pgport)d, dbname: app }
"""
    p = start_yaml_proxy(proxy_factory, start=False)
    p.ini_text = text % {"port": p.port, "d": certs, "dir": p.dir, "pgport": pg_ssl.port}
    p.start()
    sql = "select ssl from pg_stat_ssl where pid = pg_backend_pid()"
    with contextlib.closing(p.connect(autocommit=True)) as c:
        assert one(c, sql) is True
    with contextlib.closing(p.connect(db="plain", autocommit=True)) as c:
        assert one(c, sql) is False


def test_big_values_over_tls_on_both_sides(proxy_factory, certs, pg_ssl):
    s = tls_settings(certs, "require")
    s.update(server_tls(certs, "verify-ca"))
    p = proxy_factory(settings=s)
    blob = os.urandom(10 * 1024 * 1024)
    with contextlib.closing(libpq_connect(p, certs, "verify-full")) as c, c.cursor() as cur:
        cur.execute("insert into blob_t values (%s, %s)", (4242, psycopg2.Binary(blob)))
        cur.execute("select data from blob_t where id = %s", (4242,))
        got = bytes(cur.fetchone()[0])
        cur.execute("select md5(data) from blob_t where id = %s", (4242,))
        assert cur.fetchone()[0] == hashlib.md5(blob).hexdigest()
        cur.execute("delete from blob_t where id = %s", (4242,))
    assert got == blob


def test_pgbench_over_tls_on_both_sides(proxy_factory, certs, pg_ssl):
    s = tls_settings(certs, "require")
    s.update(server_tls(certs, "verify-ca"))
    p = proxy_factory(settings=s)
    env = client_env(PASSWORDS["app"])
    env.update(PGSSLMODE="verify-full", PGSSLROOTCERT=str(certs / "ca.crt"))
    cp = subprocess.run(pgbench_cmd(p.port, ["-c", "8", "-j", "2", "-t", "200"]),
                        capture_output=True, text=True, timeout=180, env=env,
                        stdin=subprocess.DEVNULL)
    res = PgbenchResult(cp)
    assert cp.returncode == 0, res
    assert res.processed == 8 * 200, res
    assert all(backend_ssl(pg_ssl, p))


# ------------------------------------------------- a fake server behind SSLRequest

class FakeServer:
    """Accepts one connection, reads the SSLRequest, answers with `answer`, then waits."""

    def __init__(self, answer):
        self.answer = answer
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(4)
        self.sock.settimeout(10)
        self.got = b""
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            try:
                self.got = conn.recv(8)
                conn.sendall(self.answer)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    if not conn.recv(4096):
                        break
            except OSError:
                pass

    def close(self):
        self.sock.close()
        self.t.join(10)


class FakeTlsServer(FakeServer):
    """Answers 'S', runs a TLS handshake and records the SNI name the client sent."""

    def __init__(self, certs):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(certs / "proxy.crt"), str(certs / "proxy.key"))
        self.sni = []
        self.ctx.sni_callback = lambda sock, name, ctx: self.sni.append(name)
        super().__init__(b"S")

    def run(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            try:
                self.got = conn.recv(8)
                conn.sendall(self.answer)
                with self.ctx.wrap_socket(conn, server_side=True) as t:
                    t.recv(4096)  # the startup packet; then we hang up
            except OSError:
                pass


@pytest.mark.parametrize("host,sni", [("localhost", ["localhost"]), ("127.0.0.1", [None])])
def test_server_tls_sends_the_host_name_in_sni(proxy_factory, certs, host, sni):
    fake = FakeTlsServer(certs)
    try:
        p = proxy_factory(settings=server_tls(certs, "verify-full"),
                          databases={"app": "host=%s port=%d dbname=app" % (host, fake.port)})
        with pytest.raises(psycopg2.OperationalError):
            p.connect()
        fake.t.join(10)
        assert fake.sni == sni
    finally:
        fake.close()


@pytest.mark.parametrize("answer,mode,log", [
    (b"S" + b"\x16\x03\x01\x00\x05hello", "require", "behind its answer to SSLRequest"),
    (b"N", "require", "server does not accept TLS"),
    (b"X", "prefer", "invalid answer to SSLRequest"),
])
def test_server_answer_to_ssl_request(proxy_factory, certs, answer, mode, log):
    fake = FakeServer(answer)
    try:
        p = proxy_factory(settings=server_tls(certs, mode),
                          databases={"app": "host=127.0.0.1 port=%d dbname=app" % fake.port})
        with pytest.raises(psycopg2.OperationalError):
            p.connect()
        p.wait_log(log)
        assert fake.got == ssl_request()
        assert p.alive()
    finally:
        fake.close()


# ------------------------------------- the data path's reads and writes (tls8)

class MemoryTlsSocket:
    """A socket whose TLS runs in memory (ssl.MemoryBIO), for RawConn: a
    test decides which encrypted bytes reach the proxy (raw.sendall), part
    of a record or a record with a byte changed."""

    def __init__(self, proxy, certs):
        self.raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        self.raw.sendall(ssl_request())
        assert self.raw.recv(1) == b"S"
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = client_ctx(certs).wrap_bio(self.inc, self.out, server_hostname="localhost")
        for _ in range(100):
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.raw.sendall(self.out.read())
                data = self.raw.recv(65536)
                assert data, "proxy closed during the handshake"
                self.inc.write(data)
        self.raw.sendall(self.out.read())

    def records(self, data):
        """data encrypted, not sent."""
        self.tls.write(data)
        return self.out.read()

    def sendall(self, data):
        self.raw.sendall(self.records(data))

    def recv(self, n):
        while True:
            try:
                return self.tls.read(n)
            except ssl.SSLWantReadError:
                data = self.raw.recv(65536)
                if not data:
                    return b""
                self.inc.write(data)
            except ssl.SSLZeroReturnError:
                return b""

    def settimeout(self, t):
        self.raw.settimeout(t)

    def setsockopt(self, *args):
        self.raw.setsockopt(*args)

    def closed_by_peer(self, timeout=10):
        """True once the proxy closed (EOF or reset); what it sends is skipped."""
        self.raw.settimeout(timeout)
        try:
            while self.raw.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self):
        self.raw.close()


def tls_by_hand(proxy, certs):
    """A RawConn on a MemoryTlsSocket (RawConn's own fields, no socket of its own)."""
    c = RawConn.__new__(RawConn)
    c.buf, c.backend_pid, c.backend_key, c.params = b"", None, None, {}
    c.sock = MemoryTlsSocket(proxy, certs)
    return c


def tls_both_sides(proxy_factory, certs, **extra):
    s = tls_settings(certs, "require")
    s.update(server_tls(certs, "verify-ca"), **extra)
    return proxy_factory(settings=s)


def test_client_closing_mid_record_or_mid_message_frees_its_server(proxy_factory, certs, pg_ssl):
    """A TLS client that closes inside a record, after a record holding part
    of a message, or with close_notify, is an EOF: its server goes back to
    the pool clean and the next client is served on it."""
    p = tls_both_sides(proxy_factory, certs, pool_mode="session", default_pool_size="1")
    q = query_msg("select 'cut' || 1")
    for cut in ("mid-record", "mid-message", "between-messages", "close_notify"):
        c = tls_by_hand(p, certs)
        c.login("app", "app")
        if cut == "mid-record":
            rec = c.sock.records(q)
            c.sock.raw.sendall(rec[:len(rec) // 2])
        elif cut == "mid-message":
            c.send(q[:9])
        elif cut == "close_notify":
            with pytest.raises(ssl.SSLWantReadError):
                c.sock.tls.unwrap()  # sends close_notify, would wait for the proxy's
            c.sock.raw.sendall(c.sock.out.read())
            assert c.sock.closed_by_peer(10)
        else:
            c.send(q)
            assert any(t == b"D" for t, _ in c.read_until({b"Z"}, 10))
        c.close()
        # pool size 1: the next client is served on the same server, which is clean
        with contextlib.closing(libpq_connect(p, certs, "verify-full")) as conn:
            assert one(conn, "select count(*) from pg_stat_activity where state = 'active'") == 1
            assert one(conn, "select 'next'") == "next", cut
    assert p.alive()


def test_a_corrupted_record_closes_that_client_only(proxy_factory, certs, pg_ssl):
    """A record whose authentication fails is a TLS error (not a would-block
    that waits for more): the client is closed at once, others keep going."""
    p = tls_both_sides(proxy_factory, certs)
    with contextlib.closing(libpq_connect(p, certs, "verify-full")) as other:
        c = tls_by_hand(p, certs)
        c.login("app", "app")
        rec = bytearray(c.sock.records(query_msg("select 1")))
        rec[-3] ^= 0x40	# in the AEAD tag
        t0 = time.monotonic()
        c.sock.raw.sendall(bytes(rec))
        assert c.sock.closed_by_peer(10)
        assert time.monotonic() - t0 < 5
        c.close()
        assert one(other, "select 'still'") == "still"
    assert p.alive()


class SlowSink:
    """A file psycopg2's copy_expert writes to: hashes, and stalls now and
    then so the proxy's writes to this client block (backpressure)."""

    def __init__(self):
        self.md5, self.n, self.calls = hashlib.md5(), 0, 0

    def write(self, b):
        b = b.encode() if isinstance(b, str) else b
        self.md5.update(b)
        self.n += len(b)
        self.calls += 1
        if self.calls % 5000 == 0:
            time.sleep(0.2)


class GeneratedSource:
    """COPY FROM STDIN input: `rows` lines made on the fly, hashed as read."""

    def __init__(self, rows):
        self.i, self.rows, self.md5, self.n = 0, rows, hashlib.md5(), 0

    def read(self, size=65536):
        out = []
        while self.i < self.rows and sum(map(len, out)) < size:
            self.i += 1
            out.append(("%d\t%s\n" % (self.i, hashlib.md5(str(self.i).encode()).hexdigest() * 30)).encode())
        b = b"".join(out)
        self.md5.update(b)
        self.n += len(b)
        return b

    readline = read


def test_100_mb_stream_both_ways_through_tls_on_both_sides(proxy_factory, certs, pg_ssl):
    """About 100 MB each way through TLS on both sides, with a client that
    reads slowly: writes that block are finished by the bufferevent_openssl
    behind the proxy's own buffer; every byte arrives, in order."""
    p = tls_both_sides(proxy_factory, certs)
    rows = 100000	# 967 bytes a line: 97 MB
    with contextlib.closing(libpq_connect(p, certs, "verify-full")) as c, c.cursor() as cur:
        cur.execute("create temp table tls8_stream (i int, v text)")
        src = GeneratedSource(rows)
        cur.copy_expert("copy tls8_stream from stdin", src)
        assert src.n > 90 * 1024 * 1024
        cur.execute("select count(*), sum(length(v) + length(i::text) + 2) from tls8_stream")
        assert cur.fetchone() == (rows, src.n)
        sink = SlowSink()
        cur.copy_expert("copy (select * from tls8_stream order by i) to stdout", sink)
        assert (sink.n, sink.md5.hexdigest()) == (src.n, src.md5.hexdigest())
        assert all(backend_ssl(pg_ssl, p))


class FakePgTlsServer(FakeTlsServer):
    """A PostgreSQL stand-in behind TLS (its records made in memory): logs
    anyone in, answers a Query with CommandComplete and ReadyForQuery, and
    answers one whose text holds `cutme` with half of the record of its
    reply, then hangs up."""

    def __init__(self, certs):
        self.cut = threading.Event()
        super().__init__(certs)

    def run(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            try:
                self.serve(conn)
            except (OSError, ssl.SSLError, ConnectionClosed):
                pass

    def serve(self, conn):
        self.got = conn.recv(8)
        conn.sendall(self.answer)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.ctx.wrap_bio(inc, out, server_side=True)
        buf = b""

        def pump():
            data = conn.recv(65536)
            if not data:
                raise ConnectionClosed()
            inc.write(data)

        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                conn.sendall(out.read())
                pump()
        conn.sendall(out.read())

        def read_exact(n):
            nonlocal buf
            while len(buf) < n:
                try:
                    buf += tls.read(65536)
                except ssl.SSLWantReadError:
                    pump()
            got, buf = buf[:n], buf[n:]
            return got

        n = struct.unpack("!I", read_exact(4))[0]
        read_exact(n - 4)  # the startup packet
        hello = (msg(b"R", struct.pack("!I", 0)) +
                 b"".join(msg(b"S", cstr(k) + cstr(v)) for k, v in
                          (("server_version", "15.0"), ("client_encoding", "UTF8"),
                           ("standard_conforming_strings", "on"), ("DateStyle", "ISO, MDY"),
                           ("TimeZone", "UTC"), ("integer_datetimes", "on"))) +
                 msg(b"K", struct.pack("!II", 4242, 1)) + msg(b"Z", b"I"))
        tls.write(hello)
        conn.sendall(out.read())
        while True:
            t = read_exact(1)
            body = read_exact(struct.unpack("!I", read_exact(4))[0] - 4)
            if t == b"X":
                return
            if t != b"Q":
                continue
            if b"cutme" in body:
                tls.write(msg(b"T", struct.pack("!H", 1) + cstr("x") + struct.pack("!IHIhih", 0, 0, 25, -1, -1, 0)) +
                          msg(b"D", struct.pack("!HI", 1, 5) + b"hello") + msg(b"C", cstr("SELECT 1")) +
                          msg(b"Z", b"I"))
                rec = out.read()
                conn.sendall(rec[:len(rec) // 2])
                self.cut.set()
                return
            tls.write(msg(b"C", cstr("SELECT 0")) + msg(b"Z", b"I"))
            conn.sendall(out.read())


def test_server_closing_mid_record_fails_its_client_not_the_proxy(proxy_factory, certs):
    """A server that hangs up inside a record: its client gets an error at
    once (no wait for the rest of the record), the proxy keeps serving."""
    fake = FakePgTlsServer(certs)
    try:
        p = proxy_factory(settings=server_tls(certs, "require"),
                          databases={"app": "host=127.0.0.1 port=%d dbname=app" % fake.port})
        c = RawConn(p.port)
        try:
            c.login("app", "app")
            assert c.simple_query("select 0")[-1][0] == b"Z"
            t0 = time.monotonic()
            c.send(query_msg("select 'cutme'"))
            data, closed = c.read_until_close(10)
            assert time.monotonic() - t0 < 5
        finally:
            c.close()
        assert fake.cut.is_set()
        msgs = parse_messages(data)
        assert msgs and msgs[-1][0] == b"E", msgs
        assert not any(t == b"D" for t, _ in msgs), msgs
        assert p.alive()
    finally:
        fake.close()
