"""
Held statements and their approval (issue 4 point 3; DESIGN.md admin console).

A policy's moat.hold(reason) makes the client wait with a NoticeResponse
naming the approval id; APPROVE id on the admin console runs the statement
exactly once, DENY id [reason] answers it with 42501, approvals.timeout
denies it, a CancelRequest denies it with 57014, and a client that leaves
while held never has its statement run. Every test checks both what the
client sees and what PostgreSQL itself did (read directly, not through the
proxy).
"""

import contextlib
import json
import re
import socket
import subprocess
import time

import psycopg2
import psycopg2.errors
import pytest

from conftest import (
    IS_PGBOUNCER, PGMOAT_BIN, REPO, ConnectionClosed, RawConn, YamlProxy, bind_msg, cancel_request,
    data_row_values, describe_msg, execute_msg, parse_error_fields, parse_msg, psql, query_msg,
    raw_login, sync_msg, wait_until,
)

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="approvals are pgmoat-only")

# Holds every statement that names ap_guarded; everything else is allowed.
HOLD_POLICY = """\
local moat = require "moat"
local P = {}
function P.on_query(s, q)
	for _, t in ipairs(q.tables) do
		if t == "ap_guarded" or t == "public.ap_guarded" then
			return moat.hold("ap_guarded changes need a reviewer")
		end
	end
end
return P
"""

NOTICE_ID = re.compile(r"held for approval (\d+)")


class ApprovalsProxy(YamlProxy):
    """A YamlProxy with an `approvals:` block."""

    def __init__(self, pg, approvals=None, **kw):
        super().__init__(pg, **kw)
        self.approvals = dict(approvals or {})

    def render_yaml(self):
        text = super().render_yaml()
        if self.approvals:
            text += "approvals: { %s }\n" % ", ".join(
                "%s: %s" % (k, json.dumps(v)) for k, v in self.approvals.items())
        return text


def start_proxy(factory, approvals=None, policies=None, **kw):
    p = ApprovalsProxy(factory.pg, approvals=approvals,
                       policies=policies or {"hold.lua": HOLD_POLICY}, **kw)
    factory.made.append(p)
    p.start()
    return p


@pytest.fixture
def hp(proxy_factory):
    return start_proxy(proxy_factory)


# ---------------------------------------------------------------- helpers

def pgx(pg, sql, args=None):
    return pg.sql(sql, args, db="app")


def fresh_guarded(pg, rows=0):
    pgx(pg, "DROP TABLE IF EXISTS ap_guarded; CREATE TABLE ap_guarded (id int); "
            "GRANT ALL ON ap_guarded TO PUBLIC")
    if rows:
        pgx(pg, "INSERT INTO ap_guarded SELECT generate_series(1, %d)" % rows)


def count(pg):
    return pgx(pg, "select count(*) from ap_guarded")[0][0]


def types(msgs):
    return [t for t, _ in msgs]


def errors(msgs):
    return [parse_error_fields(p) for t, p in msgs if t == b"E"]


def read_hold_notice(c, timeout=10):
    """The NoticeResponse of a hold; returns the approval id."""
    t, p = c.recv_msg(timeout)
    assert t == b"N", (t, p)
    f = parse_error_fields(p)
    m = NOTICE_ID.search(f.get("M", ""))
    assert m, f
    assert "APPROVE %s" % m.group(1) in f["M"], f
    return int(m.group(1))


def assert_waiting(c, wait=0.5):
    """Nothing more reaches a held client."""
    with pytest.raises(socket.timeout):
        c.recv_msg(wait)


def admin_cmd(p, sql, user="admin"):
    with contextlib.closing(p.admin(user)) as a, a.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall() if cur.description else None


def approvals(p, user="admin"):
    return p.show_dicts("APPROVALS", user)


def approval(p, aid):
    rows = [r for r in approvals(p) if r["id"] == aid]
    assert len(rows) == 1, approvals(p)
    return rows[0]


def rfq(msgs):
    assert msgs and msgs[-1][0] == b"Z", types(msgs)
    return msgs[-1][1][:1]


@contextlib.contextmanager
def raw(p, user="app", db="app"):
    c = raw_login(p, user, db)
    try:
        yield c
    finally:
        c.close()


def pbe(sql):
    return parse_msg(sql) + bind_msg() + describe_msg(b"P") + execute_msg() + sync_msg()


# ---------------------------------------------------------------- simple protocol

def test_approve_runs_the_held_statement_exactly_once(pg, hp):
    fresh_guarded(pg)
    with raw(hp) as c:
        c.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
        aid = read_hold_notice(c)
        assert_waiting(c)
        assert count(pg) == 0
        row = approval(hp, aid)
        assert row["user"] == "app" and row["database"] == "app"
        assert row["client"].startswith("C-")
        assert row["statement"] == "INSERT INTO ap_guarded VALUES ($1)"
        assert row["reason"] == "ap_guarded changes need a reviewer"
        assert row["policy"] == "hold.lua"
        assert row["protocol"] == "simple"
        assert row["server"] is None  # transaction mode, outside a block: no server kept
        assert row["wait"] >= 0
        admin_cmd(hp, "APPROVE %d" % aid)
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"C", b"Z"], (types(out), errors(out))
        assert out[0][1].rstrip(b"\0") == b"INSERT 0 1"
        assert rfq(out) == b"I"
        assert count(pg) == 1
        # approved once: the id is spent, nothing runs twice
        with pytest.raises(psycopg2.Error) as ei:
            admin_cmd(hp, "APPROVE %d" % aid)
        assert "no such approval" in str(ei.value)
        assert approvals(hp) == []
        # the same statement again is a new statement: held again
        c.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
        aid2 = read_hold_notice(c)
        assert aid2 != aid
        admin_cmd(hp, "DENY %d" % aid2)
        out = c.read_until({b"Z"}, 10)
        assert errors(out)[0]["C"] == "42501"
    assert count(pg) == 1
    log = hp.log()
    assert "approval %d: statement held by policy hold.lua" % aid in log
    assert "approval %d approved by admin" % aid in log


def test_deny_with_reason_gives_42501_and_nothing_runs(pg, hp):
    fresh_guarded(pg, rows=2)
    with raw(hp) as c:
        c.send(query_msg("DELETE FROM ap_guarded"))
        aid = read_hold_notice(c)
        admin_cmd(hp, "DENY %d 'not on a friday'" % aid)
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"E", b"Z"], types(out)
        f = errors(out)[0]
        assert f["C"] == "42501"
        assert "not on a friday" in f["M"] and "denied by admin" in f["M"], f
        assert rfq(out) == b"I"
        # the session goes on
        out = c.simple_query("select 1")
        assert types(out) == [b"T", b"D", b"C", b"Z"]
    assert count(pg) == 2
    assert "approval %d denied by admin: not on a friday" % aid in hp.log()


def test_deny_reason_as_bare_words(pg, hp):
    fresh_guarded(pg)
    with raw(hp) as c:
        c.send(query_msg("INSERT INTO ap_guarded VALUES (5)"))
        aid = read_hold_notice(c)
        admin_cmd(hp, "DENY %d ask the DBA first;" % aid)
        out = c.read_until({b"Z"}, 10)
        assert "ask the DBA first" in errors(out)[0]["M"]
    assert count(pg) == 0


def test_multi_statement_query_is_held_whole(pg, hp):
    fresh_guarded(pg)
    pgx(pg, "DROP TABLE IF EXISTS ap_free; CREATE TABLE ap_free (id int); "
            "GRANT ALL ON ap_free TO PUBLIC")
    with raw(hp) as c:
        c.send(query_msg("INSERT INTO ap_free VALUES (1); INSERT INTO ap_guarded VALUES (2)"))
        aid = read_hold_notice(c)
        assert pgx(pg, "select count(*) from ap_free")[0][0] == 0
        assert "; INSERT INTO ap_guarded" in approval(hp, aid)["statement"]
        admin_cmd(hp, "APPROVE %d" % aid)
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"C", b"C", b"Z"], (types(out), errors(out))
    assert pgx(pg, "select count(*) from ap_free")[0][0] == 1
    assert count(pg) == 1


def read_results_and_notice(c):
    """Messages up to ReadyForQuery without the hold notice, and the notice's approval id.

    The notice is asynchronous: it may come before the results of statements
    pipelined ahead of the held one, or after them.
    """
    out = c.read_until({b"Z"}, 10)
    notices = [parse_error_fields(p)["M"] for t, p in out if t == b"N"]
    if not notices:
        return out, read_hold_notice(c)
    return [m for m in out if m[0] != b"N"], int(NOTICE_ID.search(notices[0]).group(1))


def test_pipelined_queries_behind_a_held_one_wait_and_keep_their_order(pg, hp):
    fresh_guarded(pg)
    with raw(hp) as c:
        c.send(query_msg("select 1") + query_msg("INSERT INTO ap_guarded VALUES (1)")
               + query_msg("select 2") + query_msg("INSERT INTO ap_guarded VALUES (2)"))
        out, first = read_results_and_notice(c)
        assert types(out) == [b"T", b"D", b"C", b"Z"]
        assert_waiting(c)
        # its server went back to the pool once select 1 was done
        wait_until(lambda: approval(hp, first)["server"] is None, 5, 0.1, "server released")
        admin_cmd(hp, "DENY %d" % first)
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"E", b"Z"], types(out)
        out, second = read_results_and_notice(c)
        assert types(out) == [b"T", b"D", b"C", b"Z"], types(out)
        assert data_row_values(out[1][1]) == ["2"]
        assert second != first
        assert_waiting(c)
        admin_cmd(hp, "APPROVE %d" % second)
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"C", b"Z"], types(out)
    assert pgx(pg, "select id from ap_guarded") == [(2,)]


def test_hold_notice_never_splits_a_row_being_streamed(pg, hp):
    """Held while the server is mid-way through a big DataRow: the notice comes after it."""
    fresh_guarded(pg)
    big = 16 * 1024 * 1024
    pgx(pg, "DROP TABLE IF EXISTS ap_big; CREATE TABLE ap_big (v text); "
            "ALTER TABLE ap_big ALTER v SET STORAGE EXTERNAL; GRANT ALL ON ap_big TO PUBLIC; "
            "INSERT INTO ap_big SELECT repeat('x', %d)" % big)
    with raw(hp) as c:
        # no function call: the next statement is judged at once, not after this one
        c.send(query_msg("select v from ap_big"))
        time.sleep(1.0)  # the row is streaming; we do not read, so it stalls half-way
        c.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
        time.sleep(0.3)
        out, aid = read_results_and_notice(c)
        assert types(out) == [b"T", b"D", b"C", b"Z"], types(out)
        assert len(out[1][1]) == 2 + 4 + big  # the row arrived whole
        admin_cmd(hp, "APPROVE %d" % aid)
        assert types(c.read_until({b"Z"}, 10)) == [b"C", b"Z"]
    assert count(pg) == 1
    assert hp.alive()


def test_two_held_clients_are_decided_independently(pg, hp):
    fresh_guarded(pg)
    with raw(hp) as a, raw(hp) as b:
        a.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
        ida = read_hold_notice(a)
        b.send(pbe("INSERT INTO ap_guarded VALUES (2)"))
        idb = read_hold_notice(b)
        assert sorted(r["id"] for r in approvals(hp)) == sorted([ida, idb])
        admin_cmd(hp, "APPROVE %d" % idb)
        assert types(b.read_until({b"Z"}, 10))[-2:] == [b"C", b"Z"]
        assert_waiting(a)
        admin_cmd(hp, "DENY %d" % ida)
        assert types(a.read_until({b"Z"}, 10)) == [b"E", b"Z"]
    assert pgx(pg, "select id from ap_guarded") == [(2,)]


# ---------------------------------------------------------------- extended protocol

def test_extended_batch_waits_whole_and_runs_on_approve(pg, hp):
    fresh_guarded(pg)
    with raw(hp) as c:
        c.send(pbe("INSERT INTO ap_guarded VALUES (7)"))
        aid = read_hold_notice(c)
        assert_waiting(c)
        assert approval(hp, aid)["protocol"] == "extended"
        admin_cmd(hp, "APPROVE %d" % aid)
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"1", b"2", b"n", b"C", b"Z"], (types(out), errors(out))
        assert rfq(out) == b"I"
    assert pgx(pg, "select id from ap_guarded") == [(7,)]


def test_extended_batch_denied_discards_up_to_sync(pg, hp):
    fresh_guarded(pg)
    with raw(hp) as c:
        c.send(pbe("INSERT INTO ap_guarded VALUES (8)"))
        aid = read_hold_notice(c)
        admin_cmd(hp, "DENY %d no" % aid)
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"E", b"Z"], types(out)
        assert errors(out)[0]["C"] == "42501"
        assert rfq(out) == b"I"
        # the next batch is judged and runs normally
        c.send(pbe("select 3"))
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"1", b"2", b"T", b"D", b"C", b"Z"], types(out)
    assert count(pg) == 0


def test_psycopg2_blocks_until_approved_and_gets_the_notice(pg, hp):
    """A driver blocks in execute() until the reviewer decides; the notice names the id."""
    fresh_guarded(pg)
    conn = hp.connect(autocommit=True)
    try:
        from conftest import Bg

        def run():
            with conn.cursor() as cur:
                cur.execute("INSERT INTO ap_guarded VALUES (%s)", (11,))
                return cur.rowcount
        bg = Bg(run)
        wait_until(lambda: approvals(hp), 10, 0.1, "the statement to be held")
        aid = approvals(hp)[0]["id"]
        assert not bg.done()
        admin_cmd(hp, "APPROVE %d" % aid)
        assert bg.result(15) == 1
        assert any("held for approval %d" % aid in n for n in conn.notices)
    finally:
        conn.close()
    assert count(pg) == 1


# ---------------------------------------------------------------- transactions

def test_inside_transaction_keeps_its_server_and_approve_runs_in_it(pg, hp):
    fresh_guarded(pg)
    with raw(hp) as c:
        assert rfq(c.simple_query("BEGIN")) == b"T"
        c.send(query_msg("INSERT INTO ap_guarded VALUES (3)"))
        aid = read_hold_notice(c)
        assert approval(hp, aid)["server"].startswith("S-")
        admin_cmd(hp, "APPROVE %d" % aid)
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"C", b"Z"] and rfq(out) == b"T", (types(out), errors(out))
        assert count(pg) == 0  # not committed yet
        assert rfq(c.simple_query("COMMIT")) == b"I"
    assert count(pg) == 1


def test_inside_transaction_deny_aborts_it_on_both_sides(pg, hp):
    fresh_guarded(pg)
    with raw(hp) as c:
        assert rfq(c.simple_query("BEGIN")) == b"T"
        c.send(query_msg("INSERT INTO ap_guarded VALUES (4)"))
        aid = read_hold_notice(c)
        admin_cmd(hp, "DENY %d 'not now'" % aid)
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"E", b"Z"], types(out)
        assert errors(out)[0]["C"] == "42501" and "not now" in errors(out)[0]["M"]
        assert rfq(out) == b"E"
        # the server agrees: the transaction is aborted
        out = c.simple_query("select 1")
        assert errors(out)[0]["C"] == "25P02", errors(out)
        assert rfq(c.simple_query("ROLLBACK")) == b"I"
        out = c.simple_query("select 2")
        assert types(out) == [b"T", b"D", b"C", b"Z"]
    assert count(pg) == 0


def test_extended_inside_transaction_deny(pg, hp):
    fresh_guarded(pg)
    with raw(hp) as c:
        assert rfq(c.simple_query("BEGIN")) == b"T"
        c.send(pbe("INSERT INTO ap_guarded VALUES (9)"))
        aid = read_hold_notice(c)
        admin_cmd(hp, "DENY %d" % aid)
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"E", b"Z"], types(out)
        assert rfq(out) == b"E"
        assert rfq(c.simple_query("ROLLBACK")) == b"I"
    assert count(pg) == 0


def test_session_mode_hold_keeps_server_and_approves(pg, proxy_factory):
    fresh_guarded(pg)
    p = start_proxy(proxy_factory, settings={"pool_mode": "session"})
    with raw(p) as c:
        out = c.simple_query("select pg_backend_pid()")
        pid = data_row_values(out[1][1])[0]
        c.send(query_msg("INSERT INTO ap_guarded VALUES (6)"))
        aid = read_hold_notice(c)
        assert approval(p, aid)["server"].startswith("S-")  # the session's server stays
        admin_cmd(p, "APPROVE %d" % aid)
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"C", b"Z"], (types(out), errors(out))
        out = c.simple_query("select pg_backend_pid()")
        assert data_row_values(out[1][1])[0] == pid
    assert count(pg) == 1


def test_held_client_holds_no_server_in_transaction_mode(pg, proxy_factory):
    fresh_guarded(pg)
    p = start_proxy(proxy_factory, settings={"default_pool_size": "1"})
    with raw(p) as c:
        c.send(query_msg("INSERT INTO ap_guarded VALUES (12)"))
        aid = read_hold_notice(c)
        # the only server is free for everyone else meanwhile
        for i in range(3):
            assert p.query("select %d" % i) == [(i,)]
        with raw(p) as other:
            assert rfq(other.simple_query("BEGIN")) == b"T"
            assert rfq(other.simple_query("select 1")) == b"T"
            assert rfq(other.simple_query("COMMIT")) == b"I"
        admin_cmd(p, "APPROVE %d" % aid)
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"C", b"Z"], (types(out), errors(out))
    assert count(pg) == 1


# ---------------------------------------------------------------- timeout, leave, cancel

def test_timeout_denies_with_a_message_saying_so(pg, proxy_factory):
    fresh_guarded(pg)
    p = start_proxy(proxy_factory, approvals={"timeout": "1s", "store": "memory"})
    with raw(p) as c:
        c.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
        aid = read_hold_notice(c)
        t0 = time.monotonic()
        out = c.read_until({b"Z"}, 10)
        assert time.monotonic() - t0 >= 0.5
        assert types(out) == [b"E", b"Z"], types(out)
        f = errors(out)[0]
        assert f["C"] == "42501" and "timed out" in f["M"], f
    assert approvals(p) == []
    assert count(pg) == 0
    assert "approval %d timed out" % aid in p.log()
    with pytest.raises(psycopg2.Error) as ei:
        admin_cmd(p, "APPROVE %d" % aid)
    assert "no such approval" in str(ei.value)
    assert count(pg) == 0


def test_client_that_leaves_is_never_executed(pg, hp):
    fresh_guarded(pg)
    c = raw_login(hp)
    c.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
    aid = read_hold_notice(c)
    c.close()
    wait_until(lambda: approvals(hp) == [], 10, 0.1, "the approval to be dropped")
    with pytest.raises(psycopg2.Error) as ei:
        admin_cmd(hp, "APPROVE %d" % aid)
    assert "no such approval" in str(ei.value)
    time.sleep(0.3)
    assert count(pg) == 0
    assert "approval %d dropped: the client left" % aid in hp.log()


def test_client_that_leaves_inside_transaction_is_never_executed(pg, hp):
    fresh_guarded(pg)
    c = raw_login(hp)
    assert rfq(c.simple_query("BEGIN")) == b"T"
    c.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
    aid = read_hold_notice(c)
    c.close(abort=True)
    wait_until(lambda: approvals(hp) == [], 10, 0.1, "the approval to be dropped")
    with pytest.raises(psycopg2.Error):
        admin_cmd(hp, "APPROVE %d" % aid)
    assert count(pg) == 0
    assert hp.query("select 1") == [(1,)]


def test_cancel_of_a_held_client_is_a_canceled_query(pg, hp):
    fresh_guarded(pg)
    with raw(hp) as c:
        c.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
        aid = read_hold_notice(c)
        k = RawConn(hp.port)
        try:
            k.send(cancel_request(c.backend_pid, c.backend_key))
            k.read_until_close(5)
        finally:
            k.close()
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"E", b"Z"], types(out)
        assert errors(out)[0]["C"] == "57014", errors(out)
        assert rfq(out) == b"I"
        assert c.simple_query("select 1")[-1][0] == b"Z"
    assert approvals(hp) == []
    assert count(pg) == 0
    assert "approval %d canceled by the client" % aid in hp.log()


# ---------------------------------------------------------------- admin console

def test_stats_users_may_show_but_not_decide(pg, hp):
    fresh_guarded(pg)
    with raw(hp) as c:
        c.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
        aid = read_hold_notice(c)
        assert [r["id"] for r in approvals(hp, user="stats")] == [aid]
        for cmd in ("APPROVE %d" % aid, "DENY %d" % aid, "DENY %d 'x'" % aid):
            with pytest.raises(psycopg2.Error) as ei:
                admin_cmd(hp, cmd, user="stats")
            assert "admin access needed" in str(ei.value)
        assert [r["id"] for r in approvals(hp)] == [aid]
        admin_cmd(hp, "DENY %d" % aid)
        c.read_until({b"Z"}, 10)
    assert count(pg) == 0


def test_bad_approval_commands(hp):
    for cmd, text in (("APPROVE", "needs an approval id"), ("APPROVE x", "needs an approval id"),
                      ("APPROVE 999999", "no such approval"), ("DENY 999999 'r'", "no such approval"),
                      ("DENY", "needs an approval id")):
        with pytest.raises(psycopg2.Error) as ei:
            admin_cmd(hp, cmd)
        assert text in str(ei.value), (cmd, str(ei.value))
    assert hp.query("select 1") == [(1,)]


def test_psql_on_the_admin_console(pg, hp):
    fresh_guarded(pg)
    with raw(hp) as c:
        c.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
        aid = read_hold_notice(c)
        r = psql(hp.port, "SHOW APPROVALS", user="admin", db="pgbouncer")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("%d|C-" % aid), r.stdout
        assert "INSERT INTO ap_guarded VALUES ($1)" in r.stdout
        r = psql(hp.port, "APPROVE %d" % aid, user="admin", db="pgbouncer")
        assert r.returncode == 0, r.stderr
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"C", b"Z"]
        r = psql(hp.port, "SHOW POLICIES", user="admin", db="pgbouncer")
        assert r.returncode == 0, r.stderr
        assert re.match(r"1\|.*/hold\.lua\|on_query\|enforce$", r.stdout.strip()), r.stdout
        r = psql(hp.port, "SHOW HELP", user="admin", db="pgbouncer")
        assert "APPROVE" in r.stdout + r.stderr
    assert count(pg) == 1


def test_show_policies_lists_files_in_order_with_hooks(proxy_factory):
    both = """\
local moat = require "moat"
local P = {}
function P.on_connect(s) end
function P.on_query(s, q) end
function P.on_disconnect(s) end
return P
"""
    p = start_proxy(proxy_factory, policies={"hold.lua": HOLD_POLICY, "b.lua": both})
    rows = p.show_dicts("POLICIES", user="stats")
    assert [(r["position"], r["file"].rsplit("/", 1)[-1], r["hooks"]) for r in rows] == [
        (1, "hold.lua", "on_query"), (2, "b.lua", "on_connect,on_query,on_disconnect")]


def test_show_policies_empty_without_policies(proxy_factory):
    p = proxy_factory()
    assert p.show("POLICIES")[1] == []
    assert p.show("APPROVALS")[1] == []


def test_guardrails_drop_is_held_and_runs_when_approved(pg, proxy_factory):
    pgx(pg, "DROP TABLE IF EXISTS ap_drop_me; CREATE TABLE ap_drop_me (id int); "
            "GRANT ALL ON ap_drop_me TO PUBLIC; ALTER TABLE ap_drop_me OWNER TO app")
    p = start_proxy(proxy_factory, policies={},
                    policy_scripts=[str(REPO / "policies" / "guardrails.lua")])
    with raw(p) as c:
        c.send(query_msg("DROP TABLE ap_drop_me"))
        aid = read_hold_notice(c)
        row = approval(p, aid)
        assert row["reason"] == "drop needs approval" and row["policy"] == "guardrails.lua"
        assert pgx(pg, "select to_regclass('ap_drop_me') is not null")[0][0]
        admin_cmd(p, "APPROVE %d" % aid)
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"C", b"Z"], (types(out), errors(out))
    assert not pgx(pg, "select to_regclass('ap_drop_me') is not null")[0][0]


def test_approvals_config_errors(proxy_factory, tmp_path):
    for block, text in (("{ store: postgres }", "needs 'approvals.conninfo'"),
                        ("{ store: postgres, conninfo: 'dbname=app', key_file: nokey }",
                         "approvals.key_file"),
                        ("{ store: files }", "memory or postgres"),
                        ("{ timeout: never }", "approvals.timeout"),
                        ("{ colour: red }", "unknown key")):
        p = ApprovalsProxy(proxy_factory.pg, policies={"hold.lua": HOLD_POLICY})
        p.approvals = {}
        p.render_yaml = (lambda orig, b: lambda: orig() + "approvals: %s\n" % b)(p.render_yaml, block)
        proxy_factory.made.append(p)
        p.write_config()
        import subprocess
        r = subprocess.run(p.command("--check", str(p.config_path)), capture_output=True,
                           text=True, timeout=30)
        assert r.returncode != 0 and text in r.stdout + r.stderr, (block, r.stdout, r.stderr)


def test_reload_while_held_keeps_the_approval(pg, hp):
    """SIGHUP with a policy that no longer holds: the waiting approval is still decided."""
    fresh_guarded(pg)
    with raw(hp) as c:
        c.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
        aid = read_hold_notice(c)
        hp.set_policy("hold.lua", "return {}\n")
        hp.reload()
        hp.wait_log("reload|RELOAD|reloaded", 10)
        assert [r["id"] for r in approvals(hp)] == [aid]
        admin_cmd(hp, "DENY %d 'after reload'" % aid)
        out = c.read_until({b"Z"}, 10)
        assert "after reload" in errors(out)[0]["M"]
        # the new policy allows it now
        assert types(c.simple_query("INSERT INTO ap_guarded VALUES (2)")) == [b"C", b"Z"]
    assert pgx(pg, "select id from ap_guarded") == [(2,)]


def test_shutdown_closes_a_held_client_and_never_runs_it(pg, hp):
    fresh_guarded(pg)
    c = raw_login(hp)
    try:
        c.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
        read_hold_notice(c)
        hp.expect_exit = True
        assert hp.stop() == 0
        data, closed = c.read_until_close(10)
        assert closed
        assert b"57P01" in data
    finally:
        c.close()
    assert count(pg) == 0


# ---------------------------------------------------------------- store: postgres (replicas)

def store_conninfo(pg, port=None):
    return "host=127.0.0.1 port=%d dbname=app user=app password=apppw" % (port or pg.port)


STORE_KEY = "replicas-share-this-secret-0123456789\n"


def start_replica(factory, pg, key=STORE_KEY, **kw):
    p = start_proxy(factory, approvals={"store": "postgres", "conninfo": store_conninfo(pg),
                                        "key_file": "approvals.key", "timeout": "60s"},
                    extra_files={"approvals.key": key}, **kw)
    p.wait_log("approvals store: connected", 10)
    return p


def test_replicas_see_and_decide_each_others_holds(pg, proxy_factory):
    fresh_guarded(pg)
    a = start_replica(proxy_factory, pg)
    b = start_replica(proxy_factory, pg)
    with raw(a) as c1, raw(a) as c2:
        c1.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
        id1 = read_hold_notice(c1)
        c2.send(pbe("INSERT INTO ap_guarded VALUES (2)"))
        id2 = read_hold_notice(c2)
        assert 100000000 <= id1 < 1000000000 and id1 != id2  # random ids: shared space
        wait_until(lambda: sorted(r["id"] for r in approvals(b)) == sorted([id1, id2]), 10, 0.1,
                   "replica b to learn a's holds")
        row = [r for r in approvals(b) if r["id"] == id1][0]
        assert row["replica"] == "%s:%d" % (socket.gethostname(), a.port)
        assert row["statement"] == "INSERT INTO ap_guarded VALUES ($1)" and row["user"] == "app"
        assert row["client"].startswith("C-") and row["server"] is None
        assert approval(a, id1)["replica"] is None  # a's own holds
        # b approves one and denies the other; a applies both
        with contextlib.closing(b.admin()) as adm, adm.cursor() as cur:
            cur.execute("APPROVE %d" % id1)
            assert any("another replica" in n for n in adm.notices)
            cur.execute("DENY %d 'from b'" % id2)
        out = c1.read_until({b"Z"}, 10)
        assert types(out) == [b"C", b"Z"], (types(out), errors(out))
        out = c2.read_until({b"Z"}, 10)
        assert types(out) == [b"E", b"Z"], types(out)
        f = errors(out)[0]
        assert f["C"] == "42501" and "from b" in f["M"] and "admin@" in f["M"], f
        wait_until(lambda: approvals(b) == [], 10, 0.1, "b to forget the decided holds")
        assert approvals(a) == []
    assert pgx(pg, "select id from ap_guarded") == [(1,)]
    assert "approval %d approved by admin@" % id1 in a.log()


def test_a_replica_that_starts_later_learns_waiting_holds(pg, proxy_factory):
    fresh_guarded(pg)
    a = start_replica(proxy_factory, pg)
    with raw(a) as c:
        c.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
        aid = read_hold_notice(c)
        b = start_replica(proxy_factory, pg)
        wait_until(lambda: [r["id"] for r in approvals(b)] == [aid], 10, 0.1, "sync")
        admin_cmd(b, "DENY %d" % aid)
        assert types(c.read_until({b"Z"}, 10)) == [b"E", b"Z"]
    assert count(pg) == 0


def test_a_client_leaving_is_forgotten_by_every_replica(pg, proxy_factory):
    fresh_guarded(pg)
    a = start_replica(proxy_factory, pg)
    b = start_replica(proxy_factory, pg)
    c = raw_login(a)
    c.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
    aid = read_hold_notice(c)
    wait_until(lambda: [r["id"] for r in approvals(b)] == [aid], 10, 0.1, "b to learn it")
    c.close()
    wait_until(lambda: approvals(b) == [], 10, 0.1, "b to forget it")
    with pytest.raises(psycopg2.Error) as ei:
        admin_cmd(b, "APPROVE %d" % aid)
    assert "no such approval" in str(ei.value)
    time.sleep(0.5)
    assert count(pg) == 0


def test_unreachable_store_leaves_each_replica_working_alone(pg, proxy_factory):
    fresh_guarded(pg)
    from conftest import free_port
    p = start_proxy(proxy_factory, approvals={"store": "postgres", "key_file": "approvals.key",
                                              "conninfo": store_conninfo(pg, free_port())},
                    extra_files={"approvals.key": STORE_KEY})
    p.wait_log("approvals store: could not connect", 10)
    with raw(p) as c:
        c.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
        aid = read_hold_notice(c)
        admin_cmd(p, "APPROVE %d" % aid)
        assert types(c.read_until({b"Z"}, 10)) == [b"C", b"Z"]
    assert count(pg) == 1


def test_replica_reconnects_to_the_store_after_losing_it(pg, proxy_factory):
    fresh_guarded(pg)
    a = start_replica(proxy_factory, pg)
    b = start_replica(proxy_factory, pg)
    killed = pgx(pg, "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                     "where application_name = 'pgmoat approvals'")[0][0]
    assert killed == 2
    a.wait_log("approvals store: connection lost", 10)
    wait_until(lambda: a.log().count("approvals store: connected") >= 2
               and b.log().count("approvals store: connected") >= 2, 15, 0.2, "reconnects")
    with raw(a) as c:
        c.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
        aid = read_hold_notice(c)
        wait_until(lambda: [r["id"] for r in approvals(b)] == [aid], 10, 0.1, "b to learn it")
        admin_cmd(b, "APPROVE %d" % aid)
        assert types(c.read_until({b"Z"}, 10)) == [b"C", b"Z"]
    assert count(pg) == 1


def test_forged_or_foreign_store_messages_are_ignored(pg, proxy_factory):
    """Any role of the store's database can NOTIFY: only signed messages count."""
    fresh_guarded(pg)
    a = start_replica(proxy_factory, pg)
    other = start_replica(proxy_factory, pg, key="a-different-key-0123456789abcdef\n")
    with raw(a) as c:
        c.send(query_msg("INSERT INTO ap_guarded VALUES (1)"))
        aid = read_hold_notice(c)
        replica = "%s:%d" % (socket.gethostname(), a.port)
        forged = json.dumps({"op": "decide", "replica": "x", "to": replica, "id": aid,
                             "approve": True, "reviewer": "mallory", "reason": "",
                             "ts": int(time.time() * 1e6)})
        pgx(pg, "SELECT pg_notify('pgmoat_approvals', %s)", (forged,))
        pgx(pg, "SELECT pg_notify('pgmoat_approvals', %s)", ("0" * 64 + "." + forged,))
        a.wait_log("no valid signature", 10)
        # a replica with another key neither sees a's holds nor can decide them
        time.sleep(0.5)
        assert approvals(other) == []
        with pytest.raises(psycopg2.Error):
            admin_cmd(other, "APPROVE %d" % aid)
        assert_waiting(c)
        assert count(pg) == 0
        admin_cmd(a, "DENY %d" % aid)
        assert types(c.read_until({b"Z"}, 10)) == [b"E", b"Z"]
    assert count(pg) == 0


def test_long_statements_are_announced_cut_to_fit_a_notify(pg, proxy_factory):
    fresh_guarded(pg)
    a = start_replica(proxy_factory, pg)
    b = start_replica(proxy_factory, pg)
    sql = "INSERT INTO ap_guarded SELECT id FROM ap_guarded WHERE " + " AND ".join(
        ["id = id"] * 3000)
    with raw(a) as c:
        c.send(query_msg(sql))
        aid = read_hold_notice(c)
        wait_until(lambda: [r["id"] for r in approvals(b)] == [aid], 10, 0.1, "b to learn it")
        stmt = approvals(b)[0]["statement"]
        assert stmt.startswith("INSERT INTO ap_guarded SELECT id") and len(stmt) <= 3000
        admin_cmd(b, "APPROVE %d" % aid)
        assert types(c.read_until({b"Z"}, 10)) == [b"C", b"Z"]


# ---------------------------------------------------------------- audit trail

class AuditedApprovalsProxy(ApprovalsProxy):
    """Holds, with the audit trail written to a file."""

    def render_yaml(self):
        self.audit_path = self.dir / "audit.jsonl"
        return super().render_yaml() + "audit: { sink: file, path: %s }\n" % json.dumps(
            str(self.audit_path))

    def records(self):
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line]


def test_decisions_on_holds_are_in_the_audit_trail(pg, proxy_factory):
    p = AuditedApprovalsProxy(pg, policies={"hold.lua": HOLD_POLICY})
    proxy_factory.made.append(p)
    p.start()
    fresh_guarded(pg)
    with raw(p) as c:
        c.send(query_msg("INSERT INTO ap_guarded VALUES (7)"))
        approved = read_hold_notice(c)
        admin_cmd(p, "APPROVE %d" % approved)
        assert types(c.read_until({b"Z"}, 10)) == [b"C", b"Z"]
        c.send(query_msg("INSERT INTO ap_guarded VALUES (8)"))
        rejected = read_hold_notice(c)
        admin_cmd(p, "DENY %d 'not today'" % rejected)
        assert errors(c.read_until({b"Z"}, 10))[0]["C"] == "42501"

    def trail():
        recs = p.records()
        approvals_ = {r["id"]: r for r in recs if r["event"] == "approval"}
        stmts = [r for r in recs if r["event"] == "statement" and "ap_guarded" in (r.get("sql") or "")]
        return recs, approvals_, stmts

    wait_until(lambda: len(trail()[1]) == 2 and len(trail()[2]) == 2, what="approval records")
    _recs, approvals_, stmts = trail()
    assert approvals_[str(approved)]["decision"] == "approved"
    assert approvals_[str(approved)]["reviewer"] == "admin"
    assert approvals_[str(rejected)]["decision"] == "rejected"
    assert all(a["waited_ms"] >= 0 and a["session"] for a in approvals_.values())
    assert [s["decision"] for s in stmts] == ["approved", "rejected"]
    assert stmts[0]["rows"] == 1 and stmts[0]["sql"] == "INSERT INTO ap_guarded VALUES ($1)"
    assert count(pg) == 1
    verify = subprocess.run([PGMOAT_BIN, "audit", "verify", str(p.audit_path)],
                            capture_output=True, text=True, timeout=30)
    assert verify.returncode == 0, verify.stdout + verify.stderr
