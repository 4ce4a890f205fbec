"""
JWT client authentication (DESIGN.md "Why it exists", doc/auth.md).

pgmoat-only. Keys are made with the openssl CLI; tokens are signed with
python3-cryptography (Debian's package), or forged by hand. The client sends
the token as its password; databases.app.roles maps the token's db_role claim
to a server role, which current_user shows through pgmoat.
"""

import base64
import contextlib
import json
import os
import subprocess
import threading
import time

import psycopg2
import pytest

from conftest import IS_PGBOUNCER, YamlProxy, _yaml_scalar, chown_postgres, wait_until

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="JWT is pgmoat-only")

from cryptography.hazmat.primitives import hashes, hmac, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature  # noqa: E402

ISSUER = "https://token.example"
AUDIENCE = "pgmoat"


def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_rsa_key(dirpath, name):
    """(private key object, public PEM path) of a fresh RSA key made by the openssl CLI."""
    priv, pub = dirpath / (name + ".key"), dirpath / (name + ".pem")
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(priv))
    openssl("pkey", "-in", str(priv), "-pubout", "-out", str(pub))
    key = serialization.load_pem_private_key(priv.read_bytes(), password=None)
    priv.unlink()
    return key, pub


def make_ec_key(dirpath, name):
    priv, pub = dirpath / (name + ".key"), dirpath / (name + ".pem")
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(priv))
    openssl("pkey", "-in", str(priv), "-pubout", "-out", str(pub))
    key = serialization.load_pem_private_key(priv.read_bytes(), password=None)
    priv.unlink()
    return key, pub


def sign(header, claims, key):
    """A compact JWS; key: RSA/EC private key object, or bytes for HS256."""
    signing_input = (b64url(json.dumps(header)) + "." + b64url(json.dumps(claims))).encode()
    alg = header["alg"]
    if alg == "RS256":
        sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "ES256":
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif alg == "HS256":
        h = hmac.HMAC(key, hashes.SHA256())
        h.update(signing_input)
        sig = h.finalize()
    else:
        sig = b""
    return signing_input.decode() + "." + b64url(sig)


def claims_for(sub="ci", role="reader", ttl=600, **extra):
    now = int(time.time())
    c = {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + ttl}
    if role is not None:
        c["db_role"] = role
    c.update(extra)
    return c


class JwtProxy(YamlProxy):
    """A pgmoat with auth.type jwt, an RS256 key (kid ci-1) and roles reader/writer on app."""

    def __init__(self, pg, jwt=None, audit=None, **kw):
        kw.setdefault("settings", {})
        kw["settings"].update({"auth_type": None, "auth_file": None})
        kw.setdefault("databases", {})
        super().__init__(pg, **kw)
        self.rsa, self.rsa_pub = make_rsa_key(self.dir, "ci-1")
        self.jwt = {"issuer": ISSUER, "audience": AUDIENCE, "leeway": "5s", "max_ttl": "1h",
                    "role_claim": "db_role", "allow_insecure": "true"}
        self.jwt.update(jwt or {})
        self.keys = [{"kid": "ci-1", "alg": "RS256", "file": str(self.rsa_pub)}]
        self.audit = audit
        self.audit_path = self.dir / "audit.jsonl"

    def render_yaml(self):
        text = super().render_yaml()
        lines = ["auth:", "  type: jwt", "  jwt:"]
        lines.append("    keys: [%s]" % ", ".join(
            "{ %s }" % ", ".join("%s: %s" % (k, _yaml_scalar(v)) for k, v in key.items())
            for key in self.keys))
        lines += ["    %s: %s" % (k, _yaml_scalar(v)) for k, v in self.jwt.items()]
        port = self.pg.port
        lines += [
            "databases:",
            "  app:",
            "    host: 127.0.0.1",
            "    port: %d" % port,
            "    dbname: app",
            "    roles:",
            "      reader: { user: jwt_ro, password_file: ro.pass }",
            "      writer: { user: app, password_env: PGMOAT_TEST_APP_PW }",
        ]
        if self.audit is not None:
            lines.append("audit:")
            lines += ["  %s: %s" % (k, v if isinstance(v, str) and v.startswith("[")
                                    else _yaml_scalar(v)) for k, v in self.audit.items()]
        return text + "\n".join(lines) + "\n"

    def write_config(self):
        (self.dir / "ro.pass").write_text("jwtropw\n")
        super().write_config()
        for p in self.dir.iterdir():
            chown_postgres(p)

    def popen_kwargs(self):
        kw = super().popen_kwargs()
        kw["env"] = dict(kw.get("env") or os.environ, PGMOAT_TEST_APP_PW="apppw")
        return kw

    def token(self, claims=None, kid="ci-1", alg="RS256", key=None):
        header = {"alg": alg, "typ": "JWT"}
        if kid is not None:
            header["kid"] = kid
        return sign(header, claims if claims is not None else claims_for(), key or self.rsa)

    def jwt_connect(self, token, user="ci", db="app", autocommit=True):
        return self.connect(user=user, db=db, password=token, autocommit=autocommit)

    def whoami(self, token, user="ci"):
        with contextlib.closing(self.jwt_connect(token, user)) as c, c.cursor() as cur:
            cur.execute("SELECT current_user, session_user")
            return cur.fetchone()

    def refused(self, token, user="ci", want="JWT authentication failed"):
        with pytest.raises(psycopg2.OperationalError) as ei:
            self.jwt_connect(token, user).close()
        assert want in str(ei.value), str(ei.value)
        return str(ei.value)

    def records(self):
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line]


@pytest.fixture(scope="module", autouse=True)
def jwt_roles(pg):
    pg.sql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'jwt_ro') THEN "
           "CREATE ROLE jwt_ro LOGIN PASSWORD 'jwtropw'; END IF; END $$")
    pg.sql("GRANT SELECT ON items TO jwt_ro", db="app")


@pytest.fixture
def jwt_proxy(proxy_factory):
    def make(start=True, **kw):
        p = JwtProxy(proxy_factory.pg, **kw)
        proxy_factory.made.append(p)
        if start:
            p.start()
        return p
    return make


# ---------------------------------------------------------------- roles and pooling

def test_role_claim_picks_the_server_role(jwt_proxy):
    p = jwt_proxy()
    assert p.whoami(p.token(claims_for(role="reader"))) == ("jwt_ro", "jwt_ro")
    assert p.whoami(p.token(claims_for(role="writer"))) == ("app", "app")
    # the server sees the role's own login: its password came from password_file / password_env
    rows = p.pg.sql("SELECT usename FROM pg_stat_activity WHERE datname = 'app' AND usename IN "
                    "('jwt_ro', 'app') AND client_port IS NOT NULL")
    assert {r[0] for r in rows} >= {"jwt_ro", "app"}


def test_two_roles_never_share_a_server_connection(jwt_proxy):
    p = jwt_proxy(settings={"default_pool_size": "1", "pool_mode": "transaction"})
    tokens = {"jwt_ro": p.token(claims_for(role="reader")),
              "app": p.token(claims_for(role="writer"))}
    errors = []

    def worker(expect, token):
        try:
            with contextlib.closing(p.jwt_connect(token)) as c, c.cursor() as cur:
                for _ in range(25):
                    cur.execute("SELECT current_user")
                    got = cur.fetchone()[0]
                    if got != expect:
                        errors.append((expect, got))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
    threads = [threading.Thread(target=worker, args=item) for item in tokens.items() for _ in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    # both in a transaction at once: two server connections, each logged in as its role
    conns = [p.jwt_connect(tokens[u], autocommit=False) for u in ("jwt_ro", "app")]
    try:
        pids = []
        for c in conns:
            with c.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                pids.append(cur.fetchone()[0])
        assert pids[0] != pids[1]
        rows = dict(p.pg.sql("SELECT pid, usename FROM pg_stat_activity WHERE pid = ANY(%s)",
                             (pids,)))
        assert rows == {pids[0]: "jwt_ro", pids[1]: "app"}
    finally:
        for c in conns:
            c.close()


def test_missing_or_unknown_role_is_refused(jwt_proxy):
    p = jwt_proxy()
    msg = p.refused(p.token(claims_for(role="superuser")), want="names no role")
    assert "app" in msg
    p.refused(p.token(claims_for(role=None)), want="names no role")
    p.refused(p.token(claims_for(role=7)), want="names no role")
    assert "role claim is missing or not a string" in p.log()


# ---------------------------------------------------------------- refused tokens

def test_bad_tokens_are_refused_and_the_reason_is_logged_not_the_token(jwt_proxy, tmp_path):
    p = jwt_proxy()
    other, _ = make_rsa_key(tmp_path, "other")
    now = int(time.time())
    cases = {
        "token expired": p.token(claims_for(iat=now - 700, exp=now - 60)),
        "nbf": p.token(claims_for(nbf=now + 120)),
        "wrong or missing iss": p.token(claims_for(iss="https://evil.example")),
        "wrong or missing aud": p.token(claims_for(aud=["someone-else"])),
        "bad signature": p.token(key=other),
        "unknown kid": p.token(kid="ci-9"),
        "max_ttl": p.token(claims_for(ttl=7200)),
        "does not equal the user name": p.token(claims_for(sub="someone")),
        # alg confusion: HS256 keyed with the RSA public key the attacker can read
        "alg does not match": p.token(alg="HS256", key=p.rsa_pub.read_bytes()),
        "unsigned token": p.token(alg="none", key=b""),
        "alg not accepted": p.token(alg="none", key=b"") + "c2ln",
        "compact JWS": "not-a-jwt",
    }
    for why, token in cases.items():
        p.refused(token)
        p.wait_log(r"JWT authentication failed for user \"ci\": .*" + why)
    # over the 16 KB token bound: refused as a token; far over it: as a protocol message
    big = p.token(claims_for(pad="x" * 12300))
    assert 16384 < len(big) < 17000
    p.refused(big)
    p.wait_log(r"JWT authentication failed for user \"ci\": token too large")
    with pytest.raises(psycopg2.OperationalError):
        p.jwt_connect("x" * 40000).close()
    # a big token inside the bound is fine (more than the 8 KB of an ordinary password)
    fat = p.token(claims_for(pad="x" * 11000))
    assert 12000 < len(fat) < 16384
    assert p.whoami(fat) == ("jwt_ro", "jwt_ro")
    log = p.log()
    for token in cases.values():
        if len(token) > 20:
            assert token not in log
            for part in token.split("."):
                assert len(part) < 8 or part not in log
    # the proxy keeps serving
    assert p.whoami(p.token()) == ("jwt_ro", "jwt_ro")


def test_plain_tcp_is_refused_unless_allow_insecure(jwt_proxy):
    p = jwt_proxy(jwt={"allow_insecure": "false"})
    p.refused(p.token(), want="needs a TLS connection")
    # the unix socket is local: no network to protect the token from
    c = psycopg2.connect(host=str(p.dir), port=p.port, user="ci", dbname="app",
                         password=p.token(), connect_timeout=5)
    with contextlib.closing(c), c.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == "jwt_ro"


def test_tokens_over_tls_are_accepted_without_allow_insecure(jwt_proxy, tmp_path):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-keyout", str(tmp_path / "proxy.key"), "-out", str(tmp_path / "proxy.crt"))
    for f in ("proxy.key", "proxy.crt"):
        chown_postgres(tmp_path / f)
    p = jwt_proxy(jwt={"allow_insecure": "false"},
                  settings={"client_tls_sslmode": "allow",
                            "client_tls_cert_file": str(tmp_path / "proxy.crt"),
                            "client_tls_key_file": str(tmp_path / "proxy.key")})
    tok = p.token()
    c = p.connect(user="ci", password=tok, sslmode="require")
    with contextlib.closing(c), c.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == "jwt_ro"
    p.refused(tok, want="needs a TLS connection")   # the harness's dsn: sslmode=disable


def test_es256_key_and_jwks_file(jwt_proxy):
    p = jwt_proxy(start=False)
    eckey, ecpub = make_ec_key(p.dir, "ec-1")
    p.keys.append({"kid": "ec-1", "alg": "ES256", "file": str(ecpub)})
    jwkey, _ = make_rsa_key(p.dir, "jwk-1")
    nums = jwkey.public_key().public_numbers()
    jwk = {"kty": "RSA", "kid": "jwk-1", "use": "sig", "alg": "RS256",
           "n": b64url(nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")),
           "e": b64url(nums.e.to_bytes(3, "big"))}
    (p.dir / "jwks.json").write_text(json.dumps({"keys": [jwk, {"kty": "oct", "k": "AAAA"}]}))
    p.jwt["jwks_file"] = "jwks.json"
    p.start()
    assert p.whoami(p.token(kid="ec-1", alg="ES256", key=eckey)) == ("jwt_ro", "jwt_ro")
    assert p.whoami(p.token(kid="jwk-1", key=jwkey)) == ("jwt_ro", "jwt_ro")
    p.refused(p.token(kid="jwk-1", key=eckey, alg="ES256"), want="JWT authentication failed")


# ---------------------------------------------------------------- reload

def test_reload_rereads_keys_and_a_broken_key_file_keeps_the_old_ones(jwt_proxy):
    p = jwt_proxy()
    old_token = p.token()
    assert p.whoami(old_token)[0] == "jwt_ro"
    pem = p.rsa_pub.read_text()
    p.rsa_pub.write_text("-----BEGIN PUBLIC KEY-----\nbroken\n-----END PUBLIC KEY-----\n")
    p.reload()
    p.wait_log(r"reload failed, keeping the old configuration: .*no PEM public key")
    assert p.whoami(old_token)[0] == "jwt_ro"
    # rotate: a new key under the same kid
    new_key, new_pub = make_rsa_key(p.dir, "ci-2")
    p.rsa_pub.write_text(new_pub.read_text())
    chown_postgres(p.rsa_pub)
    p.reload()
    wait_until(lambda: p.log().count("configuration reloaded") >= 1, 10, what="reload")
    p.refused(old_token)
    assert p.whoami(p.token(key=new_key))[0] == "jwt_ro"
    assert pem != p.rsa_pub.read_text()


# ---------------------------------------------------------------- policies and audit

WHOAMI_POLICY = """
local moat = require "moat"
local P = {}
function P.on_connect(s)
  if s.claims and s.claims.env == "prod" and s.role == "writer" then
    return moat.deny("no writer sessions from prod pipelines")
  end
end
function P.on_query(s, q)
  if q.sql == "select 'whoami'" then
    return moat.deny(string.format("user=%s role=%s sub=%s team=%s", s.user, tostring(s.role),
                                   s.claims.sub, tostring(s.claims.team)))
  end
  if q.kind == "delete" and not (s.claims and s.claims.can_delete == true) then
    return moat.deny("deletes need the can_delete claim")
  end
end
return P
"""


def test_policies_see_claims_role_and_user(jwt_proxy):
    p = jwt_proxy(policies={"claims.lua": WHOAMI_POLICY})
    tok = p.token(claims_for(role="writer", team="data"))
    with contextlib.closing(p.jwt_connect(tok)) as c, c.cursor() as cur:
        with pytest.raises(psycopg2.Error) as ei:
            cur.execute("select 'whoami'")
        assert "user=ci role=writer sub=ci team=data" in str(ei.value)
        with pytest.raises(psycopg2.Error) as ei:
            cur.execute("DELETE FROM items WHERE id < 0")
        assert "can_delete" in str(ei.value)
    with contextlib.closing(p.jwt_connect(p.token(claims_for(role="writer", can_delete=True)))) as c, \
            c.cursor() as cur:
        cur.execute("DELETE FROM items WHERE id < 0")
    with pytest.raises(psycopg2.OperationalError) as ei:
        p.jwt_connect(p.token(claims_for(role="writer", env="prod"))).close()
    assert "no writer sessions from prod" in str(ei.value)


def test_audit_records_carry_sub_and_the_configured_claims(jwt_proxy):
    p = jwt_proxy(audit={"sink": "file", "path": "audit.jsonl", "claims": "[db_role, team]"})
    tok = p.token(claims_for(role="writer", team="data", secret_thing="x"))
    with contextlib.closing(p.jwt_connect(tok)) as c, c.cursor() as cur:
        cur.execute("SELECT 1")
    wait_until(lambda: any(r["event"] == "statement" for r in p.records()), 10,
               what="statement record")
    recs = p.records()
    start = [r for r in recs if r["event"] == "session_start"]
    stmt = [r for r in recs if r["event"] == "statement"]
    assert start and stmt
    for r in (start[0], stmt[0]):
        assert r["sub"] == "ci"
        assert r["claims"] == {"db_role": "writer", "team": "data"}
        assert r["user"] == "ci"
    assert "secret_thing" not in p.audit_path.read_text()
