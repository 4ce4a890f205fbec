"""
Masking that cannot be walked around (issue 4 point 4), against a real PostgreSQL.

A policy protects mk_people.email ("email"), mk_people.ssn ("redact"),
mk_pay.card ("partial") and, through on_columns, any column named "nickname"
(a Lua mask). Every test checks what the client receives, and where it can,
scans every byte it received for the raw secrets: a plain reference must come
back masked; any other path must be refused with 42501 and show no secret.
"""

import contextlib
import socket
import struct
import time

import psycopg2
import psycopg2.errors
import pytest

from conftest import (
    IS_PGBOUNCER, REPO, bind_msg, copy_data_msg, copy_done_msg, cstr, data_row_values, describe_msg, execute_msg, msg,
    parse_error_fields, parse_msg, query_msg, raw_login, start_yaml_proxy, sync_msg,
)

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="policies are pgmoat-only")

EMAIL_LOCAL = "zorgalice"
EMAIL = EMAIL_LOCAL + "@secret.example"
SSN = "987-65-4321"
CARD = "4111222233334444"
NICK = "snugglebear"
SECRETS = [EMAIL_LOCAL.encode(), SSN.encode(), CARD[:12].encode(), NICK.encode()]

MASK_POLICY = """\
local P = {}
P.masks = {
	["mk_people.email"] = "email",
	["public.mk_people.ssn"] = "redact",
	["mk_pay.card"] = "partial",
}
function P.on_columns(s, cols)
	for _, c in ipairs(cols) do
		if c.column == "nickname" then
			c.mask = function(v, col) return v and ("nick#" .. #v) or nil end
		end
	end
end
return P
"""

SETUP_SQL = """
DROP VIEW IF EXISTS mk_view2, mk_view, mk_safe_view;
DROP TABLE IF EXISTS mk_people, mk_pay, mk_other, mk_sink;
CREATE TABLE mk_people (id int PRIMARY KEY, name text, email text UNIQUE, ssn text, nickname text);
CREATE TABLE mk_pay (id int, card text);
CREATE TABLE mk_other (id int, note text);
CREATE TABLE mk_sink (id int, v text);
INSERT INTO mk_people VALUES (1, 'Alice', '%s', '%s', '%s'), (2, 'Bob', NULL, NULL, NULL);
INSERT INTO mk_pay VALUES (1, '%s');
INSERT INTO mk_other VALUES (1, 'hello');
CREATE VIEW mk_view AS SELECT id, email AS mail FROM mk_people;
CREATE VIEW mk_view2 AS SELECT id, upper(mail) AS m FROM mk_view;
CREATE VIEW mk_safe_view AS SELECT id, name FROM mk_people;
GRANT ALL ON mk_people, mk_pay, mk_other, mk_sink, mk_view, mk_view2, mk_safe_view TO PUBLIC;
""" % (EMAIL, SSN, NICK, CARD)


def pgx(pg, sql):
    return pg.sql(sql, None, db="app")


@pytest.fixture(scope="module")
def tables(pg):
    with contextlib.closing(pg.connect("app")) as c, c.cursor() as cur:
        c.autocommit = True
        cur.execute(SETUP_SQL)
    yield


@pytest.fixture(scope="module")
def proxy(tables, module_proxy_factory):
    return start_yaml_proxy(module_proxy_factory, policies={"mask.lua": MASK_POLICY})


def no_secret(data):
    for s in SECRETS:
        assert s not in data, "raw secret %r reached the client" % s


def raw_query(proxy, sql):
    """(messages, all bytes received) for one simple Query on a fresh raw connection."""
    c = raw_login(proxy)
    try:
        c.send(query_msg(sql))
        msgs = c.read_until({b"Z"}, timeout=15)
    finally:
        c.close()
    data = b"".join(t + p for t, p in msgs)
    no_secret(data)
    return msgs


def rows_of(msgs):
    return [data_row_values(p) for t, p in msgs if t == b"D"]


def errors_of(msgs):
    return [parse_error_fields(p) for t, p in msgs if t == b"E"]


def assert_denied(proxy, sql):
    msgs = raw_query(proxy, sql)
    errs = errors_of(msgs)
    assert errs and errs[0]["C"] == "42501", (sql, msgs)
    assert not rows_of(msgs), sql
    assert msgs[-1][0] == b"Z"
    return errs[0]


# ---------------------------------------------------------------- masked paths

MASKED = [
    ("SELECT email FROM mk_people WHERE id = 1", [["***@secret.example"]]),
    ("SELECT id, email, ssn FROM mk_people ORDER BY id",
     [["1", "***@secret.example", "[REDACTED]"], ["2", None, "[REDACTED]"]]),
    ("SELECT email AS e FROM mk_people p WHERE p.id = 1", [["***@secret.example"]]),
    ("SELECT e FROM (SELECT email AS e FROM mk_people WHERE id = 1) s", [["***@secret.example"]]),
    ("WITH x AS (SELECT email FROM mk_people WHERE id = 1) SELECT email FROM x",
     [["***@secret.example"]]),
    ("SELECT email FROM public.mk_people WHERE id = 1", [["***@secret.example"]]),
    ("SELECT card FROM mk_pay", [["************4444"]]),
    ("SELECT nickname FROM mk_people WHERE id = 1", [["nick#%d" % len(NICK)]]),
    ("SELECT p.email, q.card FROM mk_people p JOIN mk_pay q USING (id)",
     [["***@secret.example", "************4444"]]),
    ("SELECT email FROM mk_people WHERE email LIKE 'zorg%'", [["***@secret.example"]]),
    # set operations: no source in RowDescription, masked by result position
    ("SELECT email FROM mk_people WHERE id = 1 UNION SELECT note FROM mk_other ORDER BY 1",
     [["***"], ["***@secret.example"]]),
    ("SELECT note, id FROM mk_other UNION ALL SELECT email, id FROM mk_people WHERE id = 1 "
     "ORDER BY id", [["***", "1"], ["***@secret.example", "1"]]),
    ("SELECT id, card FROM mk_pay INTERSECT SELECT id, card FROM mk_pay", [["1", "************4444"]]),
    ("SELECT id FROM mk_people UNION SELECT id FROM mk_other ORDER BY 1", [["1"], ["2"]]),
]


@pytest.mark.parametrize("sql,expected", MASKED)
def test_plain_references_are_masked_simple(proxy, sql, expected):
    msgs = raw_query(proxy, sql)
    assert not errors_of(msgs), msgs
    assert rows_of(msgs) == expected


def test_star_is_masked_with_psycopg2(proxy):
    with contextlib.closing(proxy.connect()) as c, c.cursor() as cur:
        cur.execute("SELECT * FROM mk_people WHERE id = 1")
        assert cur.fetchall() == [(1, "Alice", "***@secret.example", "[REDACTED]",
                                   "nick#%d" % len(NICK))]
        cur.execute("SELECT o.id, name FROM mk_other o, mk_people WHERE mk_people.id = 1")
        assert cur.fetchall() == [(1, "Alice")]


def test_set_operation_masked_inside_a_transaction(proxy):
    """psycopg2 opens a transaction first: the Query is judged while linked to a server."""
    with contextlib.closing(proxy.connect()) as c, c.cursor() as cur:
        cur.execute("SELECT 1")
        cur.execute("SELECT ssn FROM mk_people WHERE id = 1 UNION ALL SELECT note FROM mk_other")
        assert sorted(cur.fetchall()) == [("[REDACTED]",), ("[REDACTED]",)]
        cur.execute("SELECT email FROM mk_people WHERE id = 1")
        assert cur.fetchall() == [("***@secret.example",)]
        c.rollback()


def test_unmasked_results_untouched(proxy):
    msgs = raw_query(proxy, "SELECT note, lower(note) FROM mk_other")
    assert rows_of(msgs) == [["hello", "hello"]]
    msgs = raw_query(proxy, "SELECT count(*), max(id) FROM mk_people")
    assert rows_of(msgs) == [["2", "2"]]


def test_returning_is_masked(proxy):
    msgs = raw_query(proxy, "BEGIN; INSERT INTO mk_people (id, email) VALUES (99, 'zorgalice2@x.y') "
                            "RETURNING id, email; ROLLBACK")
    assert not errors_of(msgs), msgs
    assert rows_of(msgs) == [["99", "***@x.y"]]


def test_cursor_fetch_is_masked(proxy):
    msgs = raw_query(proxy, "BEGIN; DECLARE mkc CURSOR FOR SELECT email FROM mk_people WHERE id = 1; "
                            "FETCH ALL mkc; COMMIT")
    assert not errors_of(msgs), msgs
    assert rows_of(msgs) == [["***@secret.example"]]


def test_prepare_execute_is_masked(proxy):
    msgs = raw_query(proxy, "PREPARE mkp AS SELECT email FROM mk_people WHERE id = $1; "
                            "EXECUTE mkp(1); DEALLOCATE mkp")
    assert not errors_of(msgs), msgs
    assert rows_of(msgs) == [["***@secret.example"]]


def test_many_rows_masked(proxy):
    with contextlib.closing(proxy.connect()) as c, c.cursor() as cur:
        cur.execute("SELECT email FROM mk_people, generate_series(1, 5000) g WHERE id = 1")
        rows = cur.fetchall()
    assert len(rows) == 5000 and set(rows) == {("***@secret.example",)}


# ---------------------------------------------------------------- extended protocol

def ext_exchange(proxy, messages, timeout=15):
    c = raw_login(proxy)
    try:
        c.send(b"".join(messages))
        out = c.read_until({b"Z"}, timeout=timeout)
    finally:
        c.close()
    no_secret(b"".join(t + p for t, p in out))
    return out


def bind_formats(stmt="", portal="", result_formats=()):
    body = cstr(portal) + cstr(stmt) + struct.pack("!H", 0) + struct.pack("!H", 0)
    body += struct.pack("!H", len(result_formats))
    for f in result_formats:
        body += struct.pack("!H", f)
    return msg(b"B", body)


def test_extended_without_describe_is_masked(proxy):
    out = ext_exchange(proxy, [parse_msg("SELECT id, email FROM mk_people WHERE id = 1"),
                               bind_msg(), execute_msg(), sync_msg()])
    types = [t for t, _ in out]
    assert b"T" not in types, "pgmoat's own Describe answer must not reach the client"
    assert rows_of(out) == [["1", "***@secret.example"]]
    assert types == [b"1", b"2", b"D", b"C", b"Z"]


def test_extended_with_describe_is_masked(proxy):
    out = ext_exchange(proxy, [parse_msg("SELECT email FROM mk_people WHERE id = 1"),
                               bind_msg(), describe_msg(b"P"), execute_msg(), sync_msg()])
    types = [t for t, _ in out]
    assert types == [b"1", b"2", b"T", b"D", b"C", b"Z"]
    assert rows_of(out) == [["***@secret.example"]]


def test_extended_describe_of_binary_portal_refused(proxy):
    """The client's own Describe is the plan (pgmoat sends none): a binary protected column is refused."""
    out = ext_exchange(proxy, [parse_msg("SELECT email FROM mk_people WHERE id = 1"),
                               bind_formats(result_formats=(1,)), describe_msg(b"P"), execute_msg(),
                               sync_msg()])
    errs = errors_of(out)
    assert errs and errs[0]["C"] == "42501"
    assert not rows_of(out)
    assert out[-1][0] == b"Z"


def test_extended_describe_of_another_portal_does_not_serve(proxy):
    """Describe of portal b just before Execute of portal a: a's rows still get a's plan."""
    c = raw_login(proxy)
    try:
        c.send(query_msg("BEGIN"))
        c.read_until({b"Z"})
        c.send(parse_msg("SELECT email FROM mk_people WHERE id = 1", name="da") +
               bind_msg(stmt="da", portal="a") +
               parse_msg("SELECT note FROM mk_other", name="db") + bind_msg(stmt="db", portal="b") +
               describe_msg(b"P", "b") + execute_msg("a") + execute_msg("b") + sync_msg())
        out = c.read_until({b"Z"})
        no_secret(b"".join(t + p for t, p in out))
        assert rows_of(out) == [["***@secret.example"], ["hello"]]
        assert [t for t, _ in out] == [b"1", b"2", b"1", b"2", b"T", b"D", b"C", b"D", b"C", b"Z"]
    finally:
        c.close()


def test_extended_describe_then_rebind_unnamed_portal(proxy):
    """Describe of the unnamed portal, then a new Bind of it: the Execute gets a fresh plan."""
    out = ext_exchange(proxy, [parse_msg("SELECT note FROM mk_other"), bind_msg(),
                               describe_msg(b"P"),
                               parse_msg("SELECT email FROM mk_people WHERE id = 1"), bind_msg(),
                               execute_msg(), sync_msg()])
    assert rows_of(out) == [["***@secret.example"]]
    assert [t for t, _ in out] == [b"1", b"2", b"T", b"1", b"2", b"D", b"C", b"Z"]


def test_extended_describe_then_suspended_executes(proxy):
    """Only the Execute right after the client's Describe goes without pgmoat's own."""
    c = raw_login(proxy)
    try:
        c.send(query_msg("BEGIN"))
        c.read_until({b"Z"})
        c.send(parse_msg("SELECT email, ssn FROM mk_people ORDER BY id") + bind_msg(portal="pd") +
               describe_msg(b"P", "pd") + execute_msg("pd", 1) + execute_msg("pd", 1) +
               sync_msg())
        out = c.read_until({b"Z"})
        no_secret(b"".join(t + p for t, p in out))
        assert rows_of(out) == [["***@secret.example", "[REDACTED]"], [None, "[REDACTED]"]]
        assert [t for t, _ in out] == [b"1", b"2", b"T", b"D", b"s", b"D", b"s", b"Z"]
    finally:
        c.close()


def test_extended_statement_describe_then_rebind(proxy):
    """Describe the statement (formats unknown yet), then Bind and Execute twice."""
    out = ext_exchange(proxy, [
        parse_msg("SELECT email FROM mk_people WHERE id = 1", name="mks"),
        describe_msg(b"S", "mks"), sync_msg()])
    assert [t for t, _ in out] == [b"1", b"t", b"T", b"Z"]
    c = raw_login(proxy)
    try:
        c.send(parse_msg("SELECT email FROM mk_people WHERE id = 1", name="mks2") + sync_msg())
        c.read_until({b"Z"})
        for _ in range(2):
            c.send(bind_msg(stmt="mks2") + execute_msg() + sync_msg())
            out = c.read_until({b"Z"})
            no_secret(b"".join(t + p for t, p in out))
            assert rows_of(out) == [["***@secret.example"]]
    finally:
        c.close()


def pipelined_portals(stmt):
    """
    One batch in one send, so that Bind, Describe and Execute can move to the
    server together: the unnamed and a named portal, each executed right after
    the client's own Describe of it, with none, and after a Describe of another
    portal. Then a batch whose described portal is binary (refused).
    """
    first = [
        parse_msg("SELECT id, email FROM mk_people WHERE id = 1"), bind_msg(),
        describe_msg(b"P"), execute_msg(),
        parse_msg("SELECT ssn, nickname FROM mk_people WHERE id = 1", name=stmt),
        bind_msg(stmt=stmt, portal="na"), execute_msg("na"),
        bind_msg(stmt=stmt, portal="nb"), describe_msg(b"P", "nb"), execute_msg("nb"),
        bind_msg(stmt=stmt, portal="nc"), describe_msg(b"P", "na"), execute_msg("nc"),
        bind_msg(), execute_msg(),
        sync_msg(),
    ]
    second = [parse_msg("SELECT email FROM mk_people WHERE id = 1"),
              bind_formats(result_formats=(1,)), describe_msg(b"P"), execute_msg(), sync_msg()]
    return b"".join(first), b"".join(second)


def check_pipelined_portals(c):
    out = c.read_until({b"Z"})
    no_secret(b"".join(t + p for t, p in out))
    assert not errors_of(out)
    assert [t for t, _ in out] == [
        b"1", b"2", b"T", b"D", b"C",
        b"1", b"2", b"D", b"C",
        b"2", b"T", b"D", b"C",
        b"2", b"T", b"D", b"C",
        b"2", b"D", b"C", b"Z"]
    masked = ["[REDACTED]", "nick#%d" % len(NICK)]
    assert rows_of(out) == [["1", "***@secret.example"], masked, masked, masked,
                            ["1", "***@secret.example"]]
    out = c.read_until({b"Z"})
    no_secret(b"".join(t + p for t, p in out))
    errs = errors_of(out)
    assert errs and errs[0]["C"] == "42501"
    assert not rows_of(out)


@pytest.mark.parametrize("piece", [0, 1, 7])
def test_extended_pipelined_portals_masked(proxy, piece):
    """Whole (piece 0), or trickled in pieces so that messages arrive split."""
    c = raw_login(proxy)
    try:
        data = b"".join(pipelined_portals("pp_%d" % piece))  # (named statements outlive the client)
        if piece == 0:
            c.send(data)
        else:
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(0, len(data), piece):
                c.send(data[i:i + piece])
                time.sleep(0.002)
        check_pipelined_portals(c)
    finally:
        c.close()


def test_extended_portal_suspended(proxy):
    c = raw_login(proxy)
    try:
        c.send(query_msg("BEGIN"))
        c.read_until({b"Z"})
        c.send(parse_msg("SELECT email FROM mk_people ORDER BY id") + bind_msg(portal="pp") +
               execute_msg("pp", 1) + execute_msg("pp", 1) + sync_msg())
        out = c.read_until({b"Z"})
        no_secret(b"".join(t + p for t, p in out))
        assert rows_of(out) == [["***@secret.example"], [None]]
        assert [t for t, _ in out].count(b"s") == 2
    finally:
        c.close()


def test_binary_result_format_refused(proxy):
    out = ext_exchange(proxy, [parse_msg("SELECT email FROM mk_people WHERE id = 1"),
                               bind_formats(result_formats=(1,)), execute_msg(), sync_msg()])
    errs = errors_of(out)
    assert errs and errs[0]["C"] == "42501"
    assert not rows_of(out)
    assert out[-1][0] == b"Z"


def test_binary_unprotected_columns_allowed(proxy):
    out = ext_exchange(proxy, [parse_msg("SELECT id FROM mk_people WHERE id = 1"),
                               bind_formats(result_formats=(1,)), execute_msg(), sync_msg()])
    assert not errors_of(out)
    assert rows_of(out) == [[struct.pack("!i", 1).decode()]]


def test_extended_error_then_next_batch(proxy):
    """An error skips our Describe; the queue must stay in step for the next batch."""
    c = raw_login(proxy)
    try:
        c.send(parse_msg("SELECT 1/0") + bind_msg() + execute_msg() +
               parse_msg("SELECT email FROM mk_people WHERE id = 1") + bind_msg() + execute_msg() +
               sync_msg())
        out = c.read_until({b"Z"})
        assert errors_of(out)[0]["C"] == "22012"
        c.send(parse_msg("SELECT email FROM mk_people WHERE id = 1") + bind_msg() + execute_msg() +
               sync_msg())
        out = c.read_until({b"Z"})
        no_secret(b"".join(t + p for t, p in out))
        assert rows_of(out) == [["***@secret.example"]]
        assert b"T" not in [t for t, _ in out]
    finally:
        c.close()


def test_pipeline_mixing_protocols_stays_in_step(proxy):
    """Extended batch, simple Query, extended batch with the client's own Describe: one send."""
    c = raw_login(proxy)
    try:
        c.send(parse_msg("SELECT email FROM mk_people WHERE id = 1") + bind_msg() + execute_msg() +
               sync_msg() +
               query_msg("SELECT ssn FROM mk_people WHERE id = 1; SELECT card FROM mk_pay") +
               parse_msg("SELECT id, email FROM mk_people WHERE id = 1") + bind_msg() +
               describe_msg(b"P") + execute_msg() + sync_msg())
        out = []
        for _ in range(3):
            out += c.read_until({b"Z"}, timeout=15)
        no_secret(b"".join(t + p for t, p in out))
        types = [t for t, _ in out]
        assert types == [b"1", b"2", b"D", b"C", b"Z",
                         b"T", b"D", b"C", b"T", b"D", b"C", b"Z",
                         b"1", b"2", b"T", b"D", b"C", b"Z"], types
        assert rows_of(out) == [["***@secret.example"], ["[REDACTED]"], ["************4444"],
                                ["1", "***@secret.example"]]
    finally:
        c.close()


def test_copy_in_then_masked_batch(proxy):
    """A Sync sent during COPY FROM STDIN is ignored by the server: the next batch stays masked."""
    c = raw_login(proxy)
    try:
        c.send(query_msg("BEGIN"))
        c.read_until({b"Z"})
        c.send(parse_msg("COPY mk_sink FROM STDIN") + bind_msg() + execute_msg() + sync_msg())
        first = c.read_until({b"G"})
        assert first[-1][0] == b"G"
        c.send(copy_data_msg(b"5\tfive\n") + copy_done_msg() + sync_msg())
        c.read_until({b"Z"})
        for _ in range(2):
            c.send(parse_msg("SELECT email FROM mk_people WHERE id = 1") + bind_msg() +
                   execute_msg() + sync_msg())
            out = c.read_until({b"Z"})
            no_secret(b"".join(t + p for t, p in out))
            assert [t for t, _ in out] == [b"1", b"2", b"D", b"C", b"Z"], out
            assert rows_of(out) == [["***@secret.example"]]
        c.send(query_msg("ROLLBACK"))
        c.read_until({b"Z"})
    finally:
        c.close()


def test_function_call_message_denied(proxy):
    c = raw_login(proxy)
    try:
        # FunctionCall of lower(text) (oid 870) on one text argument
        body = struct.pack("!I", 870) + struct.pack("!HH", 1, 0) + struct.pack("!H", 1)
        body += struct.pack("!I", 5) + b"HELLO" + struct.pack("!H", 0)
        c.send(msg(b"F", body))
        out = c.read_until({b"Z"})
        assert errors_of(out)[0]["C"] == "42501"
    finally:
        c.close()


# ---------------------------------------------------------------- denied paths

DENIED = [
    "SELECT lower(email) FROM mk_people",
    "SELECT email::varchar FROM mk_people",
    "SELECT CAST(ssn AS text) FROM mk_people",
    "SELECT email || '' FROM mk_people",
    "SELECT substr(card, 1, 12) FROM mk_pay",
    "SELECT string_agg(email, ',') FROM mk_people",
    "SELECT max(email) FROM mk_people",
    "SELECT row_to_json(p) FROM mk_people p",
    "SELECT json_agg(p) FROM mk_people p",
    "SELECT to_jsonb(p.*) FROM mk_people p",
    "SELECT row_to_json(mk_people) FROM mk_people",
    "SELECT p FROM mk_people p",
    "SELECT mk_people FROM mk_people",
    "SELECT (p.*)::text FROM mk_people p",
    "SELECT ROW(email, id) FROM mk_people",
    "SELECT ARRAY[email] FROM mk_people",
    "SELECT CASE WHEN true THEN email END FROM mk_people",
    "SELECT (SELECT email FROM mk_people WHERE id = 1)",
    "SELECT lower(e) FROM (SELECT email AS e FROM mk_people) s",
    "SELECT upper(a) FROM (SELECT email FROM mk_people) s(a)",
    "WITH x(a) AS (SELECT email FROM mk_people) SELECT upper(a) FROM x",
    "SELECT x FROM mk_people p, LATERAL (SELECT lower(p.email) AS x) s",
    "SELECT * FROM mk_people p, jsonb_each(to_jsonb(p)) j",
    "SELECT * FROM mk_people UNION SELECT * FROM mk_people",
    "SELECT lower(email) FROM mk_people UNION SELECT note FROM mk_other",
    "SELECT x FROM (SELECT email FROM mk_people UNION SELECT note FROM mk_other) s(x)",
    "SELECT 1; SELECT email FROM mk_people UNION SELECT note FROM mk_other",
    "PREPARE mku AS SELECT email FROM mk_people UNION SELECT note FROM mk_other",
    "VALUES ((SELECT email FROM mk_people LIMIT 1))",
    "COPY mk_people TO STDOUT",
    "COPY mk_people (email) TO STDOUT",
    "COPY (SELECT email FROM mk_people) TO STDOUT",
    "INSERT INTO mk_sink SELECT id, email FROM mk_people",
    "UPDATE mk_sink SET v = (SELECT email FROM mk_people WHERE id = 1)",
    "UPDATE mk_people SET name = email",
    "CREATE TABLE mk_steal AS SELECT email FROM mk_people",
    "SELECT email INTO mk_steal2 FROM mk_people",
    "CREATE VIEW mk_steal_v AS SELECT email FROM mk_people",
    "SELECT query_to_xml('SELECT email FROM mk_people', true, false, '')",
    "DO $$ BEGIN RAISE NOTICE '%', (SELECT email FROM mk_people LIMIT 1); END $$",
    "CREATE FUNCTION mk_f() RETURNS text LANGUAGE sql AS 'SELECT email FROM mk_people LIMIT 1'",
    "SELECT 1; SELECT lower(email) FROM mk_people",
    "ALTER TABLE mk_people RENAME COLUMN email TO contact",
    "ALTER TABLE mk_people RENAME TO mk_people_old",
    "ALTER TABLE mk_people ALTER COLUMN email TYPE int USING length(email)",
]


@pytest.mark.parametrize("sql", DENIED)
def test_unmaskable_paths_denied(proxy, sql):
    err = assert_denied(proxy, sql)
    assert "mask" in err["M"] or "protected" in err["M"] or "bypass" in err["M"], err


def test_denied_in_transaction_aborts_it(proxy):
    c = raw_login(proxy)
    try:
        c.send(query_msg("BEGIN"))
        c.read_until({b"Z"})
        c.send(query_msg("SELECT lower(email) FROM mk_people"))
        out = c.read_until({b"Z"})
        assert errors_of(out)[0]["C"] == "42501"
        assert out[-1][1] == b"E"
        c.send(query_msg("ROLLBACK"))
        assert c.read_until({b"Z"})[-1][1] == b"I"
    finally:
        c.close()


UNION_SQL = "SELECT email, id FROM mk_people WHERE id = 1 UNION ALL SELECT note, id FROM mk_other"
UNION_ROWS = [["***@secret.example", "1"], ["***", "1"]]


def test_set_operation_masked_in_extended_protocol(proxy):
    out = ext_exchange(proxy, [parse_msg(UNION_SQL), bind_msg(), execute_msg(), sync_msg()])
    assert not errors_of(out), out
    assert sorted(rows_of(out)) == sorted(UNION_ROWS)
    assert [t for t, _ in out] == [b"1", b"2", b"D", b"D", b"C", b"Z"]


def test_set_operation_named_statement_described_and_rebound(proxy):
    c = raw_login(proxy)
    try:
        c.send(parse_msg(UNION_SQL, name="mku") + describe_msg(b"S", "mku") + sync_msg())
        out = c.read_until({b"Z"})
        assert [t for t, _ in out] == [b"1", b"t", b"T", b"Z"]
        for portal in ("", "pp"):
            c.send(bind_msg(stmt="mku", portal=portal) + describe_msg(b"P", portal) +
                   execute_msg(portal) + sync_msg())
            out = c.read_until({b"Z"})
            no_secret(b"".join(t + p for t, p in out))
            assert not errors_of(out), out
            assert sorted(rows_of(out)) == sorted(UNION_ROWS)
        # the name is reused for a statement without protected columns: no more masking
        c.send(parse_msg("SELECT note, id FROM mk_other UNION ALL SELECT note, id FROM mk_other",
                         name="mku2") + bind_msg(stmt="mku2") + execute_msg() + sync_msg())
        out = c.read_until({b"Z"})
        assert rows_of(out) == [["hello", "1"], ["hello", "1"]]
    finally:
        c.close()


def test_set_operation_binary_refused(proxy):
    out = ext_exchange(proxy, [parse_msg(UNION_SQL), bind_formats(result_formats=(1, 1)),
                               execute_msg(), sync_msg()])
    assert errors_of(out)[0]["C"] == "42501"
    assert not rows_of(out)


def test_denied_in_extended_parse(proxy):
    out = ext_exchange(proxy, [parse_msg("SELECT lower(email) FROM mk_people"), bind_msg(),
                               execute_msg(), sync_msg()])
    assert errors_of(out)[0]["C"] == "42501"
    assert not rows_of(out)


def test_sink_tables_untouched(pg, proxy):
    for sql in ("INSERT INTO mk_sink SELECT id, email FROM mk_people",
                "CREATE TABLE mk_steal AS SELECT email FROM mk_people"):
        assert_denied(proxy, sql)
    assert pg.sql("SELECT count(*) FROM mk_sink", db="app")[0][0] == 0
    assert pg.sql("SELECT to_regclass('mk_steal')", db="app")[0][0] is None


# ---------------------------------------------------------------- views

def test_view_over_protected_column_refused(proxy):
    for sql in ("SELECT * FROM mk_view", "SELECT mail FROM mk_view", "SELECT m FROM mk_view2"):
        err = assert_denied(proxy, sql)
        assert "view" in err["M"], err


def test_expression_over_tainted_view_refused(proxy):
    for sql in ("SELECT lower(mail) FROM mk_view", "SELECT row_to_json(v) FROM mk_view v"):
        assert_denied(proxy, sql)


def test_view_without_protected_columns_allowed(proxy):
    msgs = raw_query(proxy, "SELECT id, name FROM mk_safe_view ORDER BY id")
    assert rows_of(msgs) == [["1", "Alice"], ["2", "Bob"]]


def test_view_created_after_the_proxy_started(pg, proxy):
    pgx(pg, "DROP VIEW IF EXISTS mk_late; CREATE VIEW mk_late AS SELECT email AS x FROM mk_people;"
            "GRANT ALL ON mk_late TO PUBLIC")
    try:
        assert_denied(proxy, "SELECT x FROM mk_late")
    finally:
        pgx(pg, "DROP VIEW IF EXISTS mk_late")


def test_table_recreated_gets_masked(pg, proxy):
    """DROP + CREATE outside pgmoat: the new OID is looked up, not passed as unknown."""
    assert rows_of(raw_query(proxy, "SELECT card FROM mk_pay")) == [["************4444"]]
    pgx(pg, "DROP TABLE mk_pay; CREATE TABLE mk_pay (note text, card text, id int);"
            "INSERT INTO mk_pay VALUES ('n', '%s', 1); GRANT ALL ON mk_pay TO PUBLIC" % CARD)
    assert rows_of(raw_query(proxy, "SELECT card, note FROM mk_pay")) == [["************4444", "n"]]


def test_column_renamed_outside(pg, proxy):
    """A column renamed to a protected name after its table was cached is still masked."""
    pgx(pg, "DROP TABLE IF EXISTS mk_ren; CREATE TABLE mk_ren (id int, c text);"
            "INSERT INTO mk_ren VALUES (1, '%s'); GRANT ALL ON mk_ren TO PUBLIC" % CARD)
    try:
        assert rows_of(raw_query(proxy, "SELECT c FROM mk_ren".replace("c FROM", "id FROM"))) == [["1"]]
    finally:
        pgx(pg, "DROP TABLE IF EXISTS mk_ren")


# ---------------------------------------------------------------- errors and notices

def test_error_values_scrubbed(proxy):
    err = assert_error(proxy, "SELECT id FROM mk_people WHERE email::int = 1", "22P02")
    assert EMAIL_LOCAL not in str(err)


def test_unique_violation_detail_scrubbed(proxy):
    err = assert_error(proxy, "BEGIN; UPDATE mk_people SET email = (SELECT email FROM mk_people "
                              "WHERE id = 1 LIMIT 1) WHERE id = 2; ROLLBACK", None)
    assert EMAIL_LOCAL not in str(err)


def test_unique_violation_by_insert_scrubbed(proxy):
    err = assert_error(proxy, "INSERT INTO mk_people (id, email) SELECT 3, email FROM mk_people "
                              "WHERE id = 1", None)
    assert EMAIL_LOCAL not in str(err)


def test_unique_violation_on_conflict_detail(proxy):
    err = assert_error(proxy, "UPDATE mk_people SET id = 2 WHERE email LIKE 'zorg%'", "23505")
    assert "D" not in err and EMAIL_LOCAL not in str(err)


def assert_error(proxy, sql, sqlstate):
    msgs = raw_query(proxy, sql)
    errs = errors_of(msgs)
    assert errs, msgs
    if sqlstate:
        assert errs[0]["C"] == sqlstate, errs
    return errs[0]


def test_unrelated_session_errors_kept(proxy):
    msgs = raw_query(proxy, "SELECT 'abc'::int")
    err = errors_of(msgs)[0]
    assert err["C"] == "22P02" and "abc" in err["M"]


# ---------------------------------------------------------------- the example policy

def test_pii_policy_masks_on_the_wire(pg, tables, proxy_factory):
    pgx(pg, "DROP TABLE IF EXISTS people; CREATE TABLE people (id int, email text, ssn text);"
            "INSERT INTO people VALUES (1, '%s', '%s'); GRANT ALL ON people TO PUBLIC" % (EMAIL, SSN))
    try:
        p = start_yaml_proxy(proxy_factory, policy_scripts=[str(REPO / "policies" / "pii.lua")])
        msgs = raw_query(p, "SELECT id, email, ssn FROM people")
        assert rows_of(msgs) == [["1", "***@secret.example", "[REDACTED]"]]
        assert_denied(p, "SELECT lower(email) FROM people")
        assert_denied(p, "COPY people TO STDOUT")
    finally:
        pgx(pg, "DROP TABLE IF EXISTS people")


def test_pii_policy_masks_card_like_columns_of_any_table(pg, tables, proxy_factory):
    """on_columns' rule: a column named like ^card_?n[ou]m is "partial" in any table;
    other names, even close ones, are not."""
    names = ["cardnum", "card_nom", "card_number", "cardnumero", "cardinal", "card", "card_no", "mycardnum"]
    masked = {"cardnum", "card_nom", "card_number", "cardnumero"}
    pgx(pg, "DROP TABLE IF EXISTS wallet; CREATE TABLE wallet (%s);"
            "INSERT INTO wallet VALUES (%s); GRANT ALL ON wallet TO PUBLIC"
        % (", ".join(n + " text" for n in names), ", ".join(["'4111111111111111'"] * len(names))))
    try:
        p = start_yaml_proxy(proxy_factory, policy_scripts=[str(REPO / "policies" / "pii.lua")])
        for _ in range(2):  # the same column set again: the same masks
            rows = rows_of(raw_query(p, "SELECT %s FROM wallet" % ", ".join(names)))
            assert rows == [["************1111" if n in masked else "4111111111111111"
                             for n in names]], rows
    finally:
        pgx(pg, "DROP TABLE IF EXISTS wallet")


# ---------------------------------------------------------------- on_row

ROW_POLICY = """\
local P = {}
P.masks = { ["mk_people.email"] = "email" }
function P.on_row(s, row, cols)
	for i, c in ipairs(cols) do
		local v = row[i]
		if v and c.format == "text" then
			row[i] = v:gsub("%d%d%d%-%d%d%-%d%d%d%d", "XXX-XX-XXXX")
		end
	end
end
return P
"""


@pytest.fixture(scope="module")
def row_proxy(tables, module_proxy_factory):
    return start_yaml_proxy(module_proxy_factory, policies={"row.lua": ROW_POLICY})


def test_on_row_rewrites_values(pg, row_proxy):
    pgx(pg, "DELETE FROM mk_other WHERE id = 7; INSERT INTO mk_other VALUES (7, 'ssn %s here')" % SSN)
    try:
        msgs = raw_query(row_proxy, "SELECT id, note FROM mk_other WHERE id = 7")
        assert rows_of(msgs) == [["7", "ssn XXX-XX-XXXX here"]]
        # computed values pass through on_row too (no source needed)
        msgs = raw_query(row_proxy, "SELECT upper(note) FROM mk_other WHERE id = 7")
        assert rows_of(msgs) == [["SSN XXX-XX-XXXX HERE"]]
    finally:
        pgx(pg, "DELETE FROM mk_other WHERE id = 7")


def test_on_row_sees_masked_values(row_proxy):
    msgs = raw_query(row_proxy, "SELECT email, ssn FROM mk_people WHERE id = 1")
    assert rows_of(msgs) == [["***@secret.example", "XXX-XX-XXXX"]]


def test_on_row_extended_and_binary(row_proxy):
    out = ext_exchange(row_proxy, [parse_msg("SELECT id, ssn FROM mk_people WHERE id = 1"),
                                   bind_formats(result_formats=(1, 0)), execute_msg(), sync_msg()])
    assert not errors_of(out), out
    assert rows_of(out) == [[struct.pack("!i", 1).decode(), "XXX-XX-XXXX"]]


# ---------------------------------------------------------------- the catalog connection

def test_catalog_connection_killed_is_reopened(pg, proxy):
    """The server closes pgmoat's idle catalog connection: the next lookup reconnects."""
    assert rows_of(raw_query(proxy, "SELECT email FROM mk_people WHERE id = 1")) == \
        [["***@secret.example"]]
    killed = pg.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'pgmoat catalog'")[0][0]
    assert killed >= 1
    pgx(pg, "DROP TABLE IF EXISTS mk_fresh; CREATE TABLE mk_fresh (id int, ssn text);"
            "INSERT INTO mk_fresh VALUES (1, '%s'); GRANT ALL ON mk_fresh TO PUBLIC" % SSN)
    try:
        # mk_fresh is not in P.masks, but its OID is new: a lookup must run (and succeed)
        msgs = raw_query(proxy, "SELECT id FROM mk_fresh")
        assert rows_of(msgs) == [["1"]] and not errors_of(msgs)
        assert rows_of(raw_query(proxy, "SELECT ssn FROM mk_people WHERE id = 1")) == [["[REDACTED]"]]
    finally:
        pgx(pg, "DROP TABLE IF EXISTS mk_fresh")


@pytest.mark.timeout(90)
def test_catalog_lookup_timeout_fails_closed(pg, proxy):
    """A catalog lookup that cannot finish: the result is refused, nothing unmasked goes out."""
    pgx(pg, "DROP TABLE mk_pay; CREATE TABLE mk_pay (id int, card text);"
            "INSERT INTO mk_pay VALUES (1, '%s'); GRANT ALL ON mk_pay TO PUBLIC" % CARD)
    locker = pg.connect("app")
    try:
        with locker.cursor() as cur:
            cur.execute("BEGIN; LOCK TABLE pg_catalog.pg_depend IN ACCESS EXCLUSIVE MODE")
        c = raw_login(proxy)
        try:
            c.send(query_msg("SELECT card FROM mk_pay"))
            out = c.read_until({b"Z"}, timeout=40)
            no_secret(b"".join(t + p for t, p in out))
            errs = errors_of(out)
            assert errs and errs[0]["C"] == "42501" and "catalog" in errs[0]["M"], out
            assert not rows_of(out)
        finally:
            c.close()
    finally:
        with locker.cursor() as cur:
            cur.execute("ROLLBACK")
        locker.close()
    # and once the catalog answers again, the same statement is masked
    assert rows_of(raw_query(proxy, "SELECT card FROM mk_pay")) == [["************4444"]]


# ---------------------------------------------------------------- policy cost 4

ALTERNATING_POLICY = """\
local P = {}
local calls = 0
local kept
function P.on_columns(s, cols)
	calls = calls + 1
	if kept then
		kept[1].mask = "redact"	-- a table of an earlier call: changes nothing now
	end
	kept = cols
	if calls % 2 == 0 then
		for _, c in ipairs(cols) do
			if c.column == "note" then
				c.mask = "redact"
			end
		end
	end
end
return P
"""


def test_the_same_description_gets_the_masks_of_its_own_on_columns_call(pg, proxy_factory):
    """pgmoat reuses the parse of a RowDescription it saw last and the cols
    tables' template; on_columns still runs for each result, and only what it
    decides this time applies."""
    pgx(pg, "DROP TABLE IF EXISTS alt_notes; CREATE TABLE alt_notes (id int, note text);"
            "INSERT INTO alt_notes VALUES (1, 'secret'); GRANT ALL ON alt_notes TO PUBLIC")
    try:
        p = start_yaml_proxy(proxy_factory, policies={"alt.lua": ALTERNATING_POLICY})
        c = raw_login(p)
        seen = []
        for _ in range(6):
            seen.append(rows_of(c.simple_query("SELECT id, note FROM alt_notes")))
        assert seen == [[["1", "secret"]], [["1", "[REDACTED]"]]] * 3, seen
        c.close()
    finally:
        pgx(pg, "DROP TABLE IF EXISTS alt_notes")
