"""Fixture: a real `mlflow server` subprocess with a sqlite backend store in a temp dir (session scope)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

READY_DEADLINE_S = 120.0  # it takes ~25 s to answer on the 2-core CI box


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


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """Yields the base URL (``http://127.0.0.1:PORT``) of a running ``mlflow server``."""
    root: Path = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_MODEL_CATALOG_URI"] = ""  # the store prices spans from a catalog on GitHub; offline here
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--default-artifact-root", str(root / "artifacts"),
            "--artifacts-destination", str(root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env,
    )
    try:
        deadline = time.monotonic() + READY_DEADLINE_S
        while not _healthy(url):
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited with {process.returncode}: {(root / 'server.log').read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after {READY_DEADLINE_S}s: "
                            f"{(root / 'server.log').read_text()[-3000:]}")
            # /health answers in ms once up; a failed connect returns at once, so pace the probes.
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
        log.close()
