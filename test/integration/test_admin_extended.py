"""The admin console over the extended query protocol (Parse/Bind/Describe/Execute/Sync)."""

import json
import os
import shutil
import struct
import subprocess
import textwrap

import pytest

from conftest import (PASSWORDS, REPO, RawConn, bind_msg, cstr, data_row_values, describe_msg,
                      execute_msg, msg, parse_error_fields, parse_msg, pgmoat_only, query_msg,
                      sync_msg)

pytestmark = pgmoat_only

NODE_PG = os.environ.get("PGMOAT_NODE_PG", str(REPO / "build" / "node-pg" / "node_modules" / "pg"))


@pytest.fixture(scope="module")
def proxy(module_proxy_factory):
    return module_proxy_factory()


def console(proxy, user="admin"):
    c = RawConn(proxy.port)
    c.login(user, "pgbouncer", password=PASSWORDS[user])
    return c


def types(msgs):
    return b"".join(t for t, _ in msgs)


def row_names(payload):
    """Column names of a RowDescription payload."""
    n = struct.unpack("!H", payload[:2])[0]
    names, pos = [], 2
    for _ in range(n):
        end = payload.index(b"\0", pos)
        names.append(payload[pos:end].decode())
        pos = end + 1 + 18
    return names


def simple_columns(proxy, what, user="admin"):
    cols, _ = proxy.show(what, user)
    return cols


def extended(c, sql, describe=b"P"):
    c.send(parse_msg(sql) + bind_msg() + (describe_msg(describe) if describe else b"") +
           execute_msg() + sync_msg())
    return c.read_until({b"Z"})


def test_show_pools_answers_parse_bind_describe_execute_sync(proxy):
    c = console(proxy)
    try:
        msgs = extended(c, "SHOW POOLS")
        t = types(msgs)
        assert t.startswith(b"12T") and t.endswith(b"CZ"), t
        assert b"E" not in t
        desc = [p for k, p in msgs if k == b"T"][0]
        assert row_names(desc) == simple_columns(proxy, "POOLS")
        tag = [p for k, p in msgs if k == b"C"][0]
        assert tag.rstrip(b"\0") == b"SHOW"
        # the console keeps answering simple queries afterwards
        c.send(query_msg("SHOW VERSION"))
        assert types(c.read_until({b"Z"})) == b"TDCZ"
    finally:
        c.close()


def test_describe_statement_gives_no_parameters_and_the_columns(proxy):
    c = console(proxy)
    try:
        c.send(parse_msg("SHOW DATABASES", name="dbs") + describe_msg(b"S", "dbs") + sync_msg())
        msgs = c.read_until({b"Z"})
        assert types(msgs) == b"1tTZ"
        assert msgs[1][1] == struct.pack("!H", 0)
        assert row_names(msgs[2][1]) == simple_columns(proxy, "DATABASES")
        # the named statement is bound and executed twice
        for _ in range(2):
            c.send(bind_msg(stmt="dbs") + execute_msg() + sync_msg())
            t = types(c.read_until({b"Z"}))
            assert t.startswith(b"2D") and t.endswith(b"CZ"), t
    finally:
        c.close()


def test_rows_match_the_simple_protocol(proxy):
    c = console(proxy)
    try:
        msgs = extended(c, "SHOW CONFIG", describe=None)
        ext_rows = [data_row_values(p) for k, p in msgs if k == b"D"]
        c.send(query_msg("SHOW CONFIG"))
        simple_rows = [data_row_values(p) for k, p in c.read_until({b"Z"}) if k == b"D"]
        assert ext_rows == simple_rows and ext_rows
    finally:
        c.close()


def test_error_skips_to_sync_and_the_next_batch_works(proxy):
    c = console(proxy)
    try:
        c.send(parse_msg("SHOW NOSUCHTHING") + bind_msg() + execute_msg() +
               parse_msg("SHOW VERSION") + bind_msg() + execute_msg() + sync_msg())
        msgs = c.read_until({b"Z"})
        assert types(msgs) == b"12EZ", types(msgs)
        assert "invalid command" in parse_error_fields(msgs[2][1])["M"]
        assert types(extended(c, "SHOW VERSION")) == b"12TDCZ"
    finally:
        c.close()


def test_parameters_and_binary_results_are_refused(proxy):
    c = console(proxy)
    try:
        c.send(parse_msg("SHOW POOLS") + bind_msg(params=["x"]) + execute_msg() + sync_msg())
        msgs = c.read_until({b"Z"})
        assert types(msgs) == b"1EZ"
        assert parse_error_fields(msgs[1][1])["C"] == "08P01"
        binary = msg(b"B", cstr("") + cstr("") + struct.pack("!HH", 0, 0) +
                     struct.pack("!HH", 1, 1))
        c.send(parse_msg("SHOW POOLS") + binary + execute_msg() + sync_msg())
        msgs = c.read_until({b"Z"})
        assert types(msgs) == b"1EZ"
        assert parse_error_fields(msgs[1][1])["C"] == "0A000"
    finally:
        c.close()


def test_unknown_statement_and_portal_are_errors(proxy):
    c = console(proxy)
    try:
        c.send(bind_msg(stmt="nope") + sync_msg())
        msgs = c.read_until({b"Z"})
        assert types(msgs) == b"EZ" and parse_error_fields(msgs[0][1])["C"] == "26000"
        c.send(execute_msg("nope") + sync_msg())
        msgs = c.read_until({b"Z"})
        assert types(msgs) == b"EZ" and parse_error_fields(msgs[0][1])["C"] == "34000"
        # portals end with Sync
        c.send(parse_msg("SHOW VERSION") + bind_msg(portal="p1") + sync_msg())
        assert types(c.read_until({b"Z"})) == b"12Z"
        c.send(execute_msg("p1") + sync_msg())
        assert types(c.read_until({b"Z"})) == b"EZ"
    finally:
        c.close()


def test_describe_does_not_run_a_command_that_changes_state(proxy):
    c = console(proxy)
    try:
        # Describe of PAUSE answers NoData without pausing; Execute then runs it.
        c.send(parse_msg("PAUSE app") + bind_msg() + describe_msg(b"P") + sync_msg())
        assert types(c.read_until({b"Z"})) == b"12nZ"
        assert all(r["paused"] == 0 for r in proxy.show_dicts("DATABASES") if r["name"] == "app")
        msgs = extended(c, "RECONNECT app")
        assert types(msgs) == b"12nCZ"
        assert msgs[3][1].rstrip(b"\0") == b"RECONNECT"
    finally:
        c.close()


def test_stats_users_stay_read_only_over_the_extended_protocol(proxy):
    c = console(proxy, "stats")
    try:
        assert b"E" not in types(extended(c, "SHOW POOLS"))
        for cmd in ("SHOW FDS", "RELOAD", "PAUSE", "SUSPEND", "KILL app", "KILL_CLIENT 1",
                    "SET default_pool_size = 3"):
            msgs = extended(c, cmd, describe=None)
            errs = [parse_error_fields(p) for k, p in msgs if k == b"E"]
            assert errs and "admin access needed" in errs[0]["M"], (cmd, msgs)
    finally:
        c.close()


def test_admin_runs_commands_over_the_extended_protocol(proxy):
    c = console(proxy)
    try:
        msgs = extended(c, "RELOAD")
        assert types(msgs) == b"12nCZ", msgs
    finally:
        c.close()


NODE_SCRIPT = textwrap.dedent("""
    const { Client } = require(process.env.NODE_PG);
    (async () => {
      const c = new Client({ host: '127.0.0.1', port: +process.env.PORT, user: 'admin',
                             password: process.env.PW, database: 'pgbouncer' });
      await c.connect();
      const a = await c.query({ text: 'SHOW POOLS', queryMode: 'extended' });
      const b = await c.query({ name: 'pools', text: 'SHOW POOLS' });
      const d = await c.query({ name: 'pools', text: 'SHOW POOLS' });
      let err = null;
      try { await c.query({ text: 'SHOW NOSUCH', queryMode: 'extended' }); }
      catch (e) { err = e.message; }
      const v = await c.query({ text: 'SHOW VERSION', queryMode: 'extended' });
      console.log(JSON.stringify({ cols: a.fields.map(f => f.name), rows: a.rows.length,
                                   named: b.rows.length, again: d.rows.length, err,
                                   version: v.rows[0].version }));
      await c.end();
    })().catch(e => { console.error(e); process.exit(1); });
""")


def test_node_postgres_runs_show_pools_as_an_extended_query(proxy, tmp_path):
    node = shutil.which("node")
    if not node:
        pytest.skip("node is not installed (Debian package nodejs)")
    if not os.path.isdir(NODE_PG):
        pytest.skip("node-postgres not found at %s: scripts/test installs it with "
                    "`npm install pg` (or set PGMOAT_NODE_PG)" % NODE_PG)
    # keep a pool busy so SHOW POOLS has rows
    proxy.query("select 1")
    script = tmp_path / "show_pools.js"
    script.write_text(NODE_SCRIPT)
    env = dict(os.environ, NODE_PG=NODE_PG, PORT=str(proxy.port), PW=PASSWORDS["admin"])
    r = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["cols"] == simple_columns(proxy, "POOLS")
    assert out["rows"] >= 1 and out["named"] == out["rows"] == out["again"]
    assert "invalid command" in out["err"]
    assert out["version"].startswith("PgBouncer") or out["version"]
