"""
The audit trail (DESIGN.md "Contract: audit record", doc/audit.md).

pgmoat-only: each proxy is started from the native YAML with an `audit:`
block. Records are read from the file the proxy writes; its writer thread is
asynchronous, so tests wait (bounded) for the records they expect, or stop
the proxy first (SIGTERM drains the queue).
"""

import json
import os
import re
import signal
import subprocess

import psycopg2
import psycopg2.errors
import pytest

from conftest import (
    IS_PGBOUNCER, PGMOAT_BIN, YamlProxy, _yaml_scalar, bind_msg, execute_msg, parse_msg,
    query_msg, raw_login, sync_msg, wait_until,
)

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="audit is pgmoat-only")

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
GENESIS = "0" * 64

DENY_POLICY = """\
local moat = require "moat"
local P = {}
function P.on_query(s, q)
	if q.kind == "drop" then
		return moat.deny("no drops")
	end
	for _, t in ipairs(q.tables) do
		if t == "au_answer_src" then return moat.rewrite("select 42 as answer") end
	end
end
return P
"""

# For replay --policy: a stricter set than the one the log was written under.
NO_DELETE_POLICY = """\
local moat = require "moat"
local P = {}
function P.on_query(s, q)
	if q.kind == "delete" then
		return moat.deny("deletes need a ticket")
	end
end
return P
"""


class AuditProxy(YamlProxy):
    """A YamlProxy with an `audit:` block (audit=dict of keys; file sink by default)."""

    def __init__(self, pg, audit=None, **kw):
        super().__init__(pg, **kw)
        self.audit_path = self.dir / "audit.jsonl"
        self.audit = {"sink": "file", "path": str(self.audit_path)}
        self.audit.update(audit or {})

    def render_yaml(self):
        text = super().render_yaml()
        lines = ["audit:"] + ["  %s: %s" % (k, _yaml_scalar(v)) for k, v in self.audit.items()]
        return text + "\n".join(lines) + "\n"

    def records(self, path=None):
        path = path or self.audit_path
        if not os.path.exists(path):
            return []
        with open(path, "rb") as f:
            return [json.loads(line) for line in f.read().splitlines() if line.strip()]

    def wait_records(self, pred, what, timeout=10):
        found = []

        def check():
            found[:] = [r for r in self.records() if pred(r)]
            return bool(found)
        wait_until(check, timeout=timeout, what=what)
        return found


@pytest.fixture
def audit_proxy(proxy_factory):
    def make(**kw):
        p = AuditProxy(proxy_factory.pg, **kw)
        proxy_factory.made.append(p)
        p.start()
        return p
    return make


def pgx(pg, sql):
    return pg.sql(sql, db="app")


def fresh_table(pg, name, rows=0):
    pgx(pg, "DROP TABLE IF EXISTS %s; CREATE TABLE %s (id int, email text); "
            "GRANT ALL ON %s TO PUBLIC" % (name, name, name))
    if rows:
        pgx(pg, "INSERT INTO %s SELECT g, 'user' || g || '@example.com' "
                "FROM generate_series(1, %d) g" % (name, rows))


def statements(records, session=None):
    return [r for r in records if r["event"] == "statement"
            and (session is None or r["session"] == session)]


def run_cli(*args, timeout=60):
    return subprocess.run([PGMOAT_BIN, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def stop_cleanly(p):
    p.expect_exit = True
    rc = p.stop(signal.SIGTERM, timeout=20)
    assert rc == 0, p.log_tail()


def assert_chain(records_path):
    cp = run_cli("audit", "verify", records_path)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert cp.stdout.startswith("ok "), cp.stdout
    return cp.stdout


# ---------------------------------------------------------------- what is recorded

def test_simple_statements_are_recorded_with_rows_and_without_literals(pg, audit_proxy):
    fresh_table(pg, "au_t1", rows=3)
    p = audit_proxy()
    conn = p.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("INSERT INTO au_t1 VALUES (99, 'secret.person@example.com')")
        cur.execute("SELECT id, email FROM au_t1 WHERE id <= 2")
        assert len(cur.fetchall()) == 2
    conn.close()
    stop_cleanly(p)
    recs = p.records()
    events = [r["event"] for r in recs]
    assert events[0] == "session_start" and events[-1] == "session_end", events
    start = recs[0]
    assert start["user"] == "app" and start["database"] == "app"
    assert start["client_addr"] == "127.0.0.1"
    assert start["prev"] == GENESIS
    session = start["session"]
    stmts = statements(recs, session)
    ins = [r for r in stmts if r["kind"] == "insert"]
    sel = [r for r in stmts if r["kind"] == "select" and "au_t1" in r["tables"]]
    assert len(ins) == 1 and len(sel) == 1, stmts
    assert ins[0]["rows"] == 1 and sel[0]["rows"] == 2
    for r in (ins[0], sel[0]):
        assert TS_RE.match(r["ts"]), r["ts"]
        assert r["decision"] == "allow" and r["policy"] is None and r["reason"] is None
        assert r["outcome"] == "ok" and r["sqlstate"] is None
        assert isinstance(r["duration_us"], int) and r["duration_us"] >= 0
        assert r["tables"] == ["au_t1"] and len(r["fingerprint"]) == 16
        assert r["protocol"] == "simple" and r["user"] == "app"
    # normalized: the literals never reach the log
    assert "secret.person" not in p.audit_path.read_text()
    assert "$1" in ins[0]["sql"] and "$2" in ins[0]["sql"], ins[0]["sql"]
    seqs = [r["seq"] for r in stmts]
    assert seqs == list(range(1, len(seqs) + 1))
    assert recs[-1]["statements"] == len(stmts)
    assert_chain(p.audit_path)


def test_sql_full_keeps_the_text(pg, audit_proxy):
    fresh_table(pg, "au_t2")
    p = audit_proxy(audit={"sql": "full"})
    p.query("INSERT INTO au_t2 VALUES (1, 'kept@example.com')")
    rec = p.wait_records(lambda r: r.get("kind") == "insert", "the insert's record")[0]
    assert rec["sql"] == "INSERT INTO au_t2 VALUES (1, 'kept@example.com')"


def test_multi_statement_query_one_record_each_error_and_skipped(pg, audit_proxy):
    p = audit_proxy()
    c = raw_login(p)
    try:
        out = c.simple_query("SELECT 1; SELECT 1/0; SELECT 3")
        assert [t for t, _ in out][-2:] == [b"E", b"Z"]
        out = c.simple_query("SELECT 4")
        assert out[-1][0] == b"Z"
    finally:
        c.close()
    recs = p.wait_records(lambda r: r.get("sql") == "SELECT $1" and r.get("rows") == 1
                          and r["seq"] == 4, "the last statement's record")
    session = recs[0]["session"]
    stmts = statements(p.records(), session)
    assert [(r["seq"], r["outcome"], r["rows"], r["sqlstate"]) for r in stmts] == [
        (1, "ok", 1, None), (2, "error", None, "22012"), (3, "skipped", None, None),
        (4, "ok", 1, None)], stmts


def test_extended_protocol_pipelined_each_execute_recorded(pg, audit_proxy):
    fresh_table(pg, "au_t3", rows=5)
    p = audit_proxy()
    c = raw_login(p)
    try:
        c.send(parse_msg("SELECT id FROM au_t3 WHERE id <= $1", "byid")
               + bind_msg(["2"], stmt="byid") + execute_msg()
               + bind_msg(["4"], stmt="byid") + execute_msg()
               + parse_msg("SELECT * FROM au_nosuch") + bind_msg() + execute_msg()
               + sync_msg())
        out = c.read_until({b"Z"})
        assert b"E" in [t for t, _ in out]
        c.send(bind_msg(["5"], stmt="byid") + execute_msg(max_rows=2) + sync_msg())
        c.read_until({b"Z"})
    finally:
        c.close()
    recs = p.wait_records(lambda r: r["event"] == "session_end", "session_end")
    stmts = statements(p.records(), recs[0]["session"])
    got = [(r["protocol"], r.get("statement_name"), r["outcome"], r["rows"], r["sqlstate"])
           for r in stmts]
    assert got == [
        ("extended", "byid", "ok", 2, None),
        ("extended", "byid", "ok", 4, None),
        ("extended", "", "error", None, "42P01"),
        ("extended", "byid", "suspended", None, None),
    ], got
    assert stmts[0]["tables"] == ["au_t3"] and stmts[0]["sql"].count("$1") == 1


def test_psycopg2_transaction_statements_in_order(pg, audit_proxy):
    fresh_table(pg, "au_t4")
    p = audit_proxy()
    conn = p.connect()
    with conn.cursor() as cur:
        cur.execute("INSERT INTO au_t4 VALUES (%s, %s)", (1, "a@example.com"))
        cur.execute("UPDATE au_t4 SET email = %s WHERE id = %s", ("b@example.com", 1))
    conn.commit()
    conn.close()
    recs = p.wait_records(lambda r: r["event"] == "session_end", "session_end")
    stmts = statements(p.records(), recs[0]["session"])
    kinds = [r["kind"] for r in stmts]
    assert kinds == ["begin", "insert", "update", "commit"], kinds
    assert [r["in_transaction"] for r in stmts] == [False, True, True, True]
    assert "example.com" not in p.audit_path.read_text()


# ---------------------------------------------------------------- policies

def test_denied_and_rewritten_statements_are_recorded(pg, audit_proxy):
    fresh_table(pg, "au_t5")
    p = audit_proxy(policies={"guard.lua": DENY_POLICY})
    conn = p.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("DROP TABLE au_t5")
        cur.execute("SELECT * FROM au_answer_src")
        assert cur.fetchall() == [(42,)]
    conn.close()
    c = raw_login(p)
    try:
        c.send(parse_msg("DROP TABLE au_t5") + bind_msg() + execute_msg() + sync_msg())
        out = c.read_until({b"Z"})
        assert [t for t, _ in out] == [b"E", b"Z"]
    finally:
        c.close()
    p.wait_records(lambda r: r.get("protocol") == "extended", "the denied Parse's record")
    stmts = statements(p.records())
    drops = [r for r in stmts if r["kind"] == "drop"]
    assert len(drops) == 2, drops
    for r in drops:
        assert r["decision"] == "deny" and r["policy"] == "guard.lua"
        assert r["reason"] == "no drops" and r["sqlstate"] == "42501"
        assert r["outcome"] == "denied" and r["rows"] is None
    assert [r["protocol"] for r in drops] == ["simple", "extended"]
    rw = [r for r in stmts if r["decision"] == "rewrite"]
    assert len(rw) == 1 and rw[0]["rewritten"] == "select $1 as answer", rw
    assert rw[0]["outcome"] == "ok" and rw[0]["rows"] == 1
    assert "au_t5" in [r[0] for r in pgx(pg, "select tablename from pg_tables")]


def test_denial_inside_a_transaction_and_the_aborted_rest(pg, audit_proxy):
    fresh_table(pg, "au_t7")
    p = audit_proxy(policies={"guard.lua": DENY_POLICY})
    conn = p.connect()
    with conn.cursor() as cur:
        cur.execute("INSERT INTO au_t7 VALUES (1, 'x')")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("DROP TABLE au_t7")
        with pytest.raises(psycopg2.errors.InFailedSqlTransaction):
            cur.execute("SELECT 1")
    conn.rollback()
    conn.close()
    recs = p.wait_records(lambda r: r["event"] == "session_end", "session_end")
    stmts = statements(p.records(), recs[0]["session"])
    got = [(r["kind"], r["decision"], r["outcome"], r["sqlstate"], r["in_transaction"])
           for r in stmts]
    assert got == [
        ("begin", "allow", "ok", None, False),
        ("insert", "allow", "ok", None, True),
        ("drop", "deny", "denied", "42501", True),
        ("select", "allow", "error", "25P02", True),
        ("rollback", "allow", "ok", None, True),
    ], got


def test_dry_run_records_what_the_policy_would_have_done(pg, audit_proxy):
    fresh_table(pg, "au_t8")
    p = audit_proxy(policies={"guard.lua": DENY_POLICY}, policy_settings={"mode": "dry_run"})
    p.query("DROP TABLE au_t8")
    rec = p.wait_records(lambda r: r.get("kind") == "drop", "the drop's record")[0]
    assert rec["decision"] == "allow" and rec["policy_verdict"] == "deny"
    assert rec["outcome"] == "ok" and rec["reason"] == "no drops"


def test_copy_rows_are_counted(pg, audit_proxy):
    import io
    fresh_table(pg, "au_t9")
    p = audit_proxy()
    conn = p.connect()
    with conn.cursor() as cur:
        cur.copy_from(io.StringIO("1\ta\n2\tb\n3\tc\n"), "au_t9")
        out = io.StringIO()
        cur.copy_to(out, "au_t9")
    conn.commit()
    conn.close()
    recs = p.wait_records(lambda r: r["event"] == "session_end", "session_end")
    copies = [r for r in statements(p.records(), recs[0]["session"]) if r["kind"] == "copy"]
    assert [(r["outcome"], r["rows"]) for r in copies] == [("ok", 3), ("ok", 3)], copies


def test_admin_console_is_not_audited(pg, audit_proxy):
    p = audit_proxy()
    p.show("POOLS")
    p.query("SELECT 1")
    p.wait_records(lambda r: r["event"] == "session_end", "session_end")
    assert {r["user"] for r in p.records()} == {"app"}


# ---------------------------------------------------------------- the chain

def test_verify_names_the_first_bad_line_after_tampering(pg, audit_proxy, tmp_path):
    p = audit_proxy()
    for i in range(3):
        p.query("SELECT %d" % i)
    stop_cleanly(p)
    out = assert_chain(p.audit_path)
    lines = p.audit_path.read_bytes().splitlines(keepends=True)
    assert out.startswith("ok %d records" % len(lines)), out
    assert len(lines) >= 6
    # change a value in line 3: the line still parses, line 4's prev no longer matches
    changed = tmp_path / "changed.jsonl"
    rec = json.loads(lines[2])
    rec["user"] = "mallory"
    changed.write_bytes(b"".join(lines[:2]) + json.dumps(rec, separators=(",", ":")).encode()
                        + b"\n" + b"".join(lines[3:]))
    cp = run_cli("audit", "verify", changed)
    assert cp.returncode == 1
    assert "changed.jsonl:4:" in cp.stdout and "prev mismatch" in cp.stdout, cp.stdout
    # a line that is not JSON is named itself
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b"".join(lines[:2]) + lines[2][:20] + b"\n" + b"".join(lines[3:]))
    cp = run_cli("audit", "verify", broken)
    assert cp.returncode == 1 and "broken.jsonl:3:" in cp.stdout and "bad JSON" in cp.stdout
    # a deleted line breaks the chain at the line after it
    deleted = tmp_path / "deleted.jsonl"
    deleted.write_bytes(b"".join(lines[:1] + lines[2:]))
    cp = run_cli("audit", "verify", deleted)
    assert cp.returncode == 1 and "deleted.jsonl:2:" in cp.stdout, cp.stdout


def test_restart_continues_the_chain_in_the_same_file(pg, audit_proxy):
    p = audit_proxy()
    p.query("SELECT 1")
    stop_cleanly(p)
    n = len(p.records())
    p.stopped = False
    p.start()
    p.query("SELECT 2")
    stop_cleanly(p)
    assert len(p.records()) > n
    out = assert_chain(p.audit_path)
    assert "continues" not in out


def test_sighup_reopens_the_file_and_the_chain_spans_rotation(pg, audit_proxy):
    p = audit_proxy()
    p.query("SELECT 1")
    p.wait_records(lambda r: r["event"] == "session_end", "first session")
    rotated = p.dir / "audit.jsonl.1"
    os.rename(p.audit_path, rotated)
    p.reload()
    p.wait_log("configuration reloaded")
    p.query("SELECT 2")
    p.wait_records(lambda r: r["event"] == "session_end", "records in the new file")
    stop_cleanly(p)
    old = assert_chain(rotated)
    new = assert_chain(p.audit_path)
    last_old = re.search(r"last hash ([0-9a-f]{64})", old).group(1)
    assert "continues a chain from %s" % last_old in new, (old, new)


def test_reload_to_an_unopenable_path_keeps_records_until_it_opens(pg, audit_proxy):
    p = audit_proxy()
    p.query("SELECT 1")
    p.wait_records(lambda r: r["event"] == "session_end", "first session")
    later = p.dir / "later"
    p.audit["path"] = str(later / "audit.jsonl")
    p.write_config()
    p.reload()
    p.wait_log("configuration reloaded")
    assert p.query("SELECT 2") == [(2,)]
    p.wait_log("cannot open")
    later.mkdir()
    wait_until(lambda: any(r["event"] == "session_end" for r in p.records(later / "audit.jsonl")),
               timeout=15, what="records in the late file")
    recs = p.records(later / "audit.jsonl")
    assert [r["event"] for r in recs] == ["session_start", "statement", "session_end"], recs
    stop_cleanly(p)
    new = assert_chain(later / "audit.jsonl")
    last_old = re.search(r"last hash ([0-9a-f]{64})", assert_chain(p.audit_path)).group(1)
    assert "continues a chain from %s" % last_old in new


def test_sigterm_drains_every_record(pg, audit_proxy):
    p = audit_proxy()
    c = raw_login(p)
    n = 300
    try:
        # pipelined: many statements in flight and queued when the signal lands
        c.send(b"".join(query_msg("SELECT %d" % i) for i in range(n)))
        for _ in range(n):
            c.read_until({b"Z"})
    finally:
        c.close()
    p.expect_exit = True
    p.signal(signal.SIGTERM)
    p.proc.wait(20)
    p.stopped = True
    assert p.proc.returncode == 0
    stmts = statements(p.records())
    assert len(stmts) == n and all(r["outcome"] == "ok" for r in stmts)
    assert_chain(p.audit_path)


# ---------------------------------------------------------------- required and full sinks

def test_required_refuses_statements_when_the_sink_fails(pg, audit_proxy):
    p = audit_proxy(audit={"path": "/dev/full", "required": "true"})
    c = raw_login(p)
    try:
        p.wait_log("writing the audit log failed")  # the session_start record
        c.send(query_msg("SELECT 1"))
        data, closed = c.read_until_close(timeout=10)
    finally:
        c.close()
    assert closed
    assert b"53400" in data and b"audit.required" in data, data
    assert not data.startswith(b"T")  # no result: the statement never ran
    # new sessions are refused too while the sink fails
    with pytest.raises(psycopg2.Error) as e:
        p.query("SELECT 1")
    assert "new sessions refused" in str(e.value) or "new sessions refused" in p.log()
    assert "statement refused" in p.log()


def test_not_required_keeps_serving_and_counts_drops(pg, audit_proxy):
    p = audit_proxy(audit={"path": "/dev/full", "queue_size": "16"})
    for i in range(30):
        assert p.query("SELECT %d" % i) == [(i,)]
    p.wait_log("records dropped")


# ---------------------------------------------------------------- replay

def test_replay_prints_a_session_and_marks_new_policy_decisions(pg, audit_proxy):
    fresh_table(pg, "au_t6", rows=3)
    p = audit_proxy()
    p.query("SELECT 1")
    conn = p.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DELETE FROM au_t6 WHERE id = 1")
        cur.execute("SELECT count(*) FROM au_t6")
    conn.close()
    stop_cleanly(p)
    recs = p.records()
    session = [r for r in recs if r.get("kind") == "delete"][0]["session"]
    cp = run_cli("replay", p.audit_path, "--session", session)
    assert cp.returncode == 0, cp.stderr
    out = cp.stdout
    assert "session start: user app, database app" in out
    assert "DELETE FROM au_t6 WHERE id = $1" in out and "1 rows" in out
    assert "SELECT $1" not in out  # the other session is not shown
    assert "session end" in out
    policy = p.dir / "nodelete.lua"
    policy.write_text(NO_DELETE_POLICY)
    cp = run_cli("replay", p.audit_path, "--session", session, "--policy", policy)
    assert cp.returncode == 0, cp.stderr
    assert "!! new policies: deny by nodelete.lua: deletes need a ticket  (was allow)" in cp.stdout
    assert "1 decided differently" in cp.stdout, cp.stdout
    # without --session: every session
    cp = run_cli("replay", p.audit_path)
    assert cp.returncode == 0 and "SELECT $1" in cp.stdout and "DELETE" in cp.stdout


def test_no_audit_block_writes_nothing(pg, policy_proxy):
    p = policy_proxy(policies={"guard.lua": DENY_POLICY})
    assert p.query("SELECT 1") == [(1,)]
    assert not list(p.dir.glob("*.jsonl"))


def test_bad_audit_config_is_refused(pg, proxy_factory):
    p = AuditProxy(pg, audit={"sink": "postgres"})
    proxy_factory.made.append(p)
    p.write_config()
    cp = run_cli("--check", p.config_path)
    assert cp.returncode == 1 and "postgres" in cp.stderr, cp.stderr
    p.audit = {"sink": "file"}
    p.write_config()
    cp = run_cli("--check", p.config_path)
    assert cp.returncode == 1 and "audit.path" in cp.stderr, cp.stderr
    p.audit = {"sink": "file", "path": "a.jsonl", "sqll": "full"}
    p.write_config()
    cp = run_cli("--check", p.config_path)
    assert cp.returncode == 1 and "sqll" in cp.stderr, cp.stderr
