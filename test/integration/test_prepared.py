"""
Protocol-level prepared statements in transaction pooling (issue 3 point 2,
max_prepared_statements): a client's named statements follow it to whichever
server connection serves it, answered exactly as one PostgreSQL session would.

Raw-protocol tests (RawConn) check the exact messages, including pipelines and
errors; pgbench -M prepared and node-postgres are the real drivers.
"""

import contextlib
import hashlib
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from conftest import (REPO, Bg, bind_msg, cstr, data_row_values, describe_msg, execute_msg, msg,
                      parse_error_fields, parse_msg, pgbench, pgmoat_only, query_msg, raw_login,
                      sync_msg, wait_until, PASSWORDS)

pytestmark = pgmoat_only


@pytest.fixture(scope="module")
def small_pool(module_proxy_factory):
    """Transaction pooling on 2 server connections: statements must migrate."""
    return module_proxy_factory(settings={"pool_mode": "transaction", "default_pool_size": "2",
                                          "max_prepared_statements": "100"})


@pytest.fixture(scope="module")
def one_server(module_proxy_factory):
    """One server connection holding at most 2 statements: the LRU must evict."""
    return module_proxy_factory(settings={"pool_mode": "transaction", "default_pool_size": "1",
                                          "max_prepared_statements": "2"})


def close_msg(kind=b"S", name=""):
    return msg(b"C", kind + cstr(name))


def flush_msg():
    return msg(b"H")


def parse_typed(sql, name, oids):
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack("!H", len(oids)) +
               b"".join(struct.pack("!I", o) for o in oids))


def types(msgs):
    return b"".join(t for t, _ in msgs)


def rows(msgs):
    return [data_row_values(p) for t, p in msgs if t == b"D"]


def errors(msgs):
    return [parse_error_fields(p) for t, p in msgs if t == b"E"]


def run(c, data, timeout=10):
    c.send(data)
    return c.read_until({b"Z"}, timeout)


def backend_pid(c):
    return int(rows(c.simple_query("select pg_backend_pid()"))[0][0])


# ---------------------------------------------------------------- pgbench

def bench_invariants(pg):
    """TPC-B bookkeeping agrees everywhere only if every transaction ran whole and once."""
    with contextlib.closing(pg.connect("bench")) as conn, conn.cursor() as cur:
        cur.execute("select (select sum(abalance) from pgbench_accounts),"
                    " (select sum(bbalance) from pgbench_branches),"
                    " (select sum(tbalance) from pgbench_tellers),"
                    " (select coalesce(sum(delta), 0) from pgbench_history)")
        return cur.fetchone()


@pytest.mark.timeout(180)
def test_pgbench_prepared_50_clients_on_a_pool_of_2(pg, small_pool):
    # One thread per client: pgbench 15 prepares each statement synchronously the first
    # time a client reaches it (inside its transaction), so a thread serving several
    # clients would block on one while another of its clients holds a pooled server.
    # That deadlock is pgbench's, with any transaction pooler smaller than its clients.
    res = pgbench(small_pool.port, ["-M", "prepared", "-c", "50", "-j", "50", "-T", "10"],
                  timeout=150)
    assert res.returncode == 0, res
    assert res.processed > 50, res
    assert res.failed in (0, None), res
    assert "error" not in res.stderr.lower(), res
    a, b, t, h = bench_invariants(pg)
    assert a == b == t == h, (a, b, t, h)


def test_pgbench_prepared_select_only_checks_every_row_count(small_pool):
    res = pgbench(small_pool.port, ["-M", "prepared", "-S", "-c", "8", "-j", "8", "-t", "200"])
    assert res.returncode == 0 and res.processed == 1600, res


# ---------------------------------------------------------------- raw protocol

def test_statement_follows_the_client_to_another_server(small_pool):
    a = raw_login(small_pool)
    b = raw_login(small_pool)
    out = run(a, parse_msg("select pg_backend_pid(), $1::int * 2", "dbl")[:-2] +
              struct.pack("!H", 0) + sync_msg())
    assert types(out) == b"1Z", out
    first = backend_pid(a)
    # b holds the server a just used (idle servers are reused warmest first) in a transaction
    assert b.simple_query("begin")[-1] == (b"Z", b"T")
    assert backend_pid(b) == first
    out = run(a, bind_msg(["21"], stmt="dbl") + execute_msg() + sync_msg())
    assert types(out) == b"2DCZ", out
    pid, doubled = rows(out)[0]
    assert doubled == "42"
    assert int(pid) != first, "a's statement ran on the server b holds"
    b.simple_query("commit")
    a.close()
    b.close()


def test_describe_statement_on_a_server_that_lacks_it(small_pool):
    a = raw_login(small_pool)
    b = raw_login(small_pool)
    out = run(a, parse_typed("select $1::int as n, 'x'::text as t", "desc1", [23]) + sync_msg())
    assert types(out) == b"1Z"
    b.simple_query("begin")
    out = run(a, describe_msg(b"S", "desc1") + sync_msg())
    assert types(out) == b"tTZ", out
    t_payload = dict(out)[b"T"]
    assert b"n\0" in t_payload and b"t\0" in t_payload
    b.simple_query("commit")
    a.close()
    b.close()


def test_close_is_answered_and_the_name_is_gone(small_pool):
    c = raw_login(small_pool)
    assert types(run(c, parse_msg("select 1", "gone") + sync_msg())) == b"1Z"
    out = run(c, close_msg(b"S", "gone") + sync_msg())
    assert types(out) == b"3Z", out
    out = run(c, bind_msg(stmt="gone") + execute_msg() + sync_msg())
    assert types(out) == b"EZ", out
    assert errors(out)[0]["C"] == "26000"
    # closing a name that never existed is no error, as in PostgreSQL
    assert types(run(c, close_msg(b"S", "never") + sync_msg())) == b"3Z"
    # and the name can be prepared again
    assert types(run(c, parse_msg("select 2", "gone") + sync_msg())) == b"1Z"
    out = run(c, bind_msg(stmt="gone") + execute_msg() + sync_msg())
    assert rows(out) == [["2"]]
    c.close()


def test_failed_parse_is_not_registered(small_pool):
    c = raw_login(small_pool)
    out = run(c, parse_msg("selec 1", "bad") + sync_msg())
    assert types(out) == b"EZ", out
    assert errors(out)[0]["C"] == "42601"
    out = run(c, bind_msg(stmt="bad") + execute_msg() + sync_msg())
    assert types(out) == b"EZ"
    assert errors(out)[0]["C"] == "26000"
    assert types(run(c, parse_msg("select 'fixed'", "bad") + sync_msg())) == b"1Z"
    assert rows(run(c, bind_msg(stmt="bad") + execute_msg() + sync_msg())) == [["fixed"]]
    c.close()


def test_parse_skipped_after_an_error_is_not_registered(small_pool):
    c = raw_login(small_pool)
    # a statement another client already prepared: answered locally, unless skipped
    other = raw_login(small_pool)
    assert types(run(other, parse_msg("select 'shared'", "o1") + sync_msg())) == b"1Z"
    out = run(c, bind_msg(stmt="nope") + parse_msg("select 'shared'", "mine") +
              parse_msg("select 'fresh one'", "mine2") + sync_msg())
    assert types(out) == b"EZ", out
    for name in ("mine", "mine2"):
        out = run(c, bind_msg(stmt=name) + execute_msg() + sync_msg())
        assert types(out) == b"EZ" and errors(out)[0]["C"] == "26000", (name, out)
    c.close()
    other.close()


def test_duplicate_name_is_an_error_like_postgres(small_pool):
    c = raw_login(small_pool)
    assert types(run(c, parse_msg("select 1", "dup") + sync_msg())) == b"1Z"
    out = run(c, parse_msg("select 2", "dup") + sync_msg())
    assert types(out) == b"EZ"
    assert errors(out)[0]["C"] == "42P05"
    assert rows(run(c, bind_msg(stmt="dup") + execute_msg() + sync_msg())) == [["1"]]
    c.close()


def test_pipeline_mixes_local_and_server_answers_in_order(small_pool):
    a = raw_login(small_pool)
    b = raw_login(small_pool)
    # a prepares one text; b's pipeline prepares it too (answered locally where the
    # server has it) and a new one, binds both, all before one Sync
    assert types(run(a, parse_msg("select 'p-one'", "x") + sync_msg())) == b"1Z"
    data = (parse_msg("select 'p-one'", "one") + bind_msg(stmt="one") + execute_msg() +
            parse_msg("select 'p-two', $1::int", "two") + bind_msg(["7"], stmt="two") +
            describe_msg(b"P") + execute_msg() + close_msg(b"S", "one") +
            bind_msg(stmt="two", params=["8"]) + execute_msg() + sync_msg())
    for _ in range(3):
        out = run(b, data)
        assert types(out) == b"12DC12TDC32DCZ", out
        assert rows(out) == [["p-one"], ["p-two", "7"], ["p-two", "8"]]
        run(b, close_msg(b"S", "two") + sync_msg())
    a.close()
    b.close()


def test_pipeline_of_many_statements_before_sync(small_pool):
    c = raw_login(small_pool)
    n = 60
    data = b"".join(parse_msg("select %d" % i, "m%d" % i) for i in range(n))
    data += b"".join(bind_msg(stmt="m%d" % i) + execute_msg() for i in range(n))
    out = run(c, data + sync_msg(), timeout=20)
    assert types(out) == b"1" * n + b"2DC" * n + b"Z"
    assert rows(out) == [[str(i)] for i in range(n)]
    c.close()


def test_messages_behind_a_rewritten_bind_take_their_own_step(small_pool):
    # A named Bind moves with the plain messages behind it as one piece; a Describe or
    # Close of a named statement behind it must still be rewritten or answered here.
    a = raw_login(small_pool)
    b = raw_login(small_pool)
    out = run(a, parse_typed("select $1::int + 1 as n", "inc", [23]) +
              parse_msg("select 'other' as o", "oth") + sync_msg())
    assert types(out) == b"11Z"
    b.simple_query("begin")     # a's next statements run on the server b does not hold
    data = (bind_msg(["1"], stmt="inc") + describe_msg(b"P") + describe_msg(b"S", "oth") +
            execute_msg() + close_msg(b"S", "oth") + close_msg(b"P") + flush_msg() +
            bind_msg(["41"], stmt="inc") + execute_msg() + sync_msg())
    for _ in range(2):
        out = run(a, data)
        assert types(out) == b"2TtTDC332DCZ", out
        assert rows(out) == [["2"], ["42"]]
        assert b"o\0" in [p for t, p in out if t == b"T"][1]
        assert types(run(a, parse_msg("select 'other' as o", "oth") + sync_msg())) == b"1Z"
    b.simple_query("commit")
    a.close()
    b.close()


@pytest.mark.parametrize("size", [1, 2000, 2100, 70000, 1 << 20])
def test_named_bind_with_parameters_of_any_size(small_pool, size):
    # small: the rewritten head and the rest go as one piece; past that piece's bound or
    # the input's first chunk, the head goes and the rest streams behind it
    c = raw_login(small_pool)
    assert types(run(c, parse_typed("select length($1::text), md5($1::text)", "len",
                                    [25]) + sync_msg())) == b"1Z"
    value = ("x%07d" % size * (size // 8 + 1))[:size]
    want = [str(size), hashlib.md5(value.encode()).hexdigest()]
    out = run(c, bind_msg([value], stmt="len") + execute_msg() + bind_msg([value], stmt="len") +
              execute_msg() + sync_msg(), timeout=30)
    assert types(out) == b"2DC2DCZ", out
    assert rows(out) == [want, want]
    c.close()


def test_lru_bounds_what_a_server_holds(one_server):
    c = raw_login(one_server)
    for i in range(5):
        assert types(run(c, parse_msg("select %d * 10" % i, "lru%d" % i) + sync_msg())) == b"1Z"
    for _ in range(3):
        for i in reversed(range(5)):
            out = run(c, bind_msg(stmt="lru%d" % i) + execute_msg() + sync_msg())
            assert rows(out) == [[str(i * 10)]], out
    held = rows(c.simple_query("select count(*) from pg_prepared_statements"))[0][0]
    assert int(held) <= 2
    c.close()


def test_deallocate_and_discard_by_simple_query(small_pool):
    c = raw_login(small_pool)
    for name in ("d1", "d2", "d3"):
        assert types(run(c, parse_msg("select '%s'" % name, name) + sync_msg())) == b"1Z"
    out = c.simple_query("DEALLOCATE d1")
    assert (b"C", b"DEALLOCATE\0") in out, out
    assert errors(run(c, bind_msg(stmt="d1") + execute_msg() + sync_msg()))[0]["C"] == "26000"
    assert rows(run(c, bind_msg(stmt="d2") + execute_msg() + sync_msg())) == [["d2"]]
    out = c.simple_query("DEALLOCATE ALL")
    assert (b"C", b"DEALLOCATE ALL\0") in out, out
    for name in ("d2", "d3"):
        assert errors(run(c, bind_msg(stmt=name) + execute_msg() + sync_msg()))[0]["C"] == "26000"
    assert types(run(c, parse_msg("select 'again'", "d2") + sync_msg())) == b"1Z"
    out = c.simple_query("DISCARD ALL")
    assert (b"C", b"DISCARD ALL\0") in out, out
    assert errors(run(c, bind_msg(stmt="d2") + execute_msg() + sync_msg()))[0]["C"] == "26000"
    # other clients' statements survive a client's DEALLOCATE ALL on a shared server
    other = raw_login(small_pool)
    assert types(run(other, parse_msg("select 'kept'", "k") + sync_msg())) == b"1Z"
    c.simple_query("DEALLOCATE ALL")
    assert rows(run(other, bind_msg(stmt="k") + execute_msg() + sync_msg())) == [["kept"]]
    c.close()
    other.close()


def test_deallocate_in_any_case_and_among_other_words(small_pool):
    # the cheap look for DEALLOCATE/DISCARD before the parse must miss none of them
    c = raw_login(small_pool)
    for sql in ("dEaLlOcAtE mixed", "/* d, dd */ Deallocate mixed", "DEALLOCATE PREPARE mixed",
                "-- discard\n\tdiScArD ALL", "select 'dd'; deallocate all"):
        assert types(run(c, parse_msg("select 'm'", "mixed") + sync_msg())) == b"1Z"
        out = c.simple_query(sql)
        assert not errors(out), (sql, out)
        out = run(c, bind_msg(stmt="mixed") + execute_msg() + sync_msg())
        assert errors(out)[0]["C"] == "26000", (sql, out)
    # words that only look alike leave the statement alone
    assert types(run(c, parse_msg("select 'm'", "mixed") + sync_msg())) == b"1Z"
    c.simple_query("select 'discarded deallocated' as d")
    assert rows(run(c, bind_msg(stmt="mixed") + execute_msg() + sync_msg())) == [["m"]]
    c.close()


def test_unnamed_statements_pass_unchanged(small_pool):
    c = raw_login(small_pool)
    out = run(c, parse_msg("select $1::text || '!'", "")[:-2] + struct.pack("!H", 0) +
              bind_msg(["hi"]) + execute_msg() + sync_msg())
    assert types(out) == b"12DCZ"
    assert rows(out) == [["hi!"]]
    c.close()


def test_pgmoat_names_are_reserved(small_pool):
    c = raw_login(small_pool)
    out = run(c, parse_msg("select 1", "pgmoat_ps_1") + sync_msg())
    assert types(out) == b"EZ" and errors(out)[0]["C"] == "42P14", out
    out = run(c, bind_msg(stmt="pgmoat_ps_1") + execute_msg() + sync_msg())
    assert types(out) == b"EZ" and errors(out)[0]["C"] == "26000", out
    assert rows(c.simple_query("select 'still here'")) == [["still here"]]
    c.close()


def test_statement_used_inside_a_transaction_and_after(small_pool):
    c = raw_login(small_pool)
    assert types(run(c, parse_msg("select txid_current_if_assigned() is null", "tx") +
                     sync_msg())) == b"1Z"
    assert c.simple_query("begin")[-1] == (b"Z", b"T")
    out = run(c, bind_msg(stmt="tx") + execute_msg() + sync_msg())
    assert out[-1] == (b"Z", b"T") and rows(out) == [["t"]]
    out = c.simple_query("rollback")
    assert out[-1] == (b"Z", b"I")
    assert rows(run(c, bind_msg(stmt="tx") + execute_msg() + sync_msg())) == [["t"]]
    c.close()


def test_off_means_names_reach_the_server_unchanged(proxy_factory):
    p = proxy_factory(settings={"pool_mode": "transaction", "default_pool_size": "1",
                                "max_prepared_statements": "0"})
    c = raw_login(p)
    assert types(run(c, parse_msg("select 1", "plain") + sync_msg())) == b"1Z"
    names = rows(c.simple_query("select name from pg_prepared_statements"))
    assert ["plain"] in names
    c.close()


# ---------------------------------------------------------------- policies

DENY_POLICY = """\
local moat = require "moat"
local P = {}
function P.on_query(s, q)
	if q.sql:find("forbidden", 1, true) then return moat.deny("no forbidden things") end
	if q.sql:find("rewrite me", 1, true) then return moat.rewrite("select 'rewritten'") end
end
return P
"""


def test_policy_verdict_holds_for_renamed_statements(policy_proxy):
    p = policy_proxy(policies={"deny.lua": DENY_POLICY},
                     settings={"pool_mode": "transaction", "default_pool_size": "2",
                               "max_prepared_statements": "100"})
    a = raw_login(p)
    b = raw_login(p)
    out = run(a, parse_msg("select 'forbidden'", "f") + sync_msg())
    assert types(out) == b"EZ" and errors(out)[0]["C"] == "42501", out
    b.simple_query("begin")  # a's next request goes to another server
    out = run(a, bind_msg(stmt="f") + execute_msg() + sync_msg())
    assert types(out) == b"EZ" and errors(out)[0]["C"] == "26000", out
    # a rewrite is what gets registered, and what runs on any server
    assert types(run(a, parse_msg("select 'rewrite me'", "r") + sync_msg())) == b"1Z"
    b.simple_query("commit")
    assert rows(run(a, bind_msg(stmt="r") + execute_msg() + sync_msg())) == [["rewritten"]]
    b.simple_query("begin")
    assert rows(run(a, bind_msg(stmt="r") + execute_msg() + sync_msg())) == [["rewritten"]]
    b.simple_query("commit")
    a.close()
    b.close()


# ---------------------------------------------------------------- node-postgres

NODE_SCRIPT = r"""
const { Client } = require('pg');
async function worker(id, port) {
  const c = new Client({ host: '127.0.0.1', port, user: 'app', password: process.env.PGPASSWORD,
                         database: 'app' });
  await c.connect();
  let sum = 0;
  for (let i = 0; i < 40; i++) {
    const r = await c.query({ name: 'add', text: 'select $1::int + $2::int as s', values: [i, id] });
    sum += r.rows[0].s;
    const t = await c.query({ name: 'who', text: 'select $1::text as w, pg_backend_pid() as pid',
                              values: ['w' + id] });
    if (t.rows[0].w !== 'w' + id) throw new Error('wrong row ' + JSON.stringify(t.rows[0]));
    if (i % 10 === 0) {
      await c.query('begin');
      await c.query({ name: 'add', text: 'select $1::int + $2::int as s', values: [1, 1] });
      await c.query('commit');
    }
  }
  await c.end();
  return sum;
}
(async () => {
  const port = parseInt(process.argv[2], 10);
  const ids = [1, 2, 3, 4, 5, 6, 7, 8];
  const sums = await Promise.all(ids.map((id) => worker(id, port)));
  console.log(JSON.stringify(sums));
})().catch((e) => { console.error('FAILED: ' + e.message); process.exit(1); });
"""


def node_pg_dir():
    """node-postgres installed by scripts/test (or here, when npm can reach its registry)."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if not node:
        pytest.skip("node is not installed: the node-postgres test needs Node.js")
    cache = Path(os.environ.get("PGMOAT_NODE_DIR", REPO / "build" / "node-pg"))
    if (cache / "node_modules" / "pg").is_dir():
        return node, cache
    if not npm:
        pytest.skip("npm is not installed and node-postgres is not in %s" % cache)
    cache.mkdir(parents=True, exist_ok=True)
    cp = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache), "pg@8"],
                        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    if cp.returncode != 0 or not (cache / "node_modules" / "pg").is_dir():
        pytest.skip("could not install node-postgres (offline?): %s" % cp.stderr[-300:])
    return node, cache


@pytest.mark.timeout(300)
def test_node_postgres_named_statements_from_concurrent_clients(small_pool):
    node, cache = node_pg_dir()
    script = cache / "prepared_test.js"
    script.write_text(NODE_SCRIPT)
    env = dict(os.environ, PGPASSWORD=PASSWORDS["app"], NODE_PATH=str(cache / "node_modules"))
    cp = subprocess.run([node, str(script), str(small_pool.port)], capture_output=True, text=True,
                        timeout=120, env=env, cwd=str(cache), stdin=subprocess.DEVNULL)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    sums = json.loads(cp.stdout.strip().splitlines()[-1])
    assert sums == [sum(range(40)) + 40 * i for i in range(1, 9)]


def test_statement_is_not_reprepared_under_other_lexing_settings(small_pool):
    a = raw_login(small_pool)
    b = raw_login(small_pool)
    assert types(run(a, parse_msg("select 'a\\b' as v", "lex") + sync_msg())) == b"1Z"
    first = backend_pid(a)
    a.simple_query("SET standard_conforming_strings = off")
    b.simple_query("begin")
    if backend_pid(b) != first:  # b must hold the server that has a's statement
        b.simple_query("commit")
        pytest.skip("could not arrange for another server")
    out = run(a, bind_msg(stmt="lex") + execute_msg() + sync_msg())
    assert types(out) == b"EZ", out
    assert errors(out)[0]["C"] == "55000"
    b.simple_query("commit")
    a.simple_query("SET standard_conforming_strings = on")
    b.simple_query("begin")
    out = run(a, bind_msg(stmt="lex") + execute_msg() + sync_msg())
    assert rows(out) == [["a\\b"]], out
    b.simple_query("commit")
    a.close()
    b.close()


def test_copy_through_named_statements_keeps_replies_in_step(small_pool):
    c = raw_login(small_pool)
    assert types(run(c, parse_msg("copy copy_t from stdin", "cin") +
                     parse_msg("copy (select 7, 'seven') to stdout", "cout") +
                     parse_msg("select count(*) from copy_t where b = 'prep-copy'", "cnt") +
                     sync_msg())) == b"111Z"
    # COPY FROM STDIN with the Sync sent at once, as libpq does: the server ignores it
    c.send(bind_msg(stmt="cin") + execute_msg() + sync_msg())
    out = c.read_until({b"G"})
    assert types(out) == b"2G", out
    c.send(msg(b"d", b"1\tprep-copy\n2\tprep-copy\n") + msg(b"c") + sync_msg())
    out = c.read_until({b"Z"})
    assert types(out) == b"CZ", out
    out = run(c, bind_msg(stmt="cout") + execute_msg() + sync_msg())
    assert types(out) == b"2HdcCZ", out
    # a named statement after both still gets its own replies
    out = run(c, bind_msg(stmt="cnt") + execute_msg() + sync_msg())
    assert rows(out) == [["2"]], out
    c.close()


def test_client_vanishing_mid_pipeline_leaves_a_usable_pool(small_pool):
    for _ in range(3):
        c = raw_login(small_pool)
        c.send(parse_msg("select pg_sleep(0.2)", "slow") + bind_msg(stmt="slow") + execute_msg() +
               parse_msg("select 1", "after"))
        c.close(abort=True)
    c = raw_login(small_pool)
    assert types(run(c, parse_msg("select 'fine'", "after") + bind_msg(stmt="after") +
                     execute_msg() + sync_msg())) == b"12DCZ"
    c.close()


@pytest.mark.parametrize("mode", ["error", "warn"])
def test_session_state_check_with_prepared_statements(proxy_factory, mode):
    # Both steps read a Parse whole: the check runs once, and what it lets through is
    # tracked (named) or moves with the messages behind it (unnamed).
    p = proxy_factory(settings={"pool_mode": "transaction", "default_pool_size": "2",
                                "max_prepared_statements": "10",
                                "transaction_session_state": mode})
    c = raw_login(p)
    for name in ("", "st"):
        out = run(c, parse_msg("SET work_mem = '8MB'", name) + bind_msg(stmt=name) +
                  execute_msg() + sync_msg())
        if mode == "error":
            assert types(out) == b"EZ", out
            assert errors(out)[0]["C"] == "0A000"
        else:
            assert types(out) == b"N12CZ", out
    # a refused named Parse is not registered; an allowed one is
    out = run(c, bind_msg(stmt="st") + execute_msg() + sync_msg())
    assert types(out) == (b"EZ" if mode == "error" else b"2CZ"), out
    out = run(c, parse_msg("select 'plain'") + bind_msg() + describe_msg(b"P") + execute_msg() +
              sync_msg())
    assert types(out) == b"12TDCZ" and rows(out) == [["plain"]], out
    if mode == "warn":
        p.wait_log(r"leaves session state on a shared server")
    c.close()
