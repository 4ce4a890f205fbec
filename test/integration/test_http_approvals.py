"""
Reviewers over HTTP (DESIGN.md "Contract: admin console and HTTP"):
GET /api/approvals, POST /api/approvals/ID/approve|deny with a bearer token
from admin.token_file, and the reviewer page at /approvals.

A held statement approved over HTTP runs exactly once (checked in
PostgreSQL itself); denied, its client gets 42501 with the reason. The API
is never open without a token file.
"""

import contextlib
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import IS_PGBOUNCER, free_port, query_msg, wait_until
from test_approvals import (
    HOLD_POLICY, STORE_KEY, ApprovalsProxy, assert_waiting, count, errors, fresh_guarded, pbe, pgx,
    raw, read_hold_notice, store_conninfo, types,
)

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="approvals are pgmoat-only")

TOKENS = "# reviewers\nalice:alice-s3cret-token\n\nbob : bob-0ther-token\n"


class HttpApprovalsProxy(ApprovalsProxy):
    """An ApprovalsProxy with admin.http and (unless token_text is None) admin.token_file."""

    def __init__(self, pg, token_text=TOKENS, **kw):
        super().__init__(pg, **kw)
        self.http_port = free_port()
        self.token_path = self.dir / "admin.token"
        self.token_text = token_text

    def render_yaml(self):
        text = super().render_yaml()
        extra = "http: '127.0.0.1:%d'" % self.http_port
        if self.token_text is not None:
            extra += ", token_file: '%s'" % self.token_path
        assert "admin: { " in text
        return text.replace("admin: { ", "admin: { %s, " % extra, 1)

    def write_config(self):
        if self.token_text is not None:
            self.token_path.write_text(self.token_text)
        super().write_config()


def start_http_proxy(factory, **kw):
    p = HttpApprovalsProxy(factory.pg, policies={"hold.lua": HOLD_POLICY}, **kw)
    factory.made.append(p)
    p.start()
    return p


@pytest.fixture
def hp(proxy_factory):
    return start_http_proxy(proxy_factory)


def call(p, path, method="GET", token="alice-s3cret-token", body=None, headers=None):
    """(status, headers, body text) of one request; never raises on an HTTP status."""
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = "Bearer " + token
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (p.http_port, path), data=data,
                                 headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        with contextlib.closing(e):
            return e.code, e.headers, e.read().decode()


def call_json(p, path, method="GET", **kw):
    status, headers, text = call(p, path, method, **kw)
    assert headers["Content-Type"] == "application/json", (status, headers, text)
    return status, json.loads(text)


def listed(p):
    status, j = call_json(p, "/api/approvals")
    assert status == 200, j
    assert set(j) == {"approvals"}
    return j["approvals"]


RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


# ---------------------------------------------------------------- decisions

def test_approve_over_http_runs_the_statement_exactly_once(pg, hp):
    fresh_guarded(pg)
    with raw(hp) as c:
        c.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
        aid = read_hold_notice(c)
        assert_waiting(c)
        rows = listed(hp)
        assert len(rows) == 1
        row = rows[0]
        assert list(row) == ["id", "client", "user", "database", "statement", "reason", "policy",
                             "protocol", "server", "held_at", "wait_ms", "timeout_at", "replica"]
        assert row["id"] == aid
        assert row["client"].startswith("C-")
        assert row["user"] == "app" and row["database"] == "app"
        assert row["statement"] == "INSERT INTO ap_guarded VALUES ($1)"  # normalized
        assert row["reason"] == "ap_guarded changes need a reviewer"
        assert row["policy"] == "hold.lua"
        assert row["protocol"] == "simple"
        assert row["server"] is None
        assert RFC3339.match(row["held_at"]) and RFC3339.match(row["timeout_at"]), row
        assert row["timeout_at"] > row["held_at"]
        assert isinstance(row["wait_ms"], int) and row["wait_ms"] >= 0
        assert row["replica"] is None
        assert count(pg) == 0

        status, j = call_json(hp, "/api/approvals/%d/approve" % aid, "POST")
        assert status == 200, j
        assert j == {"id": aid, "decision": "approved", "reviewer": "alice", "reason": None,
                     "forwarded": False}
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"C", b"Z"], (types(out), errors(out))
        assert out[0][1].rstrip(b"\0") == b"INSERT 0 1"
        assert count(pg) == 1
        # spent: a second approve finds nothing and nothing runs again
        status, j = call_json(hp, "/api/approvals/%d/approve" % aid, "POST")
        assert status == 404 and "no such approval" in j["error"], j
        assert listed(hp) == []
        out = c.simple_query("select 1")
        assert types(out) == [b"T", b"D", b"C", b"Z"]
    assert count(pg) == 1
    log = hp.log()
    assert "approval %d approved by alice" % aid in log
    assert re.search(r"HTTP APPROVE %d by reviewer alice from 127\.0\.0\.1:\d+" % aid, log), log


def test_deny_over_http_with_reason_gives_42501(pg, hp):
    fresh_guarded(pg, rows=2)
    with raw(hp) as c:
        c.send(query_msg("DELETE FROM ap_guarded"))
        aid = read_hold_notice(c)
        status, j = call_json(hp, "/api/approvals/%d/deny" % aid, "POST",
                              token="bob-0ther-token", body={"reason": "not on a friday"})
        assert status == 200, j
        assert j == {"id": aid, "decision": "rejected", "reviewer": "bob",
                     "reason": "not on a friday", "forwarded": False}
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"E", b"Z"], types(out)
        f = errors(out)[0]
        assert f["C"] == "42501"
        assert "denied by bob: not on a friday" in f["M"], f
        out = c.simple_query("select 1")
        assert types(out) == [b"T", b"D", b"C", b"Z"]
    assert count(pg) == 2
    log = hp.log()
    assert "approval %d denied by bob: not on a friday" % aid in log
    assert re.search(r"HTTP DENY %d by reviewer bob from 127\.0\.0\.1:\d+: not on a friday"
                     % aid, log), log


def test_deny_without_body_and_the_audit_names_the_reviewer(pg, proxy_factory, tmp_path):
    audit = tmp_path / "audit.jsonl"
    p = HttpApprovalsProxy(proxy_factory.pg, policies={"hold.lua": HOLD_POLICY},
                           token_text="one-plain-token\n")
    base = p.render_yaml
    p.render_yaml = lambda: base() + "audit: { sink: file, path: '%s' }\n" % audit
    proxy_factory.made.append(p)
    p.start()
    fresh_guarded(pg)
    with raw(p) as c:
        c.send(query_msg("INSERT INTO ap_guarded VALUES (3)"))
        aid = read_hold_notice(c)
        status, j = call_json(p, "/api/approvals/%d/deny" % aid, "POST", token="one-plain-token")
        assert status == 200 and j["reviewer"] == "http" and j["reason"] is None, j
        out = c.read_until({b"Z"}, 10)
        assert errors(out)[0]["C"] == "42501"
    assert count(pg) == 0

    def approval_records():
        if not audit.exists():
            return []
        recs = [json.loads(line) for line in audit.read_text().splitlines() if line]
        return [r for r in recs if r["event"] == "approval" and str(r["id"]) == str(aid)]
    wait_until(lambda: approval_records(), 10, 0.1, "the approval record")
    rec = approval_records()[0]
    assert rec["reviewer"] == "http" and rec["decision"] == "rejected", rec


def test_extended_protocol_hold_approved_over_http(pg, hp):
    fresh_guarded(pg)
    with raw(hp) as c:
        c.send(pbe("INSERT INTO ap_guarded VALUES (7)"))
        aid = read_hold_notice(c)
        assert [r["protocol"] for r in listed(hp)] == ["extended"]
        status, _ = call_json(hp, "/api/approvals/%d/approve" % aid, "POST")
        assert status == 200
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"1", b"2", b"n", b"C", b"Z"], (types(out), errors(out))
    assert pgx(pg, "select id from ap_guarded") == [(7,)]


def test_a_decision_for_another_replicas_hold_is_forwarded(pg, proxy_factory):
    """store: postgres: b's API lists and decides a hold of replica a, as APPROVE on b's console."""
    fresh_guarded(pg)
    store = {"store": "postgres", "conninfo": store_conninfo(pg), "key_file": "approvals.key",
             "timeout": "60s"}
    a, b = (start_http_proxy(proxy_factory, approvals=store,
                             extra_files={"approvals.key": STORE_KEY}) for _ in range(2))
    a.wait_log("approvals store: connected", 10)
    b.wait_log("approvals store: connected", 10)
    with raw(a) as c1, raw(a) as c2:
        c1.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
        id1 = read_hold_notice(c1)
        c2.send(query_msg("INSERT INTO ap_guarded VALUES (2)"))
        id2 = read_hold_notice(c2)
        wait_until(lambda: sorted(r["id"] for r in listed(b)) == sorted([id1, id2]), 10, 0.1,
                   "replica b to learn a's holds")
        assert all(r["replica"] == "%s:%d" % (socket.gethostname(), a.port) for r in listed(b))
        status, j = call_json(b, "/api/approvals/%d/approve" % id1, "POST")
        assert status == 200 and j["forwarded"] is True and j["reviewer"] == "alice", j
        status, j = call_json(b, "/api/approvals/%d/deny" % id2, "POST", token="bob-0ther-token",
                              body={"reason": "from b"})
        assert status == 200 and j["forwarded"] is True, j
        out = c1.read_until({b"Z"}, 10)
        assert types(out) == [b"C", b"Z"], (types(out), errors(out))
        f = errors(c2.read_until({b"Z"}, 10))[0]
        assert f["C"] == "42501" and "from b" in f["M"] and "bob" in f["M"], f
        wait_until(lambda: listed(b) == [], 10, 0.1, "b to forget the decided holds")
    assert pgx(pg, "select id from ap_guarded") == [(1,)]
    assert re.search(r"HTTP APPROVE %d by reviewer alice from 127\.0\.0\.1:\d+ \(forwarded" % id1,
                     b.log())


# ---------------------------------------------------------------- refusals

def test_unknown_and_malformed_ids(hp):
    status, j = call_json(hp, "/api/approvals/987654/approve", "POST")
    assert status == 404 and "no such approval: 987654" in j["error"], j
    status, j = call_json(hp, "/api/approvals/987654/deny", "POST", body={"reason": "x"})
    assert status == 404, j
    for bad in ("abc", "0", "-1", "+5", "1.5", "%31", "99999999999999999999999", "", " 1"):
        status, j = call_json(hp, "/api/approvals/%s/approve" % bad.replace(" ", "%20"), "POST")
        assert status == 400 and "approval id" in j["error"], (bad, status, j)
    for path in ("/api/approvals/5", "/api/approvals/5/frobnicate", "/api/approvals/5/approve/",
                 "/api/approvals/5/approve/x", "/api/approvals/"):
        status, j = call_json(hp, path, "POST")
        assert status == 404, (path, status, j)
    status, _, _ = call(hp, "/api/nothing-here")
    assert status == 404


def test_malformed_bodies_are_refused_and_the_statement_still_waits(pg, hp):
    fresh_guarded(pg)
    with raw(hp) as c:
        c.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
        aid = read_hold_notice(c)
        path = "/api/approvals/%d/deny" % aid
        for body in (b"{", b"[]", b'"x"', b'{"reason": 5}', b'{"why": "x"}',
                     b'{"reason": "a", "reason": "b"}', b'{"reason": "two\\nlines"}',
                     b'{"reason": "nul\\u0000byte"}', b'{"reason": "' + b"x" * 1001 + b'"}',
                     b"\xff\xfe", b"null"):
            status, j = call_json(hp, path, "POST", body=body)
            assert status == 400, (body, status, j)
            assert j["error"], j
        status, j = call_json(hp, "/api/approvals/%d/approve" % aid, "POST",
                              body={"reason": "approve takes none"})
        assert status == 400 and "deny only" in j["error"], j
        status, j = call_json(hp, path, "POST", body=b"{" + b" " * 5000 + b"}")
        assert status == 413, j
        # nothing above decided it
        assert [r["id"] for r in listed(hp)] == [aid]
        assert_waiting(c, 0.2)
        # an empty object and a null reason are fine
        status, j = call_json(hp, path, "POST", body={"reason": None})
        assert status == 200 and j["decision"] == "rejected", j
        out = c.read_until({b"Z"}, 10)
        assert errors(out)[0]["C"] == "42501"
    assert count(pg) == 0
    assert hp.alive()


def test_missing_or_wrong_token_is_401(pg, hp):
    fresh_guarded(pg)
    with raw(hp) as c:
        c.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
        aid = read_hold_notice(c)
        cases = [
            dict(token=None),
            dict(token="wrong"),
            dict(token="alice-s3cret-token2"),
            dict(token="alice"),                       # a name is not a token
            dict(token="alice:alice-s3cret-token"),    # nor is the whole line
            dict(token="", headers={}),
            dict(token=None, headers={"Authorization": "Basic YWxpY2U6eA=="}),
            dict(token=None, headers={"Authorization": "alice-s3cret-token"}),
        ]
        for kw in cases:
            for path, method in (("/api/approvals", "GET"),
                                 ("/api/approvals/%d/approve" % aid, "POST"),
                                 ("/api/approvals/%d/deny" % aid, "POST")):
                status, headers, _ = call(hp, path, method, **kw)
                assert status == 401, (kw, path, status)
                assert headers["WWW-Authenticate"].startswith("Bearer"), headers
        assert_waiting(c, 0.2)
        assert count(pg) == 0
        # the right token still works afterwards
        status, j = call_json(hp, "/api/approvals/%d/approve" % aid, "POST", token="bob-0ther-token")
        assert status == 200 and j["reviewer"] == "bob"
        assert types(c.read_until({b"Z"}, 10)) == [b"C", b"Z"]
    assert count(pg) == 1
    assert re.search(r"HTTP /api/approvals from 127\.0\.0\.1:\d+: missing or wrong bearer token",
                     hp.log())


def test_rotated_token_file_takes_effect(hp):
    assert call(hp, "/api/approvals")[0] == 200
    hp.token_path.write_text("carol:new-token\n")
    assert call(hp, "/api/approvals")[0] == 401
    status, j = call_json(hp, "/api/approvals", token="new-token")
    assert status == 200 and j == {"approvals": []}


@pytest.mark.parametrize("token_text", [None, "", "# only a comment\n\n", "bad name:tok\n"])
def test_without_a_usable_token_file_the_api_is_refused(proxy_factory, token_text):
    p = start_http_proxy(proxy_factory, token_text=token_text)
    for path, method in (("/api/approvals", "GET"), ("/api/approvals/1/approve", "POST"),
                         ("/api/approvals/1/deny", "POST")):
        for token in (None, "", "tok", "bad name:tok"):
            status, j = call_json(p, path, method, token=token)
            assert status == 503, (path, token, status, j)
            assert "admin.token_file" in j["error"], j
    # the rest of the HTTP endpoints keep working
    assert call(p, "/healthz")[0] == 200
    assert call(p, "/approvals")[0] == 200
    if token_text and "bad name" in token_text:
        # warned once, not at every request
        assert p.log().count("1 malformed line(s) ignored") == 1, p.log_tail()


def test_unreadable_token_file_is_refused(proxy_factory):
    p = start_http_proxy(proxy_factory)
    p.token_path.unlink()
    status, j = call_json(p, "/api/approvals")
    assert status == 503, j
    assert "cannot read admin.token_file" in p.log()


def test_method_checks(hp):
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        status, headers, _ = call(hp, "/api/approvals", method, body=b"" if method != "OPTIONS" else None)
        assert status == 405, (method, status)
        assert headers["Allow"] == "GET, HEAD"
    for method in ("GET", "HEAD", "PUT", "DELETE"):
        status, headers, _ = call(hp, "/api/approvals/1/approve", method)
        assert status == 405, (method, status)
        assert headers["Allow"] == "POST"
    for method in ("POST", "DELETE"):
        status, headers, _ = call(hp, "/approvals", method, body=b"")
        assert status == 405 and headers["Allow"] == "GET, HEAD", (method, status)
    status, headers, text = call(hp, "/api/approvals", "HEAD")
    assert status == 200 and text == "" and headers["Content-Type"] == "application/json"


def test_api_answers_are_not_cached_and_carry_no_cors(hp):
    status, headers, _ = call(hp, "/api/approvals", headers={"Origin": "http://evil.example"})
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "Access-Control-Allow-Origin" not in headers
    assert "Set-Cookie" not in headers


def test_statement_text_from_clients_comes_back_as_json_text(pg, hp):
    """Markup and quotes in a held statement are data: the JSON carries them verbatim."""
    fresh_guarded(pg)
    pgx(pg, 'DROP TABLE IF EXISTS "<b>x</b>"; CREATE TABLE "<b>x</b>" (id int); '
            'GRANT ALL ON "<b>x</b>" TO PUBLIC')
    with raw(hp) as c:
        c.send(query_msg('INSERT INTO ap_guarded SELECT id FROM "<b>x</b>" /* "</script>" */'))
        aid = read_hold_notice(c)
        row = listed(hp)[0]
        assert '"<b>x</b>"' in row["statement"], row
        status, _ = call_json(hp, "/api/approvals/%d/deny" % aid, "POST",
                              body={"reason": "<img src=x onerror=alert(1)> ünïcödé"})
        assert status == 200
        f = errors(c.read_until({b"Z"}, 10))[0]
        assert "<img src=x onerror=alert(1)> ünïcödé" in f["M"], f


# ---------------------------------------------------------------- the page

def test_reviewer_page_is_self_contained_with_strict_headers(hp):
    status, headers, html = call(hp, "/approvals", token=None)
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"
    csp = dict(d.strip().split(" ", 1) for d in headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["connect-src"] == "'self'"
    assert csp["form-action"] == "'none'" and csp["base-uri"] == "'none'"
    assert "unsafe" not in headers["Content-Security-Policy"]
    # the inline script and style are exactly the ones the CSP allows by hash
    import base64
    import hashlib

    def sha(text):
        return "'sha256-%s'" % base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert len(scripts) == 1 and len(styles) == 1
    assert csp["script-src"] == sha(scripts[0])
    assert csp["style-src"] == sha(styles[0])
    # nothing external, nothing loaded, no markup built from data
    lower = html.lower()
    for needle in ("http:", "https:", "//", " src=", "href=", "@import", "url(", "innerhtml",
                   "outerhtml", "insertadjacenthtml", "document.write", "eval(", "cookie",
                   "localstorage", " style="):
        assert needle not in lower, needle
    assert "sessionStorage" in html and "textContent" in html
    assert "/api/approvals" in html
    # HEAD: headers only
    status, headers, body = call(hp, "/approvals", "HEAD", token=None)
    assert status == 200 and body == "" and "Content-Security-Policy" in headers


# ---------------------------------------------------------------- the page in a browser

BROWSER_SCRIPT = pathlib.Path(__file__).parent / "browser" / "approvals_page.cjs"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def node_env():
    """The environment for node with playwright-core resolvable, or None when it is not installed."""
    node = shutil.which("node")
    if not node or not os.path.exists(CHROMIUM):
        return None
    env = dict(os.environ)
    try:
        root = subprocess.run(["npm", "root", "-g"], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
        env["NODE_PATH"] = os.pathsep.join(p for p in (env.get("NODE_PATH"), root) if p)
        subprocess.run([node, "-e", "require.resolve('playwright-core')"], env=env, timeout=30,
                       check=True, capture_output=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return env


def test_reviewer_page_in_chromium_approves_and_denies(pg, hp):
    """Optional: needs Debian's chromium and npm's playwright-core (not in scripts/test's list)."""
    env = node_env()
    if env is None:
        pytest.skip("needs node, playwright-core (npm install -g playwright-core) and chromium")
    fresh_guarded(pg, rows=1)
    pgx(pg, 'DROP TABLE IF EXISTS "<b>x</b>"; CREATE TABLE "<b>x</b>" (id int); '
            'GRANT ALL ON "<b>x</b>" TO PUBLIC')
    with raw(hp) as c1, raw(hp) as c2:
        c1.send(query_msg('INSERT INTO ap_guarded SELECT 2 FROM "<b>x</b>" UNION ALL SELECT 2'))
        id1 = read_hold_notice(c1)
        c2.send(query_msg("DELETE FROM ap_guarded"))
        id2 = read_hold_notice(c2)
        reason = "<img src=x onerror=alert(1)> not today"
        proc = subprocess.run(
            ["node", str(BROWSER_SCRIPT), "http://127.0.0.1:%d/approvals" % hp.http_port,
             "alice-s3cret-token", str(id1), str(id2), reason],
            env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        seen = json.loads(proc.stdout.strip().splitlines()[-1])
        # the one expected failure: the wrong token tried first
        problems = [m for m in seen["problems"] if "status of 401" not in m]
        assert problems == [] and seen["csp"] == [], seen
        assert seen["loginShown"] and seen["loginAgain"], seen
        assert "refused" in seen["refusedText"], seen
        ids = sorted(int(r[0]) for r in seen["rows"])
        assert ids == sorted([id1, id2]), seen
        row1 = [r for r in seen["rows"] if int(r[0]) == id1][0]
        assert 'FROM "<b>x</b>"' in row1[3], row1          # shown as text...
        assert seen["markupInRows"] == 0, seen             # ...never as markup
        assert seen["storage"] == {"session": 1, "local": 0, "cookie": ""}, seen
        assert "approved by alice" in seen["approvedText"], seen
        assert "rejected by alice" in seen["deniedText"], seen
        assert seen["emptyShown"] and seen["forgotten"] == 0, seen
        out = c1.read_until({b"Z"}, 10)
        assert types(out) == [b"C", b"Z"], (types(out), errors(out))
        f = errors(c2.read_until({b"Z"}, 10))[0]
        assert f["C"] == "42501" and reason in f["M"], f
    assert sorted(r[0] for r in pgx(pg, "select id from ap_guarded")) == [1, 2]
