"""Signals: SIGHUP reloads; SIGINT (and pgmoat's SIGTERM) let transactions finish."""

import signal
import socket
import time

import psycopg2
import pytest

from conftest import pgmoat_only, wait_until


def test_sighup_reload_changes_default_pool_size(proxy_factory):
    p = proxy_factory(settings={"default_pool_size": "3"})
    assert p.config_value("default_pool_size") == "3"
    p.settings["default_pool_size"] = "9"
    p.write_config()
    p.reload()
    wait_until(lambda: p.config_value("default_pool_size") == "9", 5, 0.1, "reload")
    assert p.query("select 1") == [(1,)]


def refuses_new_clients(proxy):
    try:
        c = proxy.connect(connect_timeout=2)
    except psycopg2.OperationalError:
        return True
    try:
        with c.cursor() as cur:
            cur.execute("select 1")
        return False
    except psycopg2.Error:
        return True
    finally:
        c.close()


def drain_on(proxy, sig):
    c = proxy.connect(autocommit=False)
    try:
        with c.cursor() as cur:
            cur.execute("insert into leak_t values ('drain', 1) returning v")
        proxy.expect_exit = True
        proxy.signal(sig)
        time.sleep(0.5)
        assert proxy.alive(), "proxy exited with a transaction open"
        with c.cursor() as cur:
            cur.execute("select 2")
            assert cur.fetchone() == (2,)
            cur.execute("delete from leak_t where tag = 'drain'")
        c.commit()
    finally:
        c.close()
    wait_until(lambda: not proxy.alive(), 10, 0.1, "proxy to exit after the transaction")


def test_sigint_lets_open_transaction_finish_then_exits(proxy_factory):
    p = proxy_factory(settings={"pool_mode": "transaction"})
    drain_on(p, signal.SIGINT)


@pgmoat_only
def test_sigterm_drains_like_sigint(proxy_factory):
    p = proxy_factory(settings={"pool_mode": "transaction"})
    drain_on(p, signal.SIGTERM)


def test_sigterm_exits_promptly_when_idle(proxy_factory):
    p = proxy_factory()
    assert p.query("select 1") == [(1,)]
    p.expect_exit = True
    p.signal(signal.SIGTERM)
    wait_until(lambda: not p.alive(), 10, 0.1, "proxy to exit")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", p.port), timeout=1).close()
