"""Fixture: a real `mlflow server` subprocess with a sqlite backend store in a temp dir (session scope)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

READY_DEADLINE_S = 120.0  # it takes ~25 s to answer on the 2-core CI box
# the interpreter that runs `mlflow server`: a test venv holding only mlflow-tracing/skinny (no server in it) points
# this at a Python with full MLflow (.ci/run: the main .venv)
SERVER_PYTHON = os.environ.get("AG2_OTEL_TEST_MLFLOW_SERVER_PYTHON") or sys.executable


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class MlflowServer:
    """A real ``mlflow server`` on a fixed port and sqlite file, which can be started, killed and started again."""

    def __init__(self, root: Path, port: int | None = None, *, backend_store_uri: str | None = None,
                 app_name: str | None = None, env: dict[str, str] | None = None) -> None:
        """``backend_store_uri``: default a sqlite file in ``root``; ``app_name``: e.g. ``basic-auth``; ``env``: set
        for the server after the caller's MLFLOW_* variables are dropped (e.g. MLFLOW_AUTH_CONFIG_PATH)."""
        self.root = root
        self.backend_store_uri = backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"
        self.app_args = ["--app-name", app_name] if app_name else []
        self.extra_env = dict(env or {})
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)

    def _log_tail(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def start(self) -> str:
        log = open(self.root / "server.log", "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["MLFLOW_MODEL_CATALOG_URI"] = ""  # the store prices spans from a catalog on GitHub; offline here
        env.update(self.extra_env)
        self.process = subprocess.Popen(
            [
                SERVER_PYTHON, "-m", "mlflow", "server",
                "--backend-store-uri", self.backend_store_uri, *self.app_args,
                "--default-artifact-root", str(self.root / "artifacts"),
                "--artifacts-destination", str(self.root / "artifacts"),
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            ],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root, env=env,
            start_new_session=True,  # its own process group: kill() takes the server's workers down with it
        )
        log.close()
        deadline = time.monotonic() + READY_DEADLINE_S
        while not _healthy(self.url):
            if self.process.poll() is not None:
                pytest.fail(f"mlflow server exited with {self.process.returncode}: {self._log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after {READY_DEADLINE_S}s: {self._log_tail()}")
            # /health answers in ms once up; a failed connect returns at once, so pace the probes.
            time.sleep(0.25)
        return self.url

    def kill(self) -> None:
        """SIGKILL to the server and its workers, as a crash would."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=20)
        deadline = time.monotonic() + 20
        while _healthy(self.url) and time.monotonic() < deadline:  # a worker may outlive the parent a moment
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """Yields the base URL (``http://127.0.0.1:PORT``) of a running ``mlflow server``."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    try:
        yield server.start()
    finally:
        server.stop()
