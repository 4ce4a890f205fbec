"""The HTTP listener: /healthz, /readyz, /metrics (Prometheus text), method and
path checks, HEAD, the connection bound, and JSON log lines."""

import contextlib
import http.client
import json
import math
import re
import socket
import time

import psycopg2
import pytest

from conftest import IS_PGBOUNCER, RawConn, free_port, startup_msg, wait_until

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgmoat-only behaviour")


def http_proxy(proxy_factory, **settings):
    port = free_port()
    s = {"http_listen": "127.0.0.1:%d" % port}
    s.update(settings)
    p = proxy_factory(settings=s)
    p.http_port = port
    return p


def get(proxy, path, method="GET", headers=None, timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", proxy.http_port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        body = r.read()
        return r.status, dict(r.getheaders()), body.decode()
    finally:
        conn.close()


# ------------------------------------------------------------ exposition

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)')


def parse_labels(text):
    labels = {}
    pos = 0
    while pos < len(text):
        m = LABEL.match(text, pos)
        assert m, "bad label set at %r" % text[pos:]
        value = re.sub(r'\\(.)', lambda x: {"n": "\n"}.get(x.group(1), x.group(1)), m.group(2))
        labels[m.group(1)] = value
        pos = m.end()
    return labels


def parse_exposition(text):
    """Strict parse of the text format: {name: {"type", "help", "samples": [(labels, value)]}}."""
    assert text.endswith("\n")
    families = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            assert METRIC_NAME.match(name) and name not in families, line
            families[name] = {"help": help_, "type": None, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            name, _, typ = line[7:].partition(" ")
            assert name == current and typ in ("counter", "gauge"), line
            families[name]["type"] = typ
        else:
            m = SAMPLE.match(line)
            assert m, "bad sample line %r" % line
            name = m.group(1)
            assert name == current and families[name]["type"], "sample before HELP/TYPE: %r" % line
            value = float(m.group(4))
            assert not math.isnan(value)
            families[name]["samples"].append((parse_labels(m.group(3) or ""), value))
    for name, f in families.items():
        assert f["type"] == "counter" if name.endswith("_total") else f["type"] == "gauge", name
    return families


def sample(families, name, **labels):
    found = [v for lbl, v in families[name]["samples"]
             if all(lbl.get(k) == v2 for k, v2 in labels.items())]
    assert len(found) == 1, (name, labels, families[name]["samples"])
    return found[0]


# ------------------------------------------------------------------ tests

def test_healthz_and_readyz_answer_200_when_serving(proxy_factory):
    p = http_proxy(proxy_factory)
    assert get(p, "/healthz")[0] == 200
    status, headers, body = get(p, "/readyz")
    assert (status, body) == (200, "ready\n")
    assert headers["Content-Type"].startswith("text/plain")


def test_unknown_path_is_404_and_wrong_method_is_405_with_allow(proxy_factory):
    p = http_proxy(proxy_factory)
    assert get(p, "/nope")[0] == 404
    assert get(p, "/healthz/x")[0] == 404
    status, headers, _ = get(p, "/metrics", method="POST")
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert get(p, "/readyz", method="DELETE")[0] == 405


def test_head_has_no_body(proxy_factory):
    p = http_proxy(proxy_factory)
    for path in ("/healthz", "/readyz", "/metrics"):
        status, _, body = get(p, path, method="HEAD")
        assert (status, body) == (200, "")


def test_readyz_is_503_while_paused(proxy_factory):
    p = http_proxy(proxy_factory)
    with contextlib.closing(p.admin()) as a, a.cursor() as cur:
        cur.execute("PAUSE")
        assert get(p, "/readyz")[:3:2] == (503, "paused\n")
        assert get(p, "/healthz")[0] == 200
        cur.execute("RESUME")
    assert get(p, "/readyz")[0] == 200


def test_metrics_parse_and_match_show_pools(proxy_factory):
    p = http_proxy(proxy_factory)
    conns = [p.connect(autocommit=True) for _ in range(3)]
    try:
        for c in conns:
            with c.cursor() as cur:
                cur.execute("select 1")
        holder = conns[0]
        holder.autocommit = False
        with holder.cursor() as cur:
            cur.execute("select 2")  # a transaction stays open: one active server
        pools = {(r["database"], r["user"]): r for r in p.show_dicts("POOLS")}
        stats = {r["database"]: r for r in p.show_dicts("STATS")}
        fam = parse_exposition(get(p, "/metrics")[2])
    finally:
        for c in conns:
            c.close()
    pool = pools[("app", "app")]
    lbl = {"database": "app", "user": "app"}
    assert sample(fam, "pgmoat_pool_clients", state="active", **lbl) == pool["cl_active"] == 3
    waiting = (sample(fam, "pgmoat_pool_clients", state="waiting", **lbl)
               + sample(fam, "pgmoat_pool_clients", state="waiting_login", **lbl))
    assert waiting == pool["cl_waiting"]
    for state in ("active", "idle", "used", "tested", "login"):
        assert sample(fam, "pgmoat_pool_servers", state=state, **lbl) == pool["sv_" + state], state
    assert pool["sv_active"] == 1
    assert sample(fam, "pgmoat_pool_transactions_total", **lbl) == int(stats["app"]["total_xact_count"])
    assert sample(fam, "pgmoat_pool_queries_total", **lbl) == int(stats["app"]["total_query_count"])
    assert sample(fam, "pgmoat_pool_received_bytes_total", **lbl) == int(stats["app"]["total_received"])
    assert sample(fam, "pgmoat_pool_wait_seconds_total", **lbl) == pytest.approx(
        int(stats["app"]["total_wait_time"]) / 1e6)
    assert sample(fam, "pgmoat_pool_maxwait_seconds", **lbl) == 0
    info = fam["pgmoat_build_info"]["samples"]
    assert len(info) == 1 and info[0][1] == 1 and re.match(r"^\d+\.\d+", info[0][0]["version"])
    assert sample(fam, "pgmoat_uptime_seconds") > 0
    assert sample(fam, "pgmoat_ready") == 1


def test_metrics_count_login_failures(proxy_factory):
    p = http_proxy(proxy_factory)
    with pytest.raises(psycopg2.OperationalError):
        p.connect(password="wrong")
    fam = parse_exposition(get(p, "/metrics")[2])
    assert sample(fam, "pgmoat_login_failures_total") == 1


def test_metrics_escape_label_values(proxy_factory, pg):
    odd = 'we"ird\\us\u00e9r'
    ident = '"%s"' % odd.replace('"', '""')
    pg.sql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = %s) THEN "
           "CREATE ROLE " + ident.replace("%", "%%") + " LOGIN PASSWORD 'oddpw'; END IF; END $$",
           (odd,))
    p = http_proxy(proxy_factory)
    p.userlist[odd] = "oddpw"
    p.databases["esc"] = "host=127.0.0.1 port=%d dbname=app" % pg.port
    p.write_config()
    p.reload()
    wait_until(lambda: any(r["name"] == "esc" for r in p.show_dicts("DATABASES")), 5, 0.1, "reload")
    with contextlib.closing(p.connect(user=odd, db="esc", password="oddpw", autocommit=True)) as c:
        with c.cursor() as cur:
            cur.execute("select 1")
        text = get(p, "/metrics")[2]
    assert 'user="we\\"ird\\\\us\u00e9r"' in text
    fam = parse_exposition(text)
    assert sample(fam, "pgmoat_pool_clients", database="esc", user=odd, state="active") == 1


def test_http_connections_are_bounded_and_recover(proxy_factory):
    p = http_proxy(proxy_factory)
    idle = [socket.create_connection(("127.0.0.1", p.http_port), timeout=5) for _ in range(64)]
    try:
        time.sleep(0.3)
        with pytest.raises((socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException)):
            get(p, "/healthz", timeout=1.5)
        assert p.query("select 1") == [(1,)]  # the PostgreSQL side is unaffected
    finally:
        for s in idle:
            s.close()
    # evhttp drops the silent connections; once they have expired, HTTP answers again
    wait_until(lambda: get(p, "/healthz", timeout=2)[0] == 200, 20, 0.5, "HTTP to answer again")


def test_http_listen_must_be_host_port(proxy_factory):
    p = proxy_factory(start=False, settings={"http_listen": "8432"})
    p.write_config()
    out = __import__("subprocess").run(p.command("--check", str(p.config_path)),
                                       capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "http_listen" in out.stderr


# ------------------------------------------------------------------ JSON logs

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_json_log_lines_are_valid_json_with_ids(proxy_factory):
    p = proxy_factory(settings={"log_format": "json"})
    assert p.query("select 1") == [(1,)]
    raw = RawConn(p.port)
    raw.send(startup_msg(b"bad\xff\xfe\"user\n\x01", "app"))
    raw.read_until_close(timeout=5)
    raw.close()
    p.wait_log(r"bad")
    lines = [ln for ln in p.logfile.read_text(encoding="utf-8").splitlines() if ln]
    assert lines
    records = [json.loads(ln) for ln in lines]
    for r in records:
        assert RFC3339.match(r["ts"]), r
        assert r["level"] in ("fatal", "error", "warning", "info", "debug", "noise"), r
        assert isinstance(r["msg"], str)
    clients = [r for r in records if "client" in r]
    assert clients and all(re.match(r"^C-\d+$", r["client"]) for r in clients)
    assert any(r.get("database") == "app" and r.get("user") == "app" for r in clients)
    assert any("server" in r and re.match(r"^S-\d+$", r["server"]) for r in records)
    odd = [r for r in clients if r.get("user", "").startswith("bad")]
    assert odd and odd[0]["user"] == 'bad\ufffd\ufffd"user\n\x01', odd
