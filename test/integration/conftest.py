"""
Integration harness: a throwaway PostgreSQL 15 and a proxy (pgmoat or the
Debian pgbouncer 1.18) on free loopback ports.

    PGMOAT_TEST_TARGET=pgmoat|pgbouncer   which proxy the tests drive (pgmoat)
    PGMOAT_BIN=path                       pgmoat binary (<repo>/build/src/pgmoat)

The same tests run against both, so the harness and the tests can be
validated against pgbouncer before pgmoat exists. Tests of pgmoat-only
behaviour are skipped for pgbouncer; requirements that pgbouncer itself fails
are xfail for the pgbouncer target only (strict: an XPASS is an error).

Every process started here is stopped by PID; every wait is bounded.
"""

import base64
import contextlib
import hashlib
import hmac
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest

REPO = Path(__file__).resolve().parents[2]
TARGET = os.environ.get("PGMOAT_TEST_TARGET", "pgmoat")
if TARGET not in ("pgmoat", "pgbouncer"):
    raise SystemExit("PGMOAT_TEST_TARGET must be pgmoat or pgbouncer")
IS_PGBOUNCER = TARGET == "pgbouncer"
IS_PGMOAT = TARGET == "pgmoat"
PGMOAT_BIN = os.environ.get("PGMOAT_BIN", str(REPO / "build" / "src" / "pgmoat"))
PGBOUNCER_BIN = "/usr/sbin/pgbouncer"
PGBIN = Path("/usr/lib/postgresql/15/bin")
PG_OS_USER = "postgres"

# Passwords of the PostgreSQL roles (and of the proxy's userlist by default).
PASSWORDS = {
    "app": "apppw",
    "md5user": "md5pw",
    "plainuser": "plainpw",
    "trustuser": "trustpw",
    "admin": "adminpw",
    "stats": "statspw",
}

# Where a sanitizer or a crash shows up in the proxy's output.
SANITIZER_RE = re.compile(r"(ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|"
                          r"SUMMARY: UndefinedBehaviorSanitizer)")

pgmoat_only = pytest.mark.skipif(IS_PGBOUNCER, reason="pgmoat-only behaviour")


def xfail_pgbouncer(reason):
    """pgbouncer 1.18 fails this requirement; pgmoat must pass it."""
    return pytest.mark.xfail(IS_PGBOUNCER, reason="pgbouncer 1.18: " + reason, strict=True)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "timeout(seconds): per-test time limit (default 120)")


# ---------------------------------------------------------------- utilities

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GiveUp(AssertionError):
    """Raised by a wait_until predicate when waiting longer cannot help."""


def wait_until(pred, timeout=10.0, interval=0.05, what="condition"):
    """Poll pred() until truthy; return its value or fail after timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except GiveUp:
            raise
        except Exception as e:  # noqa: BLE001 - polled predicates may raise
            last_exc = e
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s (last error: %r)"
                         % (timeout, what, last_exc))


def chown_postgres(path):
    pw = pwd.getpwnam(PG_OS_USER)
    os.chown(path, pw.pw_uid, pw.pw_gid)


def make_tempdir(prefix):
    d = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(d, 0o755)
    chown_postgres(d)
    return d


def md5_secret(user, password):
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def scram_secret(password, salt=None, iterations=4096):
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return "SCRAM-SHA-256$%d:%s$%s:%s" % (iterations, b64(salt), b64(stored_key), b64(server_key))


def proc_status(pid):
    """Fields of /proc/PID/status as a dict of strings."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


_SANITIZED = {}


def binary_is_sanitized(path):
    """True when the binary was built with ASan (its RSS then says nothing)."""
    if path not in _SANITIZED:
        try:
            with open(path, "rb") as f:
                _SANITIZED[path] = b"__asan_init" in f.read()
        except OSError:
            _SANITIZED[path] = False
    return _SANITIZED[path]


def vm_hwm_kb(pid):
    return int(proc_status(pid)["VmHWM"].split()[0])


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); look at its state.
    try:
        return proc_status(pid).get("State", "").split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def tcp_local_ports(pid, remote_port):
    """Local ports of pid's TCP connections to 127.0.0.1:remote_port (from /proc)."""
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except FileNotFoundError:
        return set()
    ports = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local, remote, inode = parts[1], parts[2], parts[9]
            if inode in inodes and int(remote.split(":")[1], 16) == remote_port:
                ports.add(int(local.split(":")[1], 16))
    return ports


# ---------------------------------------------------------------- PostgreSQL

PG_HBA = """\
local   all all                   trust
host    all trustuser 127.0.0.1/32 trust
host    all md5user   127.0.0.1/32 md5
host    all plainuser 127.0.0.1/32 password
host    all all       127.0.0.1/32 scram-sha-256
"""

PG_SETUP_SQL = """
CREATE ROLE app LOGIN PASSWORD 'apppw';
CREATE ROLE admin LOGIN PASSWORD 'adminpw';
CREATE ROLE plainuser LOGIN PASSWORD 'plainpw';
CREATE ROLE trustuser LOGIN;
CREATE ROLE stats LOGIN PASSWORD 'statspw';
SET password_encryption = 'md5';
CREATE ROLE md5user LOGIN PASSWORD 'md5pw';
RESET password_encryption;
CREATE DATABASE app OWNER app;
CREATE DATABASE bench OWNER app;
"""

APP_SETUP_SQL = """
SET ROLE app;
CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 100) g;
CREATE TABLE leak_t (tag text, v int);
CREATE TABLE copy_t (a int, b text);
CREATE TABLE blob_t (id int, data bytea);
CREATE SEQUENCE check_seq;
GRANT ALL ON ALL TABLES IN SCHEMA public TO PUBLIC;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO PUBLIC;
GRANT ALL ON SCHEMA public TO PUBLIC;
"""


class PgCluster:
    """A throwaway PostgreSQL 15 cluster owned by the postgres OS user."""

    def __init__(self, base):
        self.base = base
        self.data = base / "data"
        self.sockdir = str(base)
        self.port = free_port()
        self.logfile = base / "postgres.log"
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def initdb(self):
        subprocess.run(["runuser", "-u", PG_OS_USER, "--", str(PGBIN / "initdb"),
                        "-D", str(self.data), "-U", "postgres", "-A", "trust",
                        "-E", "UTF8", "--locale=C", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n".join([
                "listen_addresses = '127.0.0.1'",
                "port = %d" % self.port,
                "unix_socket_directories = '%s'" % self.sockdir,
                "max_connections = 200",
                "password_encryption = 'scram-sha-256'",
                "fsync = off",
                "synchronous_commit = off",
                "full_page_writes = off",
                "shared_buffers = 64MB",
                "log_line_prefix = '%m [%p] %u@%d '",
                "log_min_messages = warning",
                "restart_after_crash = on",
                ""]))
        (self.data / "pg_hba.conf").write_text(PG_HBA)

    def start(self, timeout=30):
        fh = open(self.logfile, "ab")
        try:
            self.proc = subprocess.Popen([str(PGBIN / "postgres"), "-D", str(self.data)],
                                         user=PG_OS_USER, group=PG_OS_USER, extra_groups=[],
                                         stdin=subprocess.DEVNULL, stdout=fh,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            fh.close()
        self.wait_ready(timeout)

    def wait_ready(self, timeout=30):
        def ready():
            if self.proc.poll() is not None:
                raise GiveUp("postgres exited: %s" % self.log_tail())
            with contextlib.closing(self.connect()) as c:
                with c.cursor() as cur:
                    cur.execute("select 1")
                    return True
        wait_until(ready, timeout, 0.1, "postgres to accept connections")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Stop the postmaster by PID: sig, then SIGKILL after timeout."""
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self):
        # Fast shutdown: SIGTERM (smart) would wait for the proxy's sessions.
        self.stop(signal.SIGINT)
        self.start()

    def connect(self, db="postgres"):
        c = psycopg2.connect(host=self.sockdir, port=self.port, user="postgres",
                             dbname=db, connect_timeout=5)
        c.autocommit = True
        return c

    def sql(self, query, args=None, db="postgres"):
        with contextlib.closing(self.connect(db)) as c, c.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall() if cur.description else None

    def activity(self, usename=None, datname=None, proxy=None):
        """Client backends other than ours, as dicts (pid, usename, datname, state, query).

        With proxy=, only the backends whose TCP peer is one of that proxy's sockets.
        """
        q = ("select pid, usename, datname, state, query, backend_xid::text, "
             "xact_start is not null, client_port from pg_stat_activity "
             "where backend_type = 'client backend' and pid <> pg_backend_pid()")
        args = []
        if usename:
            q += " and usename = %s"
            args.append(usename)
        if datname:
            q += " and datname = %s"
            args.append(datname)
        rows = self.sql(q, args)
        keys = ("pid", "usename", "datname", "state", "query", "xid", "in_xact", "client_port")
        out = [dict(zip(keys, r)) for r in rows]
        if proxy is not None:
            ports = tcp_local_ports(proxy.pid, self.port)
            out = [r for r in out if r["client_port"] in ports]
        return out

    def log_tail(self, n=40):
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def setup_roles(self):
        with contextlib.closing(self.connect()) as c, c.cursor() as cur:
            for stmt in PG_SETUP_SQL.strip().split(";\n"):
                cur.execute(stmt)
        with contextlib.closing(self.connect("app")) as c, c.cursor() as cur:
            cur.execute(APP_SETUP_SQL)
        subprocess.run(["runuser", "-u", PG_OS_USER, "--", str(PGBIN / "pgbench"), "-i",
                        "-s", "1", "-q", "-h", self.sockdir, "-p", str(self.port),
                        "-U", "app", "bench"], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def pg():
    base = make_tempdir("pgmoat-it-pg-")
    cluster = PgCluster(base)
    try:
        cluster.initdb()
        cluster.start()
        cluster.setup_roles()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- proxy

_LIVE_PROXIES = []


def default_userlist():
    return {u: p for u, p in PASSWORDS.items()}


def default_databases(pg):
    return {
        "app": "host=127.0.0.1 port=%d dbname=app" % pg.port,
        "bench": "host=127.0.0.1 port=%d dbname=bench" % pg.port,
        "postgres": "host=127.0.0.1 port=%d dbname=postgres" % pg.port,
    }


class Proxy:
    """A pgmoat or pgbouncer process with its own config directory."""

    def __init__(self, pg, kind=TARGET, settings=None, databases=None, users=None,
                 userlist=None, extra_files=None, ini_text=None, config_name="pgbouncer.ini"):
        self.pg = pg
        self.kind = kind
        self.dir = make_tempdir("pgmoat-it-proxy-")
        self.port = free_port()
        self.logfile = self.dir / "proxy.log"
        self.stdout_file = self.dir / "stdout.log"
        self.pidfile = self.dir / "proxy.pid"
        self.config_path = self.dir / config_name
        self.userlist_path = self.dir / "userlist.txt"
        self.settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": str(self.dir),
            "logfile": str(self.logfile),
            "pidfile": str(self.pidfile),
            "auth_type": "md5",
            "auth_file": str(self.userlist_path),
            "admin_users": "admin",
            "stats_users": "stats",
            "pool_mode": "transaction",
            "default_pool_size": "5",
            "max_client_conn": "200",
            "ignore_startup_parameters": "extra_float_digits",
            "server_login_retry": "1",
            "log_connections": "1",
            "log_disconnections": "1",
        }
        self.settings.update({k: str(v) for k, v in (settings or {}).items() if v is not None})
        for k, v in (settings or {}).items():
            if v is None:
                self.settings.pop(k, None)
        self.databases = databases if databases is not None else default_databases(pg)
        self.users = users or {}
        self.userlist = userlist if userlist is not None else default_userlist()
        self.extra_files = extra_files or {}
        self.ini_text = ini_text
        self.proc = None
        self.pid = None
        self.expect_exit = False
        self.stopped = False

    # -- configuration
    def render_ini(self):
        if self.ini_text is not None:
            return self.ini_text
        lines = ["[databases]"]
        lines += ["%s = %s" % (k, v) for k, v in self.databases.items()]
        lines += ["", "[users]"]
        lines += ["%s = %s" % (k, v) for k, v in self.users.items()]
        lines += ["", "[pgbouncer]"]
        lines += ["%s = %s" % (k, v) for k, v in self.settings.items()]
        return "\n".join(lines) + "\n"

    def render_userlist(self):
        out = []
        for user, secret in self.userlist.items():
            out.append('"%s" "%s"' % (user.replace('"', '""'), secret.replace('"', '""')))
        return "\n".join(out) + "\n"

    def write_config(self):
        self.config_path.write_text(self.render_ini())
        self.userlist_path.write_text(self.render_userlist())
        for name, text in self.extra_files.items():
            (self.dir / name).write_text(text)
        for p in self.dir.iterdir():
            chown_postgres(p)

    def command(self, *args):
        if self.kind == "pgbouncer":
            return [PGBOUNCER_BIN, *args]
        return [PGMOAT_BIN, *args]

    def popen_kwargs(self):
        kw = dict(stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(self.dir))
        if self.kind == "pgbouncer":
            kw.update(user=PG_OS_USER, group=PG_OS_USER, extra_groups=[])
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
        kw["env"] = env
        return kw

    # -- lifecycle
    def start(self, wait=True, args=()):
        self.write_config()
        fh = open(self.stdout_file, "ab")
        try:
            self.proc = subprocess.Popen(self.command(*args, str(self.config_path)),
                                         stdout=fh, stderr=subprocess.STDOUT,
                                         **self.popen_kwargs())
        finally:
            fh.close()
        self.pid = self.proc.pid
        _LIVE_PROXIES.append(self)
        if wait:
            self.wait_accepting()
        return self

    def wait_accepting(self, timeout=10, watch_proc=True):
        def accepting():
            if watch_proc and self.proc is not None and self.proc.poll() is not None:
                self.expect_exit = True
                raise GiveUp("%s exited with %s during startup:\n%s"
                                     % (self.kind, self.proc.returncode, self.log_tail()))
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        try:
            wait_until(accepting, timeout, 0.05, "%s to accept on %d" % (self.kind, self.port))
        except AssertionError as e:
            self.expect_exit = True
            self.stop()
            raise AssertionError("%s\n--- log tail ---\n%s" % (e, self.log_tail())) from None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def sanitizer_report(self):
        """The sanitizer report in the proxy's output, or None; also copied once to
        $PGMOAT_SANITIZER_REPORT so scripts/test can fail on it."""
        text = self.log()
        m = SANITIZER_RE.search(text)
        if not m:
            return None
        dest = os.environ.get("PGMOAT_SANITIZER_REPORT")
        if dest and not getattr(self, "_reported", False):
            self._reported = True
            with open(dest, "a") as f:
                f.write("=== %s (%s)\n%s\n" % (self.kind, self.config_path, text[m.start():]))
        return "sanitizer report in proxy output: %s" % m.group(0)

    def crashed(self):
        """Why the proxy looks crashed, or None."""
        why = self.sanitizer_report()
        if why:
            return why
        if self.proc is not None and not self.expect_exit and self.proc.poll() is not None:
            return "proxy exited unexpectedly with status %s" % self.proc.returncode
        return None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Stop by PID: sig, then SIGKILL after timeout. Returns the exit status."""
        if self.proc is None or self.stopped:
            return self.proc.returncode if self.proc else None
        self.stopped = True
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self in _LIVE_PROXIES:
            _LIVE_PROXIES.remove(self)
        return self.proc.returncode

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def reload(self):
        os.kill(self.pid, signal.SIGHUP)

    def signal(self, sig):
        os.kill(self.pid, sig)

    def log(self):
        parts = []
        for p in (self.logfile, self.stdout_file):
            try:
                parts.append(p.read_text(errors="replace"))
            except FileNotFoundError:
                pass
        return "\n".join(parts)

    def log_tail(self, n=40):
        return "\n".join(self.log().splitlines()[-n:])

    def wait_log(self, pattern, timeout=5):
        rx = re.compile(pattern)
        return wait_until(lambda: rx.search(self.log()), timeout, 0.05, "log /%s/" % pattern)

    # -- clients
    def dsn(self, user="app", db="app", password=None, **extra):
        if password is None:
            password = PASSWORDS.get(user, "")
        parts = {"host": "127.0.0.1", "port": self.port, "user": user, "dbname": db,
                 "password": password, "connect_timeout": 5, "sslmode": "disable"}
        parts.update(extra)
        return " ".join("%s='%s'" % (k, str(v).replace("\\", "\\\\").replace("'", "\\'"))
                        for k, v in parts.items())

    def connect(self, user="app", db="app", password=None, autocommit=False, **extra):
        c = psycopg2.connect(self.dsn(user, db, password, **extra))
        c.autocommit = autocommit
        return c

    def admin(self, user="admin", password=None, db="pgbouncer"):
        c = psycopg2.connect(self.dsn(user, db, password))
        c.autocommit = True
        return c

    def show(self, what, user="admin"):
        """(column names, rows) of an admin SHOW command."""
        with contextlib.closing(self.admin(user)) as c, c.cursor() as cur:
            cur.execute("SHOW " + what)
            return [d[0] for d in cur.description], cur.fetchall()

    def show_dicts(self, what, user="admin"):
        cols, rows = self.show(what, user)
        return [dict(zip(cols, r)) for r in rows]

    def config_value(self, key):
        for r in self.show_dicts("CONFIG"):
            if r["key"] == key:
                return r["value"]
        raise KeyError(key)

    def query(self, sql, user="app", db="app", args=None):
        with contextlib.closing(self.connect(user, db, autocommit=True)) as c, c.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else None


class ProxyFactory:
    def __init__(self, pg):
        self.pg = pg
        self.made = []

    def __call__(self, start=True, **kw):
        p = Proxy(self.pg, **kw)
        self.made.append(p)
        if start:
            p.start()
        return p

    def close(self):
        problems = []
        for p in self.made:
            try:
                why = p.crashed()
                p.stop()
                # Leak reports appear only at exit.
                why = why or p.sanitizer_report()
                if why:
                    problems.append("%s (%s): %s\n%s"
                                    % (p.kind, p.config_path, why, p.log_tail()))
            finally:
                p.cleanup()
        self.made = []
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def proxy_factory(pg):
    """Start proxies from settings dicts; each is stopped when the test ends."""
    f = ProxyFactory(pg)
    yield f
    f.close()


@pytest.fixture(scope="module")
def module_proxy_factory(pg):
    f = ProxyFactory(pg)
    yield f
    f.close()


@pytest.fixture(scope="module")
def proxy_tx(module_proxy_factory):
    return module_proxy_factory(settings={"pool_mode": "transaction"})


@pytest.fixture(scope="module")
def proxy_session(module_proxy_factory):
    return module_proxy_factory(settings={"pool_mode": "session"})


@pytest.fixture(scope="module")
def proxy_stmt(module_proxy_factory):
    return module_proxy_factory(settings={"pool_mode": "statement"})


@pytest.fixture(autouse=True)
def _bounded_and_crash_checked(request):
    """Every test is bounded in time, and fails if any live proxy crashed."""
    limit = int(request.node.get_closest_marker("timeout").args[0]) \
        if request.node.get_closest_marker("timeout") else 120

    def on_alarm(signum, frame):
        raise TimeoutError("test exceeded %d s" % limit)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    problems = []
    for p in list(_LIVE_PROXIES):
        why = p.crashed()
        if why:
            problems.append("%s on port %d: %s\n--- log tail ---\n%s"
                            % (p.kind, p.port, why, p.log_tail()))
            p.expect_exit = True  # report once
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# ---------------------------------------------------------------- raw protocol client

PROTOCOL_3 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102


def msg(t, payload=b""):
    return t + struct.pack("!I", len(payload) + 4) + payload


def cstr(s):
    return (s if isinstance(s, bytes) else s.encode()) + b"\0"


def startup_msg(user, db, **params):
    body = struct.pack("!I", PROTOCOL_3)
    for k, v in (("user", user), ("database", db), *params.items()):
        body += cstr(k) + cstr(v)
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def ssl_request():
    return struct.pack("!II", 8, SSL_REQUEST)


def gssenc_request():
    return struct.pack("!II", 8, GSSENC_REQUEST)


def cancel_request(pid, key):
    return struct.pack("!IIII", 16, CANCEL_REQUEST, pid, key)


def query_msg(sql):
    return msg(b"Q", cstr(sql))


def parse_msg(sql, name=""):
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack("!H", 0))


def bind_msg(params=(), stmt="", portal=""):
    body = cstr(portal) + cstr(stmt) + struct.pack("!H", 0) + struct.pack("!H", len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            b = p if isinstance(p, bytes) else str(p).encode()
            body += struct.pack("!I", len(b)) + b
    body += struct.pack("!H", 0)
    return msg(b"B", body)


def describe_msg(kind=b"P", name=""):
    return msg(b"D", kind + cstr(name))


def execute_msg(portal="", max_rows=0):
    return msg(b"E", cstr(portal) + struct.pack("!I", max_rows))


def sync_msg():
    return msg(b"S")


def terminate_msg():
    return msg(b"X")


def copy_data_msg(data):
    return msg(b"d", data)


def copy_done_msg():
    return msg(b"c")


def password_msg(pw):
    return msg(b"p", cstr(pw))


def parse_error_fields(payload):
    """ErrorResponse/NoticeResponse payload -> {'C': sqlstate, 'M': message, ...}."""
    out = {}
    for part in payload.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode(errors="replace")
    return out


def parse_messages(data):
    """Split a byte stream of backend messages into (type, payload); drops a partial tail."""
    out = []
    pos = 0
    while len(data) - pos >= 5:
        ln = struct.unpack("!I", data[pos + 1:pos + 5])[0]
        if ln < 4 or len(data) - pos - 1 < ln:
            break
        out.append((data[pos:pos + 1], data[pos + 5:pos + 1 + ln]))
        pos += 1 + ln
    return out


def data_row_values(payload):
    n = struct.unpack("!H", payload[:2])[0]
    pos = 2
    vals = []
    for _ in range(n):
        ln = struct.unpack("!i", payload[pos:pos + 4])[0]
        pos += 4
        if ln < 0:
            vals.append(None)
        else:
            vals.append(payload[pos:pos + ln].decode())
            pos += ln
    return vals


class ConnectionClosed(Exception):
    pass


class LoginError(AssertionError):
    """The proxy answered the login with an ErrorResponse; .fields has its fields."""

    def __init__(self, fields):
        super().__init__("login failed: %r" % fields)
        self.fields = fields


class RawConn:
    """A bare TCP client for speaking (and mis-speaking) the protocol."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.backend_pid = None
        self.backend_key = None
        self.params = {}

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("raw read timed out")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise ConnectionClosed()
        self.buf += chunk

    def read_bytes(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_msg(self, timeout=5.0):
        """Next (type, payload); raises ConnectionClosed at EOF, socket.timeout on timeout."""
        deadline = time.monotonic() + timeout
        while len(self.buf) < 5:
            self._fill(deadline)
        t = self.buf[:1]
        ln = struct.unpack("!I", self.buf[1:5])[0]
        while len(self.buf) < 1 + ln:
            self._fill(deadline)
        payload = self.buf[5:1 + ln]
        self.buf = self.buf[1 + ln:]
        return t, payload

    def read_until(self, types, timeout=5.0):
        """Messages up to and including the first whose type is in types."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            t, p = self.recv_msg(max(0.01, deadline - time.monotonic()))
            out.append((t, p))
            if t in types:
                return out

    def read_until_close(self, timeout=5.0):
        """(all bytes received, closed?) -- closed is False when the timeout hit first."""
        data = self.buf
        self.buf = b""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return data, False
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return data, False
            except (ConnectionResetError, BrokenPipeError):
                return data, True
            if not chunk:
                return data, True
            data += chunk

    def login(self, user, db, password=None, timeout=10.0, **params):
        """Complete startup and authentication; returns the messages up to ReadyForQuery."""
        if password is None:
            password = PASSWORDS.get(user, "")
        self.send(startup_msg(user, db, **params))
        deadline = time.monotonic() + timeout
        msgs = []
        scram = None
        while True:
            t, p = self.recv_msg(max(0.01, deadline - time.monotonic()))
            msgs.append((t, p))
            if t == b"E":
                raise LoginError(parse_error_fields(p))
            if t == b"R":
                code = struct.unpack("!I", p[:4])[0]
                if code == 3:
                    self.send(password_msg(password))
                elif code == 5:
                    salt = p[4:8]
                    inner = hashlib.md5((password + user).encode()).hexdigest().encode()
                    self.send(password_msg("md5" + hashlib.md5(inner + salt).hexdigest()))
                elif code == 10:
                    scram = ScramClient(password)
                    first = scram.client_first()
                    self.send(msg(b"p", cstr("SCRAM-SHA-256") + struct.pack("!I", len(first)) + first))
                elif code == 11:
                    self.send(msg(b"p", scram.client_final(p[4:])))
                elif code == 12:
                    scram.verify_server_final(p[4:])
                elif code != 0:
                    raise AssertionError("unsupported auth request %d" % code)
            elif t == b"K":
                self.backend_pid, self.backend_key = struct.unpack("!II", p[:8])
            elif t == b"S":
                k, v, _ = p.split(b"\0", 2)
                self.params[k.decode()] = v.decode()
            elif t == b"Z":
                return msgs

    def simple_query(self, sql, timeout=10.0):
        self.send(query_msg(sql))
        return self.read_until({b"Z"}, timeout)

    def close(self, abort=False):
        if abort:
            # RST instead of FIN: the client vanishes without a goodbye.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class ScramClient:
    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = "n=,r=" + self.nonce
        self.server_signature = None

    def client_first(self):
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first):
        attrs = dict(a.split("=", 1) for a in server_first.decode().split(","))
        assert attrs["r"].startswith(self.nonce)
        salted = hashlib.pbkdf2_hmac("sha256", self.password, base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = "c=biws,r=" + attrs["r"]
        auth_msg = ",".join([self.first_bare, server_first.decode(), without_proof]).encode()
        sig = hmac.new(stored_key, auth_msg, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        self.server_signature = hmac.new(server_key, auth_msg, "sha256").digest()
        return (without_proof + ",p=" + base64.b64encode(proof).decode()).encode()

    def verify_server_final(self, data):
        v = dict(a.split("=", 1) for a in data.decode().split(","))["v"]
        assert base64.b64decode(v) == self.server_signature, "server signature mismatch"


def raw_login(proxy, user="app", db="app", **params):
    c = RawConn(proxy.port)
    c.login(user, db, **params)
    return c


def assert_still_serving(proxy, user="app", db="app"):
    """The proxy answers a fresh client after whatever the test did to it."""
    assert proxy.query("select 41 + 1", user, db) == [(42,)]


# ---------------------------------------------------------------- command-line clients

def client_env(password=None):
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("PG"):
            del env[k]
    if password is not None:
        env["PGPASSWORD"] = password
    env["PGCONNECT_TIMEOUT"] = "5"
    env["PGSSLMODE"] = "prefer"
    return env


def psql(port, sql, user="app", db="app", password=None, timeout=30, extra=()):
    """Run psql -c SQL through the given port; returns CompletedProcess (text)."""
    if password is None:
        password = PASSWORDS.get(user, "")
    return subprocess.run([str(PGBIN / "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1",
                           "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", db,
                           *extra, "-c", sql],
                          capture_output=True, text=True, timeout=timeout,
                          env=client_env(password), stdin=subprocess.DEVNULL)


class PgbenchResult:
    def __init__(self, cp):
        self.returncode = cp.returncode
        self.stdout = cp.stdout
        self.stderr = cp.stderr
        m = re.search(r"number of transactions actually processed: (\d+)", cp.stdout)
        self.processed = int(m.group(1)) if m else 0
        m = re.search(r"number of failed transactions: (\d+)", cp.stdout)
        self.failed = int(m.group(1)) if m else None
        m = re.search(r"tps = ([\d.]+)", cp.stdout)
        self.tps = float(m.group(1)) if m else 0.0

    def __repr__(self):
        return "<pgbench rc=%s processed=%s failed=%s>\n%s\n%s" % (
            self.returncode, self.processed, self.failed, self.stdout[-2000:], self.stderr[-2000:])


def pgbench_cmd(port, args, user="app", db="bench"):
    return [str(PGBIN / "pgbench"), "-n", "-h", "127.0.0.1", "-p", str(port), "-U", user, *args, db]


def pgbench(port, args, user="app", db="bench", password=None, timeout=120):
    if password is None:
        password = PASSWORDS.get(user, "")
    cp = subprocess.run(pgbench_cmd(port, args, user, db), capture_output=True, text=True,
                        timeout=timeout, env=client_env(password), stdin=subprocess.DEVNULL)
    return PgbenchResult(cp)


def pgbench_bg(port, args, user="app", db="bench", password=None):
    if password is None:
        password = PASSWORDS.get(user, "")
    return subprocess.Popen(pgbench_cmd(port, args, user, db), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=client_env(password),
                            stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------- threads

class Bg:
    """Run fn in a thread; .result(timeout) returns its value or re-raises its exception."""

    def __init__(self, fn, *args, **kw):
        self.value = None
        self.exc = None
        self.started = time.monotonic()
        self.finished = None
        self.t = threading.Thread(target=self._run, args=(fn, args, kw), daemon=True)
        self.t.start()

    def _run(self, fn, args, kw):
        try:
            self.value = fn(*args, **kw)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            self.exc = e
        self.finished = time.monotonic()

    def done(self):
        return not self.t.is_alive()

    def result(self, timeout=30):
        self.t.join(timeout)
        if self.t.is_alive():
            raise AssertionError("background call still running after %ss" % timeout)
        if self.exc:
            raise self.exc
        return self.value

    def elapsed(self):
        return (self.finished or time.monotonic()) - self.started


# ---------------------------------------------------------------- native YAML + policies

def _yaml_scalar(v):
    """A YAML scalar: JSON's double-quoted string is valid YAML."""
    import json
    return json.dumps(str(v))


def _yaml_list(items):
    return "[" + ", ".join(_yaml_scalar(i) for i in items) + "]"


def parse_conninfo(s):
    """'host=h port=5 dbname=d' -> dict (the harness's [databases] values; no quoting)."""
    out = {}
    for part in s.split():
        k, _, v = part.partition("=")
        out[k] = v
    return out


# [pgbouncer] keys that live outside `pooling:` in the native YAML.
_YAML_TOP_KEYS = ("listen_addr", "listen_port", "admin_users", "stats_users", "auth_type",
                  "auth_file", "logfile", "pidfile", "workers")


class YamlProxy(Proxy):
    """A pgmoat started from its native YAML, optionally with a `policy:` block.

    Same listen/databases/auth_file/admin settings as the ini harness (the
    settings dict is translated key by key). policies={"name.lua": source}
    are written next to the config; policy_scripts lists the scripts in order
    (default: the names of policies, in insertion order; absolute paths, e.g.
    of the repository's policies/*.lua, are allowed). policy_settings fills
    the rest of the block (mode, time_budget, memory_limit, ...). Without
    policies and policy_scripts there is no `policy:` block at all.
    """

    def __init__(self, pg, policies=None, policy_settings=None, policy_scripts=None, **kw):
        kw.setdefault("config_name", "pgmoat.yaml")
        kw["kind"] = "pgmoat"
        super().__init__(pg, **kw)
        self.policies = dict(policies or {})
        self.policy_settings = dict(policy_settings or {})
        if policy_scripts is None:
            policy_scripts = list(self.policies)
        self.policy_scripts = list(policy_scripts)

    def render_yaml(self):
        if self.ini_text is not None:
            return self.ini_text
        s = self.settings
        lines = []
        listen = []
        if "listen_addr" in s:
            listen.append("host: " + _yaml_scalar(s["listen_addr"]))
        if "listen_port" in s:
            listen.append("port: " + _yaml_scalar(s["listen_port"]))
        if listen:
            lines.append("listen: { " + ", ".join(listen) + " }")
        for k in ("logfile", "pidfile", "workers"):
            if k in s:
                lines.append("%s: %s" % (k, _yaml_scalar(s[k])))
        admin = []
        if "admin_users" in s:
            admin.append("users: " + _yaml_list(x.strip() for x in s["admin_users"].split(",")))
        if "stats_users" in s:
            admin.append("stats_users: " + _yaml_list(x.strip() for x in s["stats_users"].split(",")))
        if admin:
            lines.append("admin: { " + ", ".join(admin) + " }")
        auth = []
        if "auth_type" in s:
            auth.append("type: " + _yaml_scalar(s["auth_type"]))
        if "auth_file" in s:
            auth.append("file: " + _yaml_scalar(s["auth_file"]))
        if auth:
            lines.append("auth: { " + ", ".join(auth) + " }")
        pooling = [(k, v) for k, v in s.items() if k not in _YAML_TOP_KEYS]
        if pooling:
            lines.append("pooling:")
            lines += ["  %s: %s" % (k, _yaml_scalar(v)) for k, v in pooling]
        if self.databases:
            lines.append("databases:")
            for name, conninfo in self.databases.items():
                fields = parse_conninfo(conninfo)
                lines.append("  %s: { %s }" % (_yaml_scalar(name), ", ".join(
                    "%s: %s" % (k, _yaml_scalar(v)) for k, v in fields.items())))
        if self.users:
            lines.append("users:")
            for name, conninfo in self.users.items():
                fields = parse_conninfo(conninfo)
                lines.append("  %s: { %s }" % (_yaml_scalar(name), ", ".join(
                    "%s: %s" % (k, _yaml_scalar(v)) for k, v in fields.items())))
        if self.policy_scripts or self.policy_settings:
            lines.append("policy:")
            lines.append("  scripts: " + _yaml_list(self.policy_scripts))
            lines += ["  %s: %s" % (k, _yaml_scalar(v)) for k, v in self.policy_settings.items()]
        return "\n".join(lines) + "\n"

    def render_ini(self):
        return self.render_yaml()

    def write_config(self):
        for name, text in self.policies.items():
            (self.dir / name).write_text(text)
        super().write_config()

    def set_policy(self, name, text):
        """Replace (or add) one policy file on disk; takes effect on reload."""
        self.policies[name] = text
        path = self.dir / name
        path.write_text(text)
        chown_postgres(path)


def start_yaml_proxy(factory, start=True, **kw):
    """A YamlProxy owned (stopped, checked, cleaned up) by a ProxyFactory."""
    p = YamlProxy(factory.pg, **kw)
    factory.made.append(p)
    if start:
        p.start()
    return p


@pytest.fixture
def policy_proxy(proxy_factory):
    """policy_proxy(policies={...}, policy_settings={...}, **Proxy kwargs) -> started YamlProxy."""
    if IS_PGBOUNCER:
        pytest.skip("policies are pgmoat-only")

    def make(**kw):
        return start_yaml_proxy(proxy_factory, **kw)
    return make
