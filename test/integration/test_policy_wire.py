"""
Lua policy decisions enforced on the wire (issue 4, points 2, 3, 6, 7).

pgmoat-only: every proxy here is started from the native YAML with a
`policy:` block (conftest.YamlProxy). Each test checks what the client sees
(exact protocol messages where it matters) and what PostgreSQL itself did
(side effects read directly from the server, not through the proxy).
"""

import contextlib
import os
import re
import shutil
import socket
import struct
import subprocess
import time

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest

from conftest import (
    IS_PGBOUNCER, PGMOAT_BIN, REPO, Bg, ConnectionClosed, LoginError, RawConn, bind_msg,
    data_row_values, describe_msg, execute_msg, msg, parse_error_fields, parse_msg, pgbench,
    query_msg, raw_login, sync_msg, wait_until,
)

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="policies are pgmoat-only")

POLICIES_DIR = REPO / "policies"

# Denies DROP (by the parser's kind), denies any statement naming the table
# pw_denied (by q.tables), rewrites any statement naming pw_answer_src.
WIRE_POLICY = """\
local moat = require "moat"
local P = {}

local function names(q, t)
	for _, name in ipairs(q.tables) do
		if name == t or name == "public." .. t then return true end
	end
	return false
end

function P.on_query(s, q)
	if q.kind == "drop" then
		return moat.deny("no drops")
	end
	if names(q, "pw_denied") then
		return moat.deny("pw_denied is off limits")
	end
	if names(q, "pw_answer_src") then
		return moat.rewrite("select 42 as answer")
	end
	if names(q, "pw_txonly") and not q.in_transaction then
		return moat.deny("pw_txonly needs a transaction")
	end
end

return P
"""

ALLOW_UNPARSED_POLICY = """\
local moat = require "moat"
local P = {}
P.allow_unparsed = true
function P.on_query(s, q)
	if q.kind == "unknown" and string.find(q.sql, "pw_block", 1, true) then
		return moat.deny("unknown and blocked")
	end
end
return P
"""

# Line numbers matter: the log must name failclosed.lua:<line of error()>.
FAIL_CLOSED_POLICY = """\
local P = {}
local function hog()
	local t = {}
	for i = 1, 100000000 do t[i] = string.rep("x", 512) .. i end
	return t
end
function P.on_query(s, q)
	if string.find(q.sql, "pw_boom", 1, true) then
		error("policy exploded")
	end
	if string.find(q.sql, "pw_spin_pcall", 1, true) then
		while true do pcall(function() while true do end end) end
	end
	if string.find(q.sql, "pw_spin", 1, true) then
		while true do end
	end
	if string.find(q.sql, "pw_hog", 1, true) then
		hog()
	end
end
return P
"""
FAIL_CLOSED_ERROR_LINE = FAIL_CLOSED_POLICY.splitlines().index('\t\terror("policy exploded")') + 1

BROKEN_POLICY = """\
local moat = require "moat"
local P = {}
function P.on_query(s, q)
	if q.kind == "drop" then
		return moat.deny("no drops"
	end
end
return P
"""
# Lua reports the error where it notices it: the line after the missing ')'.
BROKEN_POLICY_LINES = (5, 6)


# ---------------------------------------------------------------- helpers

def pgx(pg, sql, args=None):
    """Run SQL directly on PostgreSQL (database app), not through the proxy."""
    return pg.sql(sql, args, db="app")


def fresh_table(pg, name, rows=0):
    pgx(pg, "DROP TABLE IF EXISTS %s; CREATE TABLE %s (id int, tag text); "
            "GRANT ALL ON %s TO PUBLIC" % (name, name, name))
    if rows:
        pgx(pg, "INSERT INTO %s SELECT g, 'row ' || g FROM generate_series(1, %d) g"
            % (name, rows))


def table_exists(pg, name):
    return pgx(pg, "select to_regclass(%s) is not null", (name,))[0][0]


def tags(pg, table):
    return sorted(r[0] for r in pgx(pg, "select tag from %s" % table))


def types(msgs):
    return [t for t, _ in msgs]


def errors(msgs):
    return [parse_error_fields(p) for t, p in msgs if t == b"E"]


def rfq_status(msgs):
    assert msgs and msgs[-1][0] == b"Z", "no ReadyForQuery at the end: %r" % types(msgs)
    return msgs[-1][1][:1]


def assert_denied(msgs, text=None, status=b"I"):
    """Exactly ErrorResponse 42501 (with text) then ReadyForQuery(status)."""
    assert types(msgs) == [b"E", b"Z"], "expected only E, Z; got %r (%r)" % (
        types(msgs), errors(msgs))
    f = parse_error_fields(msgs[0][1])
    assert f.get("C") == "42501", f
    if text is not None:
        assert text in f.get("M", ""), f
    assert rfq_status(msgs) == status


def simple(c, sql, timeout=10):
    return c.simple_query(sql, timeout)


def extended(c, *msgs_out, timeout=10):
    """Send the given extended-protocol messages plus Sync; messages up to ReadyForQuery."""
    c.send(b"".join(msgs_out) + sync_msg())
    return c.read_until({b"Z"}, timeout)


def pbe(sql, name=""):
    return parse_msg(sql, name) + bind_msg(stmt=name) + execute_msg()


def pbde(sql):
    return parse_msg(sql) + bind_msg() + describe_msg(b"P") + execute_msg()


def assert_serves(p, user="app", db="app"):
    assert p.query("select 41 + 1", user, db) == [(42,)]


@contextlib.contextmanager
def raw(p, user="app", db="app"):
    c = raw_login(p, user, db)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def wire(policy_proxy):
    return policy_proxy(policies={"wire.lua": WIRE_POLICY})


# ---------------------------------------------------------------- simple protocol: deny

def test_simple_deny_gives_42501_with_message_and_does_not_run(pg, wire):
    fresh_table(pg, "pw_scratch")
    with raw(wire) as c:
        assert_denied(simple(c, "DROP TABLE pw_scratch"), "no drops", b"I")
        assert table_exists(pg, "pw_scratch")
        # the session goes on normally
        out = simple(c, "select 7")
        assert types(out) == [b"T", b"D", b"C", b"Z"], types(out)
        assert data_row_values(out[1][1]) == ["7"]


def test_simple_deny_seen_by_psycopg2_as_insufficient_privilege(pg, wire):
    fresh_table(pg, "pw_scratch2")
    with contextlib.closing(wire.connect(autocommit=True)) as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege) as ei:
            cur.execute("DROP TABLE pw_scratch2")
        assert "no drops" in ei.value.pgerror
        assert ei.value.pgcode == "42501"
        assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        cur.execute("select 1")
        assert cur.fetchall() == [(1,)]
    assert table_exists(pg, "pw_scratch2")


def test_simple_deny_by_table_name_in_subquery(pg, wire):
    fresh_table(pg, "pw_denied", rows=3)
    fresh_table(pg, "pw_log")
    with raw(wire) as c:
        # the denied table is named only inside a subquery of an INSERT
        out = simple(c, "INSERT INTO pw_log SELECT id, 'leak' FROM "
                        "(SELECT id FROM pw_denied) s")
        assert_denied(out, "pw_denied is off limits")
    assert tags(pg, "pw_log") == []


def test_deny_inside_transaction_aborts_it_on_both_sides(pg, wire):
    fresh_table(pg, "pw_scratch3")
    fresh_table(pg, "pw_log3")
    with raw(wire) as c:
        assert rfq_status(simple(c, "BEGIN")) == b"T"
        out = simple(c, "INSERT INTO pw_log3 VALUES (1, 'in tx')")
        assert types(out) == [b"C", b"Z"] and rfq_status(out) == b"T"
        assert_denied(simple(c, "DROP TABLE pw_scratch3"), "no drops", b"E")
        # the server's transaction is aborted too, not only the client's view
        wait_until(lambda: any(r["state"] == "idle in transaction (aborted)"
                               for r in pg.activity(usename="app", datname="app", proxy=wire)),
                   5, what="server backend in aborted transaction")
        out = simple(c, "select 1")
        errs = errors(out)
        assert errs and errs[0].get("C") == "25P02", errs
        assert rfq_status(out) == b"E"
        out = simple(c, "ROLLBACK")
        assert not errors(out) and rfq_status(out) == b"I"
        out = simple(c, "select 2")
        assert data_row_values(out[1][1]) == ["2"] and rfq_status(out) == b"I"
    assert tags(pg, "pw_log3") == []
    assert table_exists(pg, "pw_scratch3")


def test_deny_inside_transaction_with_psycopg2(pg, wire):
    fresh_table(pg, "pw_scratch4")
    fresh_table(pg, "pw_log4")
    with contextlib.closing(wire.connect()) as conn:
        cur = conn.cursor()
        cur.execute("INSERT INTO pw_log4 VALUES (1, 'in tx')")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("DROP TABLE pw_scratch4")
        assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_INERROR
        with pytest.raises(psycopg2.errors.InFailedSqlTransaction):
            cur.execute("select 1")
        conn.rollback()
        cur.execute("select 3")
        assert cur.fetchall() == [(3,)]
    assert tags(pg, "pw_log4") == []


def test_multi_statement_query_with_one_denied_runs_none(pg, wire):
    fresh_table(pg, "pw_scratch5")
    fresh_table(pg, "pw_log5")
    with raw(wire) as c:
        out = simple(c, "INSERT INTO pw_log5 VALUES (1, 'first'); DROP TABLE pw_scratch5; "
                        "INSERT INTO pw_log5 VALUES (2, 'third')")
        assert_denied(out, "no drops", b"I")
        # the denied statement is last: still nothing runs
        out = simple(c, "INSERT INTO pw_log5 VALUES (3, 'a'); UPDATE pw_log5 SET tag = 'b'; "
                        "DROP TABLE pw_scratch5")
        assert_denied(out, "no drops", b"I")
    assert tags(pg, "pw_log5") == []
    assert table_exists(pg, "pw_scratch5")


# ---------------------------------------------------------------- extended protocol: deny

def test_extended_denied_parse_discards_until_sync(pg, wire):
    fresh_table(pg, "pw_scratch6")
    fresh_table(pg, "pw_log6")
    with raw(wire) as c:
        out = extended(c, parse_msg("DROP TABLE pw_scratch6"), bind_msg(),
                       describe_msg(b"P"), execute_msg(),
                       pbe("INSERT INTO pw_log6 VALUES (1, 'after')"),
                       pbde("select 99"))
        assert_denied(out, "no drops", b"I")
        # two denied statements in one batch: one error, as from the server
        out = extended(c, pbe("DROP TABLE pw_scratch6"),
                       pbe("INSERT INTO pw_log6 VALUES (2, 'between')"),
                       pbe("DROP TABLE pw_log6"))
        assert_denied(out, "no drops", b"I")
        # the connection then works normally
        out = extended(c, pbde("select 5"))
        assert types(out) == [b"1", b"2", b"T", b"D", b"C", b"Z"], types(out)
        assert data_row_values(out[3][1]) == ["5"] and rfq_status(out) == b"I"
    assert table_exists(pg, "pw_scratch6")
    assert tags(pg, "pw_log6") == []


def test_extended_pipeline_allowed_then_denied(pg, wire):
    fresh_table(pg, "pw_scratch7")
    with raw(wire) as c:
        out = extended(c, pbe("select 11"), pbe("DROP TABLE pw_scratch7"),
                       pbe("select 12"))
        assert types(out) == [b"1", b"2", b"D", b"C", b"E", b"Z"], (types(out), errors(out))
        assert data_row_values(out[2][1]) == ["11"]
        f = errors(out)[0]
        assert f.get("C") == "42501" and "no drops" in f.get("M", ""), f
        assert rfq_status(out) == b"I"
        out = extended(c, pbe("select 13"))
        assert types(out) == [b"1", b"2", b"D", b"C", b"Z"], types(out)
        assert data_row_values(out[2][1]) == ["13"]
        out = simple(c, "select 14")
        assert data_row_values(out[1][1]) == ["14"]
    assert table_exists(pg, "pw_scratch7")


def test_extended_pipeline_denied_rolls_back_implicit_transaction(pg, wire):
    # PostgreSQL runs everything up to Sync in one implicit transaction; an
    # error anywhere in it rolls back the statements before it too.
    fresh_table(pg, "pw_log8")
    with raw(wire) as c:
        out = extended(c, pbe("INSERT INTO pw_log8 VALUES (1, 'before')"),
                       pbe("DROP TABLE pw_log8"))
        assert types(out) == [b"1", b"2", b"C", b"E", b"Z"], (types(out), errors(out))
        assert errors(out)[0].get("C") == "42501"
        assert rfq_status(out) == b"I"
    assert tags(pg, "pw_log8") == []


def test_extended_deny_inside_transaction_leaves_it_aborted(pg, wire):
    fresh_table(pg, "pw_scratch9")
    fresh_table(pg, "pw_log9")
    with raw(wire) as c:
        assert rfq_status(simple(c, "BEGIN")) == b"T"
        out = extended(c, pbe("INSERT INTO pw_log9 VALUES (1, 'in tx')"))
        assert types(out) == [b"1", b"2", b"C", b"Z"] and rfq_status(out) == b"T"
        out = extended(c, pbe("select 1"), pbe("DROP TABLE pw_scratch9"))
        assert types(out) == [b"1", b"2", b"D", b"C", b"E", b"Z"], (types(out), errors(out))
        assert errors(out)[0].get("C") == "42501"
        assert rfq_status(out) == b"E"
        out = extended(c, pbe("select 2"))
        assert errors(out) and errors(out)[0].get("C") == "25P02", (types(out), errors(out))
        assert rfq_status(out) == b"E"
        out = simple(c, "ROLLBACK")
        assert rfq_status(out) == b"I"
    assert tags(pg, "pw_log9") == []
    assert table_exists(pg, "pw_scratch9")


def test_denied_named_statement_cannot_be_executed_later(pg, wire):
    fresh_table(pg, "pw_scratch10")
    with raw(wire) as c:
        assert_denied(extended(c, parse_msg("DROP TABLE pw_scratch10", "s_drop")), "no drops")
        out = extended(c, bind_msg(stmt="s_drop"), execute_msg())
        f = errors(out)
        # the statement does not exist on the server (26000), whatever the wording
        assert f and f[0].get("C") != "00000", types(out)
        assert b"C" not in types(out), types(out)
    assert table_exists(pg, "pw_scratch10")


def test_deny_in_transaction_then_commit_rolls_back(pg, wire):
    # as if the statement had failed: COMMIT of an aborted transaction is a ROLLBACK
    fresh_table(pg, "pw_log13")
    with raw(wire) as c:
        simple(c, "BEGIN")
        simple(c, "INSERT INTO pw_log13 VALUES (1, 'in tx')")
        assert_denied(simple(c, "DROP TABLE pw_log13"), "no drops", b"E")
        out = simple(c, "COMMIT")
        assert types(out) == [b"C", b"Z"], (types(out), errors(out))
        assert out[0][1].rstrip(b"\0") == b"ROLLBACK"
        assert rfq_status(out) == b"I"
    assert tags(pg, "pw_log13") == []


def test_sql_level_prepare_and_cursor_cannot_bypass(pg, wire):
    fresh_table(pg, "pw_denied", rows=3)
    with raw(wire) as c:
        assert_denied(simple(c, "PREPARE sneaky AS SELECT * FROM pw_denied"), "off limits")
        out = simple(c, "EXECUTE sneaky")
        assert errors(out) and b"D" not in types(out), types(out)
        simple(c, "BEGIN")
        assert_denied(simple(c, "DECLARE cur CURSOR FOR SELECT * FROM pw_denied"),
                      "off limits", b"E")
        simple(c, "ROLLBACK")
        assert_denied(simple(c, "WITH x AS (SELECT * FROM pw_denied) SELECT count(*) FROM x"),
                      "off limits")


def test_in_transaction_flag_reaches_the_policy(pg, wire):
    fresh_table(pg, "pw_txonly", rows=2)
    with raw(wire) as c:
        assert_denied(simple(c, "SELECT count(*) FROM pw_txonly"), "needs a transaction")
        assert_denied(extended(c, pbe("SELECT count(*) FROM pw_txonly")), "needs a transaction")
        assert rfq_status(simple(c, "BEGIN")) == b"T"
        out = simple(c, "SELECT count(*) FROM pw_txonly")
        assert types(out) == [b"T", b"D", b"C", b"Z"], (types(out), errors(out))
        assert data_row_values(out[1][1]) == ["2"]
        out = extended(c, pbe("SELECT count(*) FROM pw_txonly"))
        assert types(out) == [b"1", b"2", b"D", b"C", b"Z"], (types(out), errors(out))
        assert rfq_status(out) == b"T"
        assert rfq_status(simple(c, "COMMIT")) == b"I"
        assert_denied(simple(c, "SELECT count(*) FROM pw_txonly"), "needs a transaction")


def test_denial_lands_in_its_own_batch_when_pipelined(pg, wire):
    fresh_table(pg, "pw_scratch14")
    with raw(wire) as c:
        c.send(pbe("DROP TABLE pw_scratch14") + sync_msg() + pbe("select 31") + sync_msg()
               + query_msg("select 32") + pbe("DROP TABLE pw_scratch14") + sync_msg()
               + pbe("select 33") + sync_msg())
        out = []
        for _ in range(5):
            out.append(c.read_until({b"Z"}, 10))
        assert_denied(out[0], "no drops")
        assert types(out[1]) == [b"1", b"2", b"D", b"C", b"Z"], (types(out[1]), errors(out[1]))
        assert data_row_values(out[1][2][1]) == ["31"]
        assert types(out[2]) == [b"T", b"D", b"C", b"Z"], types(out[2])
        assert data_row_values(out[2][1][1]) == ["32"]
        assert_denied(out[3], "no drops")
        assert types(out[4]) == [b"1", b"2", b"D", b"C", b"Z"], (types(out[4]), errors(out[4]))
        assert data_row_values(out[4][2][1]) == ["33"]
    assert table_exists(pg, "pw_scratch14")


def test_server_error_before_denied_statement_in_same_batch(pg, wire):
    # the server's own error comes first and discards the rest of the batch;
    # no 42501 may leak into this batch or the next one
    fresh_table(pg, "pw_scratch15")
    fresh_table(pg, "pw_zero", rows=1)
    with raw(wire) as c:
        # fails at Execute (not foldable at Bind): 1/(1-1)
        out = extended(c, pbe("select 1/(id-1) from pw_zero"), pbe("DROP TABLE pw_scratch15"))
        assert types(out) == [b"1", b"2", b"E", b"Z"], (types(out), errors(out))
        assert errors(out)[0].get("C") == "22012", errors(out)
        for i in range(3):
            out = extended(c, pbe("select %d" % (40 + i)))
            assert types(out) == [b"1", b"2", b"D", b"C", b"Z"], (types(out), errors(out))
            assert data_row_values(out[2][1]) == [str(40 + i)]
        out = simple(c, "select 1/(id-1) from pw_zero; DROP TABLE pw_scratch15")
        # denied whole: the policy answers before the server sees anything
        assert_denied(out, "no drops")
        out = simple(c, "select 50")
        assert types(out) == [b"T", b"D", b"C", b"Z"], (types(out), errors(out))
    assert table_exists(pg, "pw_scratch15")


def test_extended_denied_parse_error_arrives_on_flush(pg, wire):
    # a server sends the error as soon as it happens; a client that Flushes
    # (no Sync yet) waits for it
    fresh_table(pg, "pw_scratch16")
    with raw(wire) as c:
        c.send(parse_msg("DROP TABLE pw_scratch16") + msg(b"H"))
        t, p = c.recv_msg(5)
        assert t == b"E", t
        assert parse_error_fields(p).get("C") == "42501"
        c.send(bind_msg() + execute_msg() + sync_msg())
        out = c.read_until({b"Z"}, 5)
        assert types(out) == [b"Z"], types(out)
        assert rfq_status(out) == b"I"
        out = extended(c, pbe("select 3"))
        assert types(out) == [b"1", b"2", b"D", b"C", b"Z"], types(out)
    assert table_exists(pg, "pw_scratch16")


def test_deny_in_already_aborted_transaction(pg, wire):
    fresh_table(pg, "pw_scratch17")
    fresh_table(pg, "pw_zero", rows=1)
    with raw(wire) as c:
        simple(c, "BEGIN")
        out = simple(c, "select 1/(id-1) from pw_zero")
        assert errors(out)[0].get("C") == "22012" and rfq_status(out) == b"E"
        out = simple(c, "DROP TABLE pw_scratch17")
        # the server would say 25P02 here; a policy denial is fine too
        assert types(out) == [b"E", b"Z"], types(out)
        assert errors(out)[0].get("C") in ("42501", "25P02"), errors(out)
        assert rfq_status(out) == b"E"
        out = extended(c, pbe("DROP TABLE pw_scratch17"))
        assert types(out) == [b"E", b"Z"], types(out)
        assert errors(out)[0].get("C") in ("42501", "25P02"), errors(out)
        assert rfq_status(out) == b"E"
        assert rfq_status(simple(c, "ROLLBACK")) == b"I"
        # later errors are the server's own, not a stale denial
        out = simple(c, "select 1/(id-1) from pw_zero")
        assert errors(out)[0].get("C") == "22012", errors(out)
        out = extended(c, pbe("EXECUTE no_such_statement"))
        assert errors(out)[0].get("C") == "26000", errors(out)
        out = simple(c, "select 4")
        assert types(out) == [b"T", b"D", b"C", b"Z"], (types(out), errors(out))
    assert table_exists(pg, "pw_scratch17")


@pytest.mark.parametrize("pool_mode", ["session", "transaction", "statement"])
def test_deny_in_each_pool_mode(pg, policy_proxy, pool_mode):
    fresh_table(pg, "pw_scratch18")
    p = policy_proxy(policies={"wire.lua": WIRE_POLICY}, settings={"pool_mode": pool_mode})
    with raw(p) as c:
        assert_denied(simple(c, "DROP TABLE pw_scratch18"), "no drops")
        assert_denied(extended(c, pbe("DROP TABLE pw_scratch18")), "no drops")
        out = extended(c, pbe("select 6"))
        assert types(out) == [b"1", b"2", b"D", b"C", b"Z"], (types(out), errors(out))
        out = simple(c, "select 7")
        assert types(out) == [b"T", b"D", b"C", b"Z"], (types(out), errors(out))
    assert table_exists(pg, "pw_scratch18")
    assert_serves(p)


@pytest.mark.parametrize("sql,denied", [
    ("  drop   table pw_spell", True),
    ("/* harmless */ DrOp TaBlE pw_spell", True),
    ("DROP TABLE pw_spell -- just a comment", True),
    ("select 'DROP TABLE pw_spell'", False),
    ("select 1 /* ; DROP TABLE pw_spell */", False),
    ("select $q$; DROP TABLE pw_spell; $q$", False),
])
def test_classification_follows_the_parser_not_the_text(pg, wire, sql, denied):
    fresh_table(pg, "pw_spell")
    with raw(wire) as c:
        out = simple(c, sql)
        if denied:
            assert_denied(out, "no drops")
        else:
            assert types(out) == [b"T", b"D", b"C", b"Z"], (types(out), errors(out))
    assert table_exists(pg, "pw_spell")


def test_prepared_statement_reexecuted_many_times(pg, policy_proxy):
    p = policy_proxy(policies={"wire.lua": WIRE_POLICY}, settings={"pool_mode": "session"})
    with raw(p) as c:
        out = extended(c, parse_msg("select $1::int * 2", "dbl"))
        assert types(out) == [b"1", b"Z"], (types(out), errors(out))
        batch = b"".join(bind_msg([i], stmt="dbl") + execute_msg() for i in range(200))
        out = extended(c, batch, timeout=20)
        rows = [data_row_values(pl)[0] for t, pl in out if t == b"D"]
        assert rows == [str(2 * i) for i in range(200)], (types(out)[:10], errors(out))
        # a denied named statement stays unusable however often it is tried
        assert_denied(extended(c, parse_msg("DROP TABLE pw_denied", "drop_it")), "no drops")
        for _ in range(3):
            out = extended(c, bind_msg(stmt="drop_it") + execute_msg())
            assert errors(out) and b"C" not in types(out), types(out)


@pytest.mark.timeout(60)
def test_denial_outside_transaction_needs_no_server_connection(pg, policy_proxy):
    # every server connection is busy: a statement the policy denies outside
    # a transaction is answered at once, without waiting for a server
    fresh_table(pg, "pw_scratch22")
    p = policy_proxy(policies={"wire.lua": WIRE_POLICY},
                     settings={"default_pool_size": "1", "query_wait_timeout": "20"})
    with raw(p) as holder, raw(p) as c:
        assert rfq_status(simple(holder, "BEGIN")) == b"T"
        simple(holder, "select 1")
        t0 = time.monotonic()
        try:
            assert_denied(simple(c, "DROP TABLE pw_scratch22", timeout=8), "no drops")
            assert_denied(extended(c, pbe("DROP TABLE pw_scratch22"), timeout=8), "no drops")
        except socket.timeout:
            raise AssertionError("no answer to a denied statement while the only server "
                                 "connection is busy: the denial waits for a server") from None
        assert time.monotonic() - t0 < 3, "denial waited %.1fs for a server" % (
            time.monotonic() - t0)
        simple(holder, "ROLLBACK")
    assert table_exists(pg, "pw_scratch22")


@pytest.mark.timeout(60)
def test_allowed_statement_waits_for_a_server_and_goes_first(policy_proxy):
    # an allowed statement judged while every server is busy waits in the
    # client's input; what the client pipelines behind it, and a rewrite judged
    # the same way, follow in order once a server is free
    p = policy_proxy(policies={"wire.lua": WIRE_POLICY},
                     settings={"default_pool_size": "1", "query_wait_timeout": "20"})
    with raw(p) as holder, raw(p) as c:
        assert rfq_status(simple(holder, "BEGIN")) == b"T"
        simple(holder, "select 1")
        c.send(query_msg("select 'first'") + parse_msg("select 'second'") + bind_msg() +
               execute_msg() + sync_msg() + query_msg("select * from pw_answer_src"))
        time.sleep(0.5)
        simple(holder, "COMMIT")
        first = c.read_until({b"Z"}, 10)
        second = c.read_until({b"Z"}, 10)
        third = c.read_until({b"Z"}, 10)
        rows = [data_row_values(m[1]) for out in (first, second, third) for m in out if m[0] == b"D"]
        assert rows == [["first"], ["second"], ["42"]], (first, second, third)


def test_denial_after_large_result_in_same_batch(pg, wire):
    fresh_table(pg, "pw_scratch23")
    with raw(wire) as c:
        c.send(pbe("select g, repeat('y', 100) from generate_series(1, 50000) g")
               + pbe("DROP TABLE pw_scratch23") + sync_msg() + query_msg("select 77"))
        out = c.read_until({b"Z"}, 30)
        t = types(out)
        assert t[:2] == [b"1", b"2"] and t[-3:] == [b"C", b"E", b"Z"], (t[:3], t[-4:])
        assert t.count(b"D") == 50000
        assert errors(out)[0].get("C") == "42501"
        out = c.read_until({b"Z"}, 10)
        assert types(out) == [b"T", b"D", b"C", b"Z"], (types(out), errors(out))
        assert data_row_values(out[1][1]) == ["77"]
    assert table_exists(pg, "pw_scratch23")


@pytest.mark.parametrize("sql", ["", ";", "-- only a comment", " /* nothing */ "])
def test_empty_query_still_answered_under_policy(wire, sql):
    # clients ping with an empty query (JDBC isValid, pgbouncer's own checks)
    with raw(wire) as c:
        out = simple(c, sql)
        assert types(out) == [b"I", b"Z"], (types(out), errors(out))
        out = extended(c, pbe(sql))
        assert types(out) == [b"1", b"2", b"I", b"Z"], (types(out), errors(out))


def test_copy_under_policy(pg, wire):
    import io
    fresh_table(pg, "pw_copy")
    fresh_table(pg, "pw_denied")
    with contextlib.closing(wire.connect(autocommit=True)) as conn, conn.cursor() as cur:
        # CopyData is data, not SQL: text that looks like a statement passes
        cur.copy_expert("COPY pw_copy FROM STDIN", io.StringIO("1\tDROP TABLE pw_copy\n2\tb\n"))
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.copy_expert("COPY pw_denied FROM STDIN", io.StringIO("1\tx\n"))
        buf = io.StringIO()
        cur.copy_expert("COPY pw_copy TO STDOUT", buf)
        assert sorted(buf.getvalue().splitlines()) == ["1\tDROP TABLE pw_copy", "2\tb"]
        cur.execute("select 1")
        assert cur.fetchall() == [(1,)]
    assert tags(pg, "pw_denied") == []
    assert tags(pg, "pw_copy") == ["DROP TABLE pw_copy", "b"]


def test_parse_with_two_statements_cannot_smuggle_a_denied_one(pg, wire):
    fresh_table(pg, "pw_scratch24")
    with raw(wire) as c:
        out = extended(c, pbe("select 1; DROP TABLE pw_scratch24"))
        assert types(out) == [b"E", b"Z"], (types(out), errors(out))
        assert errors(out)[0].get("C") in ("42501", "42601"), errors(out)
    assert table_exists(pg, "pw_scratch24")


# ---------------------------------------------------------------- rewrite

def test_rewrite_simple_protocol(pg, wire):
    fresh_table(pg, "pw_answer_src", rows=5)
    with contextlib.closing(wire.connect(autocommit=True)) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM pw_answer_src")
        assert [d[0] for d in cur.description] == ["answer"]
        assert cur.fetchall() == [(42,)]
        cur.execute("select 1")  # untouched statements pass through
        assert cur.fetchall() == [(1,)]


def test_rewrite_extended_protocol(pg, wire):
    fresh_table(pg, "pw_answer_src", rows=5)
    with raw(wire) as c:
        out = extended(c, pbde("SELECT id FROM pw_answer_src"))
        assert types(out) == [b"1", b"2", b"T", b"D", b"C", b"Z"], (types(out), errors(out))
        assert b"answer" in out[2][1]
        assert data_row_values(out[3][1]) == ["42"]


def test_rewrite_psycopg2_with_parameters(pg, wire):
    fresh_table(pg, "pw_answer_src", rows=5)
    with contextlib.closing(wire.connect(autocommit=True)) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM pw_answer_src WHERE id > %s", (0,))
        assert cur.fetchall() == [(42,)]


def test_rewrite_in_multi_statement_query(pg, wire):
    fresh_table(pg, "pw_answer_src", rows=5)
    with raw(wire) as c:
        out = simple(c, "select 1 as one; SELECT id FROM pw_answer_src WHERE id = 3")
        assert types(out) == [b"T", b"D", b"C", b"T", b"D", b"C", b"Z"], (types(out), errors(out))
        assert data_row_values(out[1][1]) == ["1"]
        assert b"answer" in out[3][1]
        assert data_row_values(out[4][1]) == ["42"]


def test_rewrite_logs_original_and_rewritten_sql(pg, wire):
    fresh_table(pg, "pw_answer_src", rows=5)
    with raw(wire) as c:
        out = simple(c, "SELECT id FROM pw_answer_src WHERE id = 4")
        assert data_row_values(out[1][1]) == ["42"]
    wire.wait_log(r"pw_answer_src WHERE id = 4", 5)
    wire.wait_log(r"select 42 as answer", 5)


def test_rewrite_of_named_statement_reexecuted(pg, policy_proxy):
    fresh_table(pg, "pw_answer_src", rows=5)
    p = policy_proxy(policies={"wire.lua": WIRE_POLICY}, settings={"pool_mode": "session"})
    with raw(p) as c:
        out = extended(c, parse_msg("SELECT id FROM pw_answer_src", "ans"))
        assert types(out) == [b"1", b"Z"], (types(out), errors(out))
        out = extended(c, *[bind_msg(stmt="ans") + execute_msg() for _ in range(5)])
        rows = [data_row_values(pl) for t, pl in out if t == b"D"]
        assert rows == [["42"]] * 5, (types(out), errors(out))


CHAIN_REWRITE = """\
local moat = require "moat"
local P = {}
function P.on_query(s, q)
	for _, t in ipairs(q.tables) do
		if t == "pw_chain_src" then return moat.rewrite("DROP TABLE pw_chain_victim") end
	end
end
return P
"""


def test_rewrite_is_judged_by_the_later_policies(pg, policy_proxy):
    fresh_table(pg, "pw_chain_src", rows=1)
    fresh_table(pg, "pw_chain_victim")
    p = policy_proxy(policies={"a_rewrite.lua": CHAIN_REWRITE, "b_wire.lua": WIRE_POLICY})
    with raw(p) as c:
        assert_denied(simple(c, "SELECT * FROM pw_chain_src"), "no drops")
        assert_denied(extended(c, pbe("SELECT * FROM pw_chain_src")), "no drops")
    assert table_exists(pg, "pw_chain_victim")


# ---------------------------------------------------------------- unclassifiable SQL

def test_syntax_error_is_denied_by_default(pg, wire):
    with raw(wire) as c:
        assert_denied(simple(c, "SELEC 1 FROM"), None, b"I")
        assert_denied(extended(c, pbe("SELEC 1 FROM")), None, b"I")
        assert data_row_values(simple(c, "select 1")[1][1]) == ["1"]


def test_syntax_error_reaches_server_with_allow_unparsed(pg, policy_proxy):
    p = policy_proxy(policies={"unparsed.lua": ALLOW_UNPARSED_POLICY})
    with raw(p) as c:
        # on_query sees the unparsed statement as kind "unknown"
        assert_denied(simple(c, "SELEC pw_block FROM"), "unknown and blocked")
        assert_denied(extended(c, pbe("SELEC pw_block FROM")), "unknown and blocked")
        out = simple(c, "SELEC 1 FROM")
        assert types(out) == [b"E", b"Z"], types(out)
        assert errors(out)[0].get("C") == "42601", errors(out)
        out = extended(c, pbe("SELEC 1 FROM"))
        assert types(out) == [b"E", b"Z"], types(out)
        assert errors(out)[0].get("C") == "42601", errors(out)
    with contextlib.closing(p.connect(autocommit=True)) as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.SyntaxError):
            cur.execute("SELEC 1 FROM")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("shape", ["sum_400k", "parens_deep", "over_1mb"])
def test_unclassifiable_huge_or_deep_statement_denied(pg, wire, shape):
    sql = {
        "sum_400k": "select " + "1+" * 200000 + "1",
        "parens_deep": "select " + "(" * 20000 + "1" + ")" * 20000,
        "over_1mb": "select '" + "x" * (1100 * 1024) + "'",
    }[shape]
    with raw(wire) as c:
        assert_denied(simple(c, sql, timeout=30), None, b"I")
        assert data_row_values(simple(c, "select 1")[1][1]) == ["1"]
    assert wire.alive()
    assert_serves(wire)


# ---------------------------------------------------------------- FunctionCall

def function_call_msg(oid, args=()):
    body = struct.pack("!IH", oid, 0) + struct.pack("!H", len(args))
    for a in args:
        b = str(a).encode()
        body += struct.pack("!I", len(b)) + b
    body += struct.pack("!H", 0)
    return msg(b"F", body)


def test_function_call_denied_when_a_policy_is_loaded(pg, wire):
    oid = pgx(pg, "select 'pg_backend_pid'::regproc::oid")[0][0]
    with raw(wire) as c:
        c.send(function_call_msg(oid))
        out = c.read_until({b"Z"}, 10)
        assert_denied(out, None, b"I")
        assert data_row_values(simple(c, "select 8")[1][1]) == ["8"]


# ---------------------------------------------------------------- fail closed

@pytest.fixture
def failclosed(policy_proxy):
    return policy_proxy(policies={"failclosed.lua": FAIL_CLOSED_POLICY},
                        policy_settings={"time_budget": "50ms", "memory_limit": "16MB"})


def test_policy_error_denies_and_logs_file_line(pg, failclosed):
    fresh_table(pg, "pw_log11")
    with raw(failclosed) as c:
        assert_denied(simple(c, "INSERT INTO pw_log11 VALUES (1, 'pw_boom')"), None, b"I")
        assert_denied(extended(c, pbe("INSERT INTO pw_log11 VALUES (2, 'pw_boom')")), None, b"I")
        assert data_row_values(simple(c, "select 1")[1][1]) == ["1"]
    assert tags(pg, "pw_log11") == []
    failclosed.wait_log(r"failclosed\.lua:%d\b" % FAIL_CLOSED_ERROR_LINE, 5)


@pytest.mark.parametrize("marker", ["pw_spin", "pw_spin_pcall", "pw_hog"])
@pytest.mark.timeout(60)
def test_runaway_policy_denied_and_others_served(pg, failclosed, marker):
    table = "pw_run_" + marker[len("pw_"):]  # must not contain the marker itself
    fresh_table(pg, table)
    sql = "INSERT INTO %s VALUES (1, '%s')" % (table, marker)

    def runaway():
        with raw(failclosed) as c:
            t0 = time.monotonic()
            out = simple(c, sql, timeout=20)
            return out, time.monotonic() - t0, simple(c, "select 1")

    runs = [Bg(runaway) for _ in range(3)]
    # another client is served meanwhile and right after
    for _ in range(5):
        assert_serves(failclosed)
    for r in runs:
        out, elapsed, after = r.result(30)
        assert_denied(out, None, b"I")
        assert elapsed < 5, "runaway policy held the client %.1fs" % elapsed
        assert data_row_values(after[1][1]) == ["1"]
    assert failclosed.alive()
    assert_serves(failclosed)
    assert tags(pg, table) == []
    # the (recreated) state still judges: errors still deny, plain statements run
    with raw(failclosed) as c:
        assert_denied(simple(c, "INSERT INTO %s VALUES (2, 'pw_boom')" % table))
        out = simple(c, "INSERT INTO %s VALUES (3, 'fine')" % table)
        assert types(out) == [b"C", b"Z"], (types(out), errors(out))
    assert tags(pg, table) == ["fine"]


def watchdog_runs(pid):
    """How often the policy watchdog thread of process pid has run (its context switches)."""
    for task in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, task)) as f:
                if f.read().strip() != "pgmoat-watchdog":
                    continue
            with open("/proc/%d/task/%s/status" % (pid, task)) as f:
                return sum(int(line.split()[1]) for line in f
                           if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
    raise AssertionError("pgmoat (pid %d) has no thread named pgmoat-watchdog" % pid)


@pytest.mark.timeout(60)
def test_idle_watchdog_sleeps_and_still_stops_a_runaway_policy(pg, failclosed):
    """With policies loaded but no statement running, the watchdog thread does not wake
    (a sidecar's CPU stays quiet); the first runaway statement after is still stopped."""
    table = "pw_idle_wd"
    fresh_table(pg, table)
    with raw(failclosed) as c:
        assert data_row_values(simple(c, "select 1")[1][1]) == ["1"]
        time.sleep(0.3)  # (two looks find no call: it sleeps)
        before = watchdog_runs(failclosed.proc.pid)
        time.sleep(1.5)
        idle = watchdog_runs(failclosed.proc.pid) - before
        assert idle <= 2, "the idle watchdog ran %d times in 1.5 s" % idle
        t0 = time.monotonic()
        out = simple(c, "INSERT INTO %s VALUES (1, 'pw_spin')" % table, timeout=20)
        assert_denied(out, None, b"I")
        assert time.monotonic() - t0 < 5
        assert watchdog_runs(failclosed.proc.pid) > before + idle, "the statement did not wake it"
        assert data_row_values(simple(c, "select 2")[1][1]) == ["2"]
    assert tags(pg, table) == []


SPIN_CONNECT_POLICY = """\
local P = {}
function P.on_connect(s)
	if s.application_name == "spin_app" then
		while true do end
	end
end
return P
"""


@pytest.mark.timeout(60)
def test_runaway_on_connect_refuses_only_that_session(pg, policy_proxy):
    p = policy_proxy(policies={"spinconnect.lua": SPIN_CONNECT_POLICY},
                     policy_settings={"time_budget": "50ms"})
    t0 = time.monotonic()
    with pytest.raises(psycopg2.OperationalError):
        p.connect(application_name="spin_app").close()
    assert time.monotonic() - t0 < 5
    assert p.alive()
    assert_serves(p)


ODD_MESSAGES = """\
local moat = require "moat"
local P = {}
function P.on_query(s, q)
	if string.find(q.sql, "pw_longmsg", 1, true) then
		return moat.deny("line one\\nline two \\u{e9}t\\u{e9} " .. string.rep("x", 20000))
	end
	if string.find(q.sql, "pw_nomsg", 1, true) then
		return moat.deny()
	end
end
return P
"""


def test_deny_with_long_multiline_or_missing_message(pg, policy_proxy):
    p = policy_proxy(policies={"odd.lua": ODD_MESSAGES})
    with raw(p) as c:
        out = simple(c, "select 'pw_longmsg'")
        assert_denied(out)
        assert errors(out)[0]["M"].startswith("line one\nline two"), errors(out)[0]["M"][:80]
        out = simple(c, "select 'pw_nomsg'")
        assert_denied(out)
        assert errors(out)[0].get("M"), "a denial needs some message"
        out = simple(c, "select 1")
        assert data_row_values(out[1][1]) == ["1"]


# ---------------------------------------------------------------- sessions, pools, workers

CONNECT_POLICY = """\
local moat = require "moat"
local P = {}
function P.on_connect(s)
	if s.application_name == "blocked_app" then
		return moat.deny("blocked_app may not connect")
	end
end
function P.on_query(s, q)
	return moat.deny("nothing runs here")
end
return P
"""


def test_on_connect_deny_refuses_session(pg, policy_proxy):
    p = policy_proxy(policies={"connect.lua": CONNECT_POLICY})
    with pytest.raises(psycopg2.OperationalError) as ei:
        p.connect(application_name="blocked_app").close()
    assert "blocked_app may not connect" in str(ei.value)
    with contextlib.closing(p.connect(autocommit=True, application_name="fine_app")) as conn:
        with conn.cursor() as cur, pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("select 1")


def test_on_connect_deny_comes_after_authentication_ok_on_the_wire(pg, policy_proxy):
    # AuthenticationOk is held back for the welcome (conn7); a session the
    # policy refuses still gets it first, then the error, then EOF.
    p = policy_proxy(policies={"connect.lua": CONNECT_POLICY})
    c = RawConn(p.port)
    seen = []
    recv = c.recv_msg

    def recording(timeout=5.0):
        t, body = recv(timeout)
        seen.append((t, body))
        return t, body

    c.recv_msg = recording
    try:
        with pytest.raises(LoginError) as ei:
            c.login("app", "app", application_name="blocked_app")
        assert "blocked_app may not connect" in ei.value.fields.get("M", ""), ei.value.fields
        types = [t for t, _ in seen]
        assert types[-1] == b"E", types
        assert types[-2] == b"R" and seen[-2][1][:4] == b"\0\0\0\0", seen
        assert c.read_until_close() == (b"", True)
    finally:
        c.close()


def test_admin_console_is_not_subject_to_policies(pg, policy_proxy):
    p = policy_proxy(policies={"connect.lua": CONNECT_POLICY})
    cols, rows = p.show("POOLS")
    assert "database" in cols
    cols, rows = p.show("VERSION")
    assert rows


def test_denial_releases_the_server_connection(pg, policy_proxy):
    # one server connection: a denied (idle) client must not keep it
    fresh_table(pg, "pw_scratch19")
    p = policy_proxy(policies={"wire.lua": WIRE_POLICY},
                     settings={"default_pool_size": "1", "query_wait_timeout": "5"})
    with raw(p) as a:
        assert_denied(simple(a, "DROP TABLE pw_scratch19"), "no drops")
        assert_denied(extended(a, pbe("DROP TABLE pw_scratch19")), "no drops")
        b = Bg(p.query, "select 19")
        assert b.result(10) == [(19,)]
        simple(a, "BEGIN")
        assert_denied(simple(a, "DROP TABLE pw_scratch19"), "no drops", b"E")
        assert rfq_status(simple(a, "ROLLBACK")) == b"I"
        b = Bg(p.query, "select 20")
        assert b.result(10) == [(20,)]
        out = simple(a, "select 21")
        assert data_row_values(out[1][1]) == ["21"]


@pytest.mark.timeout(90)
def test_many_clients_on_several_workers(pg, policy_proxy):
    fresh_table(pg, "pw_scratch20")
    fresh_table(pg, "pw_answer_src", rows=1)
    p = policy_proxy(policies={"wire.lua": WIRE_POLICY},
                     settings={"workers": "4", "default_pool_size": "8"})

    def client(i):
        with raw(p) as c:
            for _ in range(10):
                assert_denied(simple(c, "DROP TABLE pw_scratch20"), "no drops")
                assert_denied(extended(c, pbe("DROP TABLE pw_scratch20")), "no drops")
                out = simple(c, "SELECT id FROM pw_answer_src")
                assert data_row_values(out[1][1]) == ["42"], (types(out), errors(out))
                out = extended(c, pbe("select %d" % i))
                assert data_row_values(out[2][1]) == [str(i)], (types(out), errors(out))
        return True

    runs = [Bg(client, i) for i in range(24)]
    assert all(r.result(60) for r in runs)
    assert table_exists(pg, "pw_scratch20")


@pytest.mark.timeout(60)
def test_reload_reaches_every_worker(pg, policy_proxy):
    fresh_table(pg, "pw_scratch21")
    p = policy_proxy(policies={"reload.lua": WIRE_POLICY}, settings={"workers": "3"})
    p.set_policy("reload.lua", WIRE_POLICY.replace('"no drops"', '"reloaded: no drops"'))
    p.reload()

    def all_new():
        conns = [raw_login(p) for _ in range(9)]
        try:
            msgs = [errors(simple(c, "DROP TABLE pw_scratch21")) for c in conns]
        finally:
            for c in conns:
                c.close()
        return all(m and "reloaded: no drops" in m[0].get("M", "") for m in msgs)
    wait_until(all_new, 10, 0.2, "every worker to use the reloaded policy")
    assert table_exists(pg, "pw_scratch21")


# ---------------------------------------------------------------- the example policies

@pytest.fixture
def guardrails(policy_proxy):
    return policy_proxy(policy_scripts=[str(POLICIES_DIR / "guardrails.lua")])


def guardrails_hold_then_deny(p, c, timeout=15):
    """The held statement's notice, silence, then DENY on the console: its 42501 answer."""
    t, payload = c.recv_msg(timeout)
    assert t == b"N", (t, payload)
    notice = parse_error_fields(payload).get("M", "")
    m = re.search(r"held for approval (\d+)", notice)
    assert m, notice
    with pytest.raises(socket.timeout):
        c.recv_msg(0.5)  # nothing runs while it waits
    with contextlib.closing(p.admin()) as a, a.cursor() as cur:
        cur.execute("DENY %s 'guardrails test'" % m.group(1))
    return c.read_until({b"Z"}, timeout)


def test_guardrails_drop_is_held_and_does_not_run_when_denied(pg, guardrails):
    fresh_table(pg, "pw_guard_drop")
    with raw(guardrails) as c:
        c.send(query_msg("DROP TABLE pw_guard_drop"))
        assert table_exists(pg, "pw_guard_drop")
        out = guardrails_hold_then_deny(guardrails, c)
        errs = errors(out)
        assert errs and errs[-1].get("C") == "42501", (types(out), errs)
        assert "guardrails test" in errs[-1].get("M", "")
        assert b"C" not in types(out)
        assert rfq_status(out) == b"I"
    assert table_exists(pg, "pw_guard_drop")


def test_guardrails_drop_is_held_and_does_not_run_when_denied_extended(pg, guardrails):
    fresh_table(pg, "pw_guard_drop2")
    with raw(guardrails) as c:
        c.send(pbe("DROP TABLE pw_guard_drop2") + sync_msg())
        out = guardrails_hold_then_deny(guardrails, c)
        errs = errors(out)
        assert errs and errs[-1].get("C") == "42501", (types(out), errs)
        assert b"C" not in types(out) and b"1" not in types(out), types(out)
        assert rfq_status(out) == b"I"
    assert table_exists(pg, "pw_guard_drop2")


def test_guardrails_truncate_is_held_and_does_not_run_when_denied(pg, guardrails):
    fresh_table(pg, "pw_guard_trunc", rows=3)
    with raw(guardrails) as c:
        c.send(query_msg("TRUNCATE pw_guard_trunc"))
        out = guardrails_hold_then_deny(guardrails, c)
        errs = errors(out)
        assert errs and errs[-1].get("C") == "42501", (types(out), errs)
    assert len(tags(pg, "pw_guard_trunc")) == 3


def test_guardrails_hidden_delete_without_where_denied(pg, guardrails):
    fresh_table(pg, "pw_guard_cte", rows=3)
    with raw(guardrails) as c:
        assert_denied(simple(c, "WITH gone AS (DELETE FROM pw_guard_cte RETURNING *) "
                                "SELECT count(*) FROM gone"), "without WHERE")
        assert_denied(extended(c, pbe("WITH gone AS (DELETE FROM pw_guard_cte RETURNING *) "
                                      "SELECT count(*) FROM gone")), "without WHERE")
        out = simple(c, "SELECT count(*) FROM pw_guard_cte")
        assert data_row_values(out[1][1]) == ["3"]
    assert len(tags(pg, "pw_guard_cte")) == 3


def test_guardrails_delete_without_where_denied(pg, guardrails):
    fresh_table(pg, "pw_guard_del", rows=4)
    with contextlib.closing(guardrails.connect(autocommit=True)) as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege) as ei:
            cur.execute("DELETE FROM pw_guard_del")
        assert "without WHERE" in ei.value.pgerror
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("UPDATE pw_guard_del SET tag = 'x'")
        cur.execute("DELETE FROM pw_guard_del WHERE id = 1")
        assert cur.rowcount == 1
        cur.execute("SELECT count(*) FROM pw_guard_del")
        assert cur.fetchall() == [(3,)]
    assert len(tags(pg, "pw_guard_del")) == 3
    assert "x" not in tags(pg, "pw_guard_del")


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode,pool_mode", [("simple", "transaction"), ("extended", "transaction"),
                                            ("prepared", "session")])
def test_pgbench_select_only_through_guardrails(policy_proxy, mode, pool_mode):
    # named prepared statements need a session (as with pgbouncer 1.18)
    p = policy_proxy(policy_scripts=[str(POLICIES_DIR / "guardrails.lua")],
                     settings={"pool_mode": pool_mode})
    r = pgbench(p.port, ["-S", "-c", "4", "-t", "200", "-M", mode], timeout=90)
    assert r.returncode == 0, r
    assert r.processed == 800, r
    assert r.failed in (0, None), r
    # the policy really was in force for these clients
    with raw(p, db="bench") as c:
        assert_denied(simple(c, "DELETE FROM pgbench_history"), "without WHERE")


def test_dry_run_allows_and_logs_the_verdict(pg, policy_proxy):
    fresh_table(pg, "pw_dry")
    p = policy_proxy(policies={"wire.lua": WIRE_POLICY}, policy_settings={"mode": "dry_run"})
    with raw(p) as c:
        out = simple(c, "DROP TABLE pw_dry")
        assert types(out) == [b"C", b"Z"], (types(out), errors(out))
    assert not table_exists(pg, "pw_dry")
    p.wait_log(r"no drops", 5)


# ---------------------------------------------------------------- reload

@pytest.mark.timeout(60)
def test_sighup_with_broken_policy_keeps_old_set(pg, policy_proxy):
    fresh_table(pg, "pw_reload")
    fresh_table(pg, "pw_log12")
    p = policy_proxy(policies={"reload.lua": WIRE_POLICY},
                     settings={"pool_mode": "session"})
    conn = p.connect()  # inside a transaction across the reload
    try:
        cur = conn.cursor()
        cur.execute("INSERT INTO pw_log12 VALUES (1, 'across reload')")
        with raw(p) as c:
            assert_denied(simple(c, "DROP TABLE pw_reload"), "no drops")
            p.set_policy("reload.lua", BROKEN_POLICY)
            p.reload()
            p.wait_log(r"reload\.lua:(%s)\b" % "|".join(map(str, BROKEN_POLICY_LINES)), 5)
            # the old set is still in force, on the same and on new connections
            assert_denied(simple(c, "DROP TABLE pw_reload"), "no drops")
        with raw(p) as c2:
            assert_denied(simple(c2, "DROP TABLE pw_reload"), "no drops")
        cur.execute("INSERT INTO pw_log12 VALUES (2, 'after reload')")
        conn.commit()
    finally:
        conn.close()
    assert p.alive()
    assert table_exists(pg, "pw_reload")
    assert tags(pg, "pw_log12") == ["across reload", "after reload"]


@pytest.mark.timeout(60)
def test_sighup_with_fixed_policy_takes_effect(pg, policy_proxy):
    # the reload path is real: a valid new set replaces the old one
    fresh_table(pg, "pw_reload2")
    p = policy_proxy(policies={"reload.lua": WIRE_POLICY})
    with raw(p) as c:
        assert_denied(simple(c, "DROP TABLE pw_reload2"), "no drops")
        p.set_policy("reload.lua", WIRE_POLICY.replace('"no drops"', '"drops are off today"'))
        p.reload()

        def new_message():
            out = simple(c, "DROP TABLE pw_reload2")
            assert errors(out), types(out)
            return "drops are off today" in errors(out)[0].get("M", "")
        wait_until(new_message, 5, 0.1, "reloaded policy")
    assert table_exists(pg, "pw_reload2")


# ---------------------------------------------------------------- authoring loop

def test_check_reports_policy_syntax_error_with_file_line(pg, proxy_factory):
    from conftest import start_yaml_proxy
    p = start_yaml_proxy(proxy_factory, start=False, policies={"broken.lua": BROKEN_POLICY})
    p.write_config()
    r = subprocess.run([PGMOAT_BIN, "--check", str(p.config_path)], capture_output=True,
                       text=True, timeout=15)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert any("broken.lua:%d" % n in out for n in BROKEN_POLICY_LINES), out


@pytest.mark.parametrize("source,where", [
    ("local P = {}\nreturn 5\n", "bad.lua"),
    ("local P = {}\nundeclared_thing = 1\nreturn P\n", "bad.lua:2"),
    ("local P = {}\nlocal f = io.open('/etc/passwd')\nreturn P\n", "bad.lua:2"),
])
def test_check_reports_policy_load_errors(pg, proxy_factory, source, where):
    from conftest import start_yaml_proxy
    p = start_yaml_proxy(proxy_factory, start=False, policies={"bad.lua": source})
    p.write_config()
    r = subprocess.run([PGMOAT_BIN, "--check", str(p.config_path)], capture_output=True,
                       text=True, timeout=15)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert where in out, out


def test_proxy_refuses_to_start_with_broken_policy(pg, proxy_factory):
    from conftest import start_yaml_proxy
    p = start_yaml_proxy(proxy_factory, start=False, policies={"broken.lua": BROKEN_POLICY})
    p.expect_exit = True
    p.start(wait=False)
    try:
        p.proc.wait(15)
    except subprocess.TimeoutExpired:
        raise AssertionError("pgmoat kept running with a policy that does not compile")
    assert p.proc.returncode != 0
    assert any("broken.lua:%d" % n in p.log() for n in BROKEN_POLICY_LINES), p.log_tail()


def test_check_accepts_valid_policy(pg, proxy_factory):
    from conftest import start_yaml_proxy
    p = start_yaml_proxy(proxy_factory, start=False, policies={"wire.lua": WIRE_POLICY})
    p.write_config()
    r = subprocess.run([PGMOAT_BIN, "--check", str(p.config_path)], capture_output=True,
                       text=True, timeout=15)
    assert r.returncode == 0, r.stdout + r.stderr


def example_policies():
    return sorted(f.stem for f in POLICIES_DIR.glob("*.cases"))


@pytest.mark.parametrize("name", example_policies())
def test_try_cases_of_example_policy_pass(name):
    lua = POLICIES_DIR / (name + ".lua")
    assert lua.exists(), "%s.cases has no %s.lua" % (name, name)
    r = subprocess.run([PGMOAT_BIN, "try", str(lua), "--cases", str(POLICIES_DIR / (name + ".cases"))],
                       capture_output=True, text=True, timeout=30, cwd=str(REPO))
    assert r.returncode == 0, r.stdout + r.stderr


def test_try_cases_with_wrong_expectation_fails(tmp_path):
    src = (POLICIES_DIR / "guardrails.cases").read_text().splitlines()
    # flip a case the policy allows into an expected deny
    idx = next(i for i, l in enumerate(src) if l.startswith("allow\t") and "SELECT" in l)
    src[idx] = "deny" + src[idx][len("allow"):]
    cases = tmp_path / "wrong.cases"
    cases.write_text("\n".join(src) + "\n")
    shutil.copy(POLICIES_DIR / "guardrails.lua", tmp_path / "guardrails.lua")
    r = subprocess.run([PGMOAT_BIN, "try", str(tmp_path / "guardrails.lua"), "--cases", str(cases)],
                       capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "wrong.cases:%d" % (idx + 1) in out, out


# ---------------------------------------------------------------- no policy

def test_no_policy_configured_drop_works(pg, policy_proxy):
    fresh_table(pg, "pw_nopolicy")
    p = policy_proxy()
    assert "policy:" not in p.config_path.read_text()
    with contextlib.closing(p.connect(autocommit=True)) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE pw_nopolicy")
        cur.execute("select 1")
        assert cur.fetchall() == [(1,)]
        with pytest.raises(psycopg2.errors.SyntaxError):
            cur.execute("SELEC 1 FROM")
    assert not table_exists(pg, "pw_nopolicy")


def test_no_policy_configured_function_call_works(pg, policy_proxy):
    p = policy_proxy()
    oid = pgx(pg, "select 'pg_backend_pid'::regproc::oid")[0][0]
    with raw(p) as c:
        c.send(function_call_msg(oid))
        try:
            out = c.read_until({b"Z"}, 10)
        except ConnectionClosed:
            raise AssertionError("FunctionCall closed the connection:\n" + p.log_tail(10))
        assert types(out) == [b"V", b"Z"], (types(out), errors(out))


# ---------------------------------------------------------------- parser agreement

def test_quoted_text_is_not_judged_while_standard_conforming_strings_is_off(pg, wire):
    fresh_table(pg, "pw_scs")
    with raw(wire) as c:
        assert types(simple(c, "set standard_conforming_strings = off"))[-1] == b"Z"
        # With the setting off, the server reads 'a\'' differently from the parser.
        out = simple(c, "select 'a\\''; drop table pw_scs; --'")
        assert_denied(out, "standard_conforming_strings is off", b"I")
        assert table_exists(pg, "pw_scs")
        # Text without quotes lexes alike: still judged (and this one allowed) ...
        assert types(simple(c, "select 1")) == [b"T", b"D", b"C", b"Z"]
        # ... and policies still apply to it.
        assert_denied(simple(c, "drop table pw_scs"), "no drops", b"I")
        # Switching back is possible, and afterwards quoted text is judged again.
        assert types(simple(c, "set standard_conforming_strings = on"))[-1] == b"Z"
        out = simple(c, "select 'back'")
        assert data_row_values(out[1][1]) == ["back"]


def test_encoding_that_can_hide_quotes_fails_closed(wire):
    with raw(wire) as c:
        assert types(simple(c, "set client_encoding = SJIS"))[-1] == b"Z"
        assert_denied(simple(c, "select 'x'"), "client_encoding", b"I")
        assert types(simple(c, "set client_encoding = UTF8"))[-1] == b"Z"
        assert types(simple(c, "select 'x'")) == [b"T", b"D", b"C", b"Z"]


def test_quoted_parse_pipelined_behind_a_set_is_denied(wire):
    with raw(wire) as c:
        out = extended(c, pbe("set standard_conforming_strings = off"), pbe("select 'a\\''"))
        assert b"E" in types(out), types(out)
        err = errors(out)[0]
        assert err["C"] == "42501" and "pipeline" in err["M"], err
        simple(c, "set standard_conforming_strings = on")
        out = extended(c, pbe("select 'fine'"))
        assert [data_row_values(p) for t, p in out if t == b"D"] == [["fine"]]
