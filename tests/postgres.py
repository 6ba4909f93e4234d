"""Fixtures: a real PostgreSQL server (Debian's ``postgresql`` binaries) on a scratch data directory, and a real
``mlflow server`` whose backend store is a database in it (session scope).

PostgreSQL runs as a subprocess on a free port, its unix socket in the same temp dir, and is stopped at the end.
``initdb`` refuses root: as root both run as the ``postgres`` user (which Debian's package creates), on a temp dir
that user owns. Missing server binaries or driver skip, except under CI (CI=true), where scripts/test.sh installs
them and a skip would hide a missing install step.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.collector import free_port
from tests.servers import MlflowServer

READY_DEADLINE_S = 60.0


def server_bindir() -> Path | None:
    """The directory with ``initdb`` and ``postgres``: Debian's /usr/lib/postgresql/<newest>/bin, else PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """One PostgreSQL cluster in a temp dir; ``trust`` authentication on 127.0.0.1 and the socket only."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ag2otel-pg-"))  # not pytest's tmp: that is 0700 root's
        self.data = self.root / "data"
        self.user = "postgres"
        self.process: subprocess.Popen | None = None
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._run_as = ["runuser", "-u", "postgres", "--"]

    def _cmd(self, name: str, *args: str) -> list[str]:
        return [*self._run_as, str(self.bindir / name), *args]

    def _log_tail(self) -> str:
        path = self.root / "postgres.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def start(self) -> None:
        subprocess.run(self._cmd("initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8",
                                 "--no-sync"),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.root, timeout=120)
        log = open(self.root / "postgres.log", "ab")
        self.process = subprocess.Popen(
            self._cmd("postgres", "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
                      "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "fsync=off"),
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True)
        log.close()
        deadline = time.monotonic() + READY_DEADLINE_S
        while subprocess.run(self._cmd("pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)),
                             check=False).returncode != 0:
            if self.process.poll() is not None:
                pytest.fail(f"postgres exited with {self.process.returncode}: {self._log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"postgres not ready after {READY_DEADLINE_S}s: {self._log_tail()}")
            time.sleep(0.2)  # pacing the readiness probe, not synchronisation

    def create_database(self, name: str) -> str:
        """Creates database ``name``; returns the SQLAlchemy URI MLflow takes, naming the driver (psycopg 3: the
        test extra's, and SQLAlchemy 2.1's default for ``postgresql://``; older SQLAlchemy defaults to psycopg2)."""
        subprocess.run(self._cmd("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name),
                       check=True, timeout=60)
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{name}"

    def query(self, database: str, sql: str) -> str:
        done = subprocess.run(
            self._cmd("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", database,
                      "-At", "-c", sql), check=True, capture_output=True, text=True, timeout=60)
        return done.stdout.strip()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # postgres' "fast" shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    """A running :class:`PostgresServer`."""
    def missing(message: str):
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)

    bindir = server_bindir()
    if bindir is None:
        missing("no PostgreSQL server binaries (Debian: apt-get install postgresql; scripts/test.sh does)")
    try:
        import psycopg  # noqa: F401 - the PostgreSQL driver for MLflow's SQLAlchemy store (the test extra)
    except ImportError:
        missing("psycopg is missing: install ag2-otel's test extra (psycopg[binary])")
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_postgres_server(postgres, tmp_path_factory: pytest.TempPathFactory):
    """Yields ``(base URL, PostgresServer, database name)`` of a running ``mlflow server`` on a PostgreSQL store."""
    uri = postgres.create_database("mlflow")
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_pg_server"), backend_store_uri=uri)
    try:
        yield server.start(), postgres, "mlflow"
    finally:
        server.stop()
