"""
SHOW POLICY_STATS: how long policy evaluation takes per statement (issue 4,
point 8: bench/ reports its p99).

pgmoat-only (policies). One row per hook; on_query counts every evaluation
(one per simple Query message, one per Parse) with its latency percentiles in
microseconds, and the evaluations a policy error or overrun decided.
"""

import contextlib

import psycopg2
import pytest

from conftest import IS_PGBOUNCER, bind_msg, execute_msg, parse_msg, raw_login, sync_msg

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="policies are pgmoat-only")

TIME_BUDGET_MS = 30

# Allows everything but a statement naming ps_spin, which never returns (the
# time budget stops it), and one naming ps_boom, which raises.
STATS_POLICY = """\
local P = {}
function P.on_query(s, q)
	if q.sql:find("ps_spin", 1, true) then
		while true do end
	end
	if q.sql:find("ps_boom", 1, true) then
		error("ps_boom")
	end
end
return P
"""

COLUMNS = ["hook", "calls", "errors", "avg_us", "p50_us", "p90_us", "p99_us", "max_us"]


@pytest.fixture
def stats_proxy(policy_proxy):
    return policy_proxy(policies={"stats.lua": STATS_POLICY},
                        policy_settings={"time_budget": "%dms" % TIME_BUDGET_MS})


def policy_stats(proxy, user="admin"):
    """{hook: row} of SHOW POLICY_STATS, numbers as floats (errors None where not counted)."""
    cols, rows = proxy.show("POLICY_STATS", user)
    assert cols == COLUMNS
    out = {}
    for r in rows:
        out[r[0]] = {k: (v if k == "hook" or v is None else float(v)) for k, v in zip(cols, r)}
    assert list(out) == ["on_query", "on_query_lua"], rows
    return out


def on_query_row(proxy, user="admin"):
    return policy_stats(proxy, user)["on_query"]


def parse_exec(c, sql):
    """One Parse (an on_query evaluation) + Bind/Execute/Sync on a raw connection."""
    c.send(parse_msg(sql) + bind_msg() + execute_msg() + sync_msg())
    return c.read_until({b"Z"}, 10)


def assert_sane(row):
    assert 0 < row["p50_us"] <= row["p90_us"] <= row["p99_us"] <= row["max_us"]
    assert row["avg_us"] <= row["max_us"]


def test_policy_stats_counts_every_evaluation_simple_and_extended(stats_proxy):
    before = on_query_row(stats_proxy)
    with contextlib.closing(stats_proxy.connect(autocommit=True)) as conn, conn.cursor() as cur:
        for i in range(20):
            cur.execute("select %d" % i)
    c = raw_login(stats_proxy)
    try:
        for i in range(5):
            out = parse_exec(c, "select %d" % i)
            assert b"E" not in [t for t, _ in out]
    finally:
        c.close()
    stats = policy_stats(stats_proxy)
    after, lua = stats["on_query"], stats["on_query_lua"]
    # psycopg2 may add its own statements (none in autocommit), never fewer than ours
    assert after["calls"] - before["calls"] >= 25
    assert after["calls"] - before["calls"] < 30
    assert after["errors"] == before["errors"] == 0
    assert_sane(after)
    # an allow-everything policy on a tiny statement takes well under the budget
    assert after["p50_us"] < TIME_BUDGET_MS * 1000
    # every evaluation entered Lua (the policy has on_query), and Lua is a part of it
    assert lua["calls"] == after["calls"]
    assert lua["errors"] is None
    assert_sane(lua)
    for k in ("p50_us", "p90_us", "p99_us", "max_us", "avg_us"):
        assert lua[k] <= after[k], k


def test_policy_stats_counts_errors_and_overruns_and_keeps_percentiles_apart(stats_proxy):
    with contextlib.closing(stats_proxy.connect(autocommit=True)) as conn, conn.cursor() as cur:
        for i in range(50):
            cur.execute("select %d" % i)
        for marker in ("ps_boom", "ps_spin"):
            with pytest.raises(psycopg2.Error) as e:
                cur.execute("select '%s'" % marker)
            assert e.value.pgcode == "42501"
        cur.execute("select 1")
        assert cur.fetchall() == [(1,)]
    stats = policy_stats(stats_proxy)
    row = stats["on_query"]
    # the runaway loop was stopped inside Lua, so the Lua row sees it too
    assert stats["on_query_lua"]["max_us"] >= TIME_BUDGET_MS * 1000
    assert row["errors"] == 2
    assert row["calls"] >= 53
    assert_sane(row)
    # the runaway call ran until the budget stopped it: it is the maximum...
    assert row["max_us"] >= TIME_BUDGET_MS * 1000
    # ...and one slow call in 53 is above the median and the 90th percentile
    assert row["p90_us"] < TIME_BUDGET_MS * 1000
    assert row["avg_us"] < row["max_us"]


def test_policy_stats_is_readable_by_stats_users(stats_proxy):
    stats_proxy.query("select 1")
    row = on_query_row(stats_proxy, user="stats")
    assert row["calls"] >= 1


def test_policy_stats_without_policies_reports_zero_calls(proxy_factory):
    p = proxy_factory()
    p.query("select 1")
    stats = policy_stats(p)
    for hook, row in stats.items():
        assert row["calls"] == 0, hook
        assert all(row[k] == 0 for k in COLUMNS[3:]), hook
    assert stats["on_query"]["errors"] == 0
