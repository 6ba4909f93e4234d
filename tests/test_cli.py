"""The README's first command and the doctor, as a user runs them: console script in a subprocess, fresh directory."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path


BIN = Path(sys.executable).parent


def _run(args, cwd, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MLFLOW_", "AG2_OTEL_"))}
    clean.update(MLFLOW_MODEL_CATALOG_URI="", PYTHONPATH=str(Path(__file__).resolve().parents[1]), **env)
    return subprocess.run([str(BIN / "ag2-otel"), *args], cwd=cwd, env=clean, capture_output=True, text=True,
                          timeout=300)


def test_demo_writes_to_the_embedded_default_store_and_prints_tree_and_tokens(tmp_path):
    done = _run(["demo"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert (tmp_path / "mlflow.db").exists()  # MLflow's embedded default: sqlite:///mlflow.db in the working dir
    assert "[1/2] tool use" in out and "[2/2] group chat" in out
    assert re.search(r"chat gpt-4o-mini \(CHAT_MODEL\)\s+[\d.]+ ms\s+152→24 tok", out)
    assert re.search(r"total\s+5\s+1120\s+120\s+1240", out)  # tool-use chat: the sum of the five scripted calls
    assert re.search(r"agent\s+writer\s+1\s+420\s+85\s+505", out)
    assert re.search(r"total\s+3\s+1260\s+137\s+1397", out)
    assert "mlflow ui --backend-store-uri" in out
    assert "Detected custom model client" not in done.stdout + done.stderr


def test_doctor_names_a_bad_variable(tmp_path):
    done = _run(["doctor"], tmp_path, OTEL_EXPORTER_OTLP_PROTOCOL="htttp")
    assert done.returncode == 2
    assert "OTEL_EXPORTER_OTLP_PROTOCOL='htttp' is not valid; use one of: grpc, http/protobuf" in done.stderr


def test_doctor_says_what_to_fix_and_masks_secrets(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = _run(["doctor"], tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
                OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer SECRET-TOKEN-123", DATABRICKS_TOKEN="dapiSECRET456")
    assert done.returncode == 1
    assert f"127.0.0.1:{port} does not answer" in done.stdout
    assert "SECRET-TOKEN-123" not in done.stdout + done.stderr and "dapiSECRET456" not in done.stdout + done.stderr
