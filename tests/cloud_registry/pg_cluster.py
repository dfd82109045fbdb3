"""A throwaway PostgreSQL cluster for the tests (a pytest plugin: ``pytest_plugins``).

``postgres_cluster`` (session) runs ``initdb`` into a fresh temporary directory and starts the
server on a free loopback port with its socket in that directory, fsync on; it is stopped and
removed at the end of the session. ``initdb`` refuses to run as root, so when the tests run as
root the cluster belongs to the ``postgres`` OS user (``runuser -u postgres --``) and its
directory is handed to that user.

``postgres_dsn`` (session) is the DSN of a database migrated once, used as the template of
``fresh_postgres_dsn`` (function): every test gets its own new database, created from that
template. Creating a database costs one fsync per file (0.3-0.6 s on a slow disk), so a
background thread (:class:`DatabasePool`) keeps a few databases ready and recycles used ones:
it ends their sessions, checks that the set of tables is still the template's, truncates
every table but ``schema_migrations`` and ``change_counter`` (reset to 0), and drops the
history partitions the template lacks (tens of milliseconds); a database whose tables
changed is dropped and replaced by a new one.

The server binaries come from the Debian package ``postgresql`` (``/usr/lib/postgresql/<N>/bin``)
or ``PATH``; when they are missing the fixtures FAIL (scripts/test.sh installs them).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

__all__ = ["DatabasePool", "PgCluster", "find_pg_bin"]

TEMPLATE_DB = "registry_template"


def find_pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (the newest installed version)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """One PostgreSQL server in a temporary directory."""

    def __init__(self, bindir: Path, options: str = "") -> None:
        self.bindir = bindir
        self.options = options  # extra server options (``-c name=value ...``)
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="registry-pg-"))
        self.datadir = self.root / "data"
        self.logfile = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise RuntimeError(
                    "running as root, but there is no 'postgres' OS user to own the test "
                    "cluster (initdb refuses root): install the Debian package 'postgresql'"
                ) from exc
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.root.chmod(0o700)
        self._names = itertools.count(1)

    # ---------------------------------------------------------------- processes

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if check and result.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n"
                f"{result.stderr}\n{log[-4000:]}"
            )
        return result

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-instructions",
        )

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=on "
            f"-c max_connections=200 -c shared_buffers=128MB {self.options}"
        )
        self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.datadir),
            "-l", str(self.logfile), "-o", options,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "stop", "-w", "-t", "60", "-D", str(self.datadir), "-m", mode)

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "stop", "-w", "-D", str(self.datadir), "-m", "immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # ---------------------------------------------------------------- databases

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def admin(self, sql: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, template: str = "") -> str:
        name = f"t{os.getpid()}_{next(self._names)}"
        clause = f" TEMPLATE {template}" if template else ""
        for attempt in range(50):
            try:
                self.admin(f"CREATE DATABASE {name}{clause}")
                return name
            except psycopg.errors.ObjectInUse:
                # the template still has a connection closing: try again shortly
                time.sleep(0.05 * (attempt + 1))
        raise RuntimeError(f"cannot create database {name} from {template}")

    def drop_database(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


_KEPT = frozenset({"schema_migrations", "change_counter"})


def _layout(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[set[str], set[str]]:
    """(top-level tables and other relations as "kind:name", partitions) of ``public``."""
    rows = conn.execute(
        """SELECT c.relname, c.relkind::text, c.relispartition FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S', 'v', 'm', 'f')"""
    ).fetchall()
    tops = {f"{kind}:{name}" for name, kind, part in rows if not part}
    parts = {str(name) for name, _kind, part in rows if part}
    return tops, parts


class DatabasePool:
    """Keeps ``ready`` databases created from ``template`` and recycles returned ones, in a
    background thread (it retries while the server is down, e.g. in the restart test)."""

    def __init__(self, cluster: PgCluster, template: str, ready: int = 2) -> None:
        self._cluster = cluster
        self._template = template
        with psycopg.connect(cluster.dsn(template)) as conn:
            self._tops, self._parts = _layout(conn)
        self._ready: queue.Queue[str] = queue.Queue()
        self._doomed: queue.Queue[str] = queue.Queue()
        self._want = ready
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-databases", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._ready.qsize() < self._want:
                    self._ready.put(self._cluster.create_database(self._template))
                    continue
                try:
                    name = self._doomed.get_nowait()
                except queue.Empty:
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                try:
                    if self._recycle(name):
                        self._ready.put(name)
                    else:
                        self._cluster.drop_database(name)
                except psycopg.Error:
                    self._doomed.put(name)
                    raise
            except (psycopg.Error, RuntimeError):
                self._stop.wait(0.2)  # the server is restarting: try again shortly

    def _recycle(self, name: str) -> bool:
        """Bring ``name`` back to the template's state; False when it cannot be."""
        with psycopg.connect(self._cluster.dsn(name), autocommit=True) as conn:
            conn.execute(
                """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                   WHERE datname = current_database() AND pid <> pg_backend_pid()"""
            )
            tops, parts = _layout(conn)
            if tops != self._tops or not self._parts <= parts:
                return False
            tables = sorted(
                t.split(":", 1)[1] for t in tops if t[0] in "rp" and t.split(":", 1)[1] not in _KEPT
            )
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '5s'")
                for extra in sorted(parts - self._parts):
                    conn.execute(f'DROP TABLE "{extra}"')
                conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables))
                conn.execute("UPDATE change_counter SET last_seq = 0")
        return True

    def take(self) -> str:
        self._wake.set()
        try:
            name = self._ready.get(timeout=120)
        except queue.Empty:
            raise RuntimeError("no test database could be created within 120 s") from None
        self._wake.set()
        return name

    def give_back(self, name: str) -> None:
        self._doomed.put(name)
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(30)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PgCluster]:
    bindir = find_pg_bin()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin "
            "or PATH: install the Debian package 'postgresql' (scripts/test.sh does so)",
            pytrace=False,
        )
    cluster = PgCluster(bindir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def postgres_dsn(postgres_cluster: PgCluster) -> str:
    """The DSN of a migrated database (the template of every test's database)."""
    from cloud_registry.storage.postgres import PostgresStorage

    postgres_cluster.admin(f"CREATE DATABASE {TEMPLATE_DB}")
    dsn = postgres_cluster.dsn(TEMPLATE_DB)
    storage = PostgresStorage(dsn, pool_size=1)
    try:
        storage.migrate()
    finally:
        storage.close()
    return dsn


@pytest.fixture(scope="session")
def postgres_databases(postgres_cluster: PgCluster, postgres_dsn: str) -> Iterator[DatabasePool]:
    pool = DatabasePool(postgres_cluster, TEMPLATE_DB)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def fresh_postgres_dsn(
    postgres_cluster: PgCluster, postgres_databases: DatabasePool
) -> Iterator[str]:
    """A new database of its own for one test, already migrated."""
    name = postgres_databases.take()
    yield postgres_cluster.dsn(name)
    postgres_databases.give_back(name)
