"""pgbench through every pool mode, simple and extended protocol, without a failure."""

import pytest

from conftest import pgbench


@pytest.fixture(params=["session", "transaction", "statement"])
def pool_proxy(request, proxy_session, proxy_tx, proxy_stmt):
    return {"session": proxy_session, "transaction": proxy_tx,
            "statement": proxy_stmt}[request.param]


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_pgbench_select_only_has_zero_failures(pool_proxy, protocol):
    res = pgbench(pool_proxy.port, ["-S", "-M", protocol, "-c", "8", "-j", "2", "-t", "200"])
    assert res.returncode == 0, res
    assert res.processed == 8 * 200, res
    assert res.failed in (0, None), res


def test_pgbench_tpcb_like_in_transaction_mode(proxy_tx):
    res = pgbench(proxy_tx.port, ["-c", "4", "-t", "50"])
    assert res.returncode == 0 and res.processed == 200, res


def test_pgbench_connect_per_transaction(proxy_tx):
    res = pgbench(proxy_tx.port, ["-S", "-C", "-c", "4", "-t", "50"])
    assert res.returncode == 0 and res.processed == 200, res
