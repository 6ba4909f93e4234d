"""Fixtures: a real rotel collector subprocess between the application and the `mlflow server` fixture.

rotel (PyPI `rotel`, a Rust OpenTelemetry collector) ships its binary inside the package as ``rotel/rotel-agent``.
Each collector gets free ports for its OTLP gRPC and OTLP/HTTP receivers and forwards traces over OTLP/HTTP to
``{mlflow_server}/v1/traces`` with the header ``x-mlflow-experiment-id=<id>`` (a fresh experiment per collector
unless one is given). ``rotel_factory`` returns :class:`RotelCollector` objects that can be stopped, killed and
restarted on the same ports, for outage tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

READY_DEADLINE_S = 15.0
STOP_DEADLINE_S = 10.0


def find_rotel_agent() -> str:
    """The rotel-agent binary: on PATH next to this interpreter, else inside the installed `rotel` package."""
    found = shutil.which("rotel-agent", path=os.path.dirname(sys.executable))
    if found:
        return found
    try:
        import rotel
    except ImportError:
        pytest.skip("rotel is not installed (pip install rotel); it provides the test collector")
    candidate = Path(rotel.__file__).parent / "rotel-agent"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("rotel-agent")
    if found:
        return found
    pytest.skip("rotel-agent binary not found next to the interpreter or in the rotel package")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(condition, deadline_s: float, what: str, poll_s: float = 0.02):
    """Poll ``condition()`` until it returns a truthy value or the deadline passes (then AssertionError)."""
    end = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {deadline_s:.1f}s waiting for {what}")
        time.sleep(poll_s)


class RotelCollector:
    """One rotel-agent process (restartable on the same ports)."""

    def __init__(self, workdir: Path, traces_url: str, headers: dict[str, str] | None = None,
                 extra_args: tuple[str, ...] = ()):
        self.binary = find_rotel_agent()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.traces_url = traces_url
        self.headers = dict(headers or {})
        self.extra_args = tuple(extra_args)
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.log_path = workdir / "rotel.out"
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.last_start_seconds: float | None = None

    # endpoints an application exports to
    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Base URL of the OTLP/HTTP receiver (the SDK appends /v1/traces to OTEL_EXPORTER_OTLP_ENDPOINT)."""
        return f"http://127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        parsed_base = self.traces_url.rsplit("/v1/traces", 1)[0]
        cmd = [
            self.binary, "start",
            "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
            "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
            "--otlp-receiver-metrics-disabled", "--otlp-receiver-logs-disabled",
            # rotel writes these even in the foreground; keep them per collector, not the shared /tmp defaults
            "--pid-file", str(self.workdir / "rotel.pid"),
            "--log-file", str(self.workdir / "rotel.log"),
            "--exporter", "otlp",
            "--otlp-exporter-endpoint", parsed_base,
            "--otlp-exporter-traces-endpoint", self.traces_url,
            "--otlp-exporter-protocol", "http",
            # the first request to a fresh `mlflow server` can exceed rotel's 5 s default and get retried
            "--otlp-exporter-request-timeout", "30s",
        ]
        if self.headers:
            cmd += ["--otlp-exporter-custom-headers", ",".join(f"{k}={v}" for k, v in self.headers.items())]
        return cmd + list(self.extra_args)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> RotelCollector:
        if self.running:
            raise RuntimeError("rotel is already running")
        started = time.monotonic()
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        finally:
            log.close()

        def ready():
            if self.process.poll() is not None:
                raise AssertionError(f"rotel exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            return port_accepts(self.grpc_port) and port_accepts(self.http_port)

        wait_until(ready, READY_DEADLINE_S, f"rotel receivers on ports {self.grpc_port}/{self.http_port}")
        self.starts += 1
        self.last_start_seconds = time.monotonic() - started
        return self

    def stop(self) -> int | None:
        """SIGTERM (rotel flushes what it holds), SIGKILL if it has not exited within the deadline."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_DEADLINE_S)
        code = self.process.returncode
        self._wait_ports_closed()
        return code

    def kill(self) -> int | None:
        """SIGKILL: what a crashed collector looks like (anything it held in memory is lost)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_DEADLINE_S)
        self._wait_ports_closed()
        return self.process.returncode

    def restart(self) -> RotelCollector:
        self.stop()
        return self.start()

    def _wait_ports_closed(self):
        wait_until(lambda: not port_accepts(self.grpc_port) and not port_accepts(self.http_port),
                   STOP_DEADLINE_S, "rotel ports to close")


def create_experiment(tracking_uri: str, prefix: str = "otlp") -> str:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri).create_experiment(f"{prefix}-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def rotel_factory(mlflow_server, tmp_path):
    """``make(experiment_id=None, extra_args=(), start=True) -> RotelCollector`` forwarding to mlflow_server.

    Every collector made is stopped at the end of the test. ``collector.experiment_id`` says where its traces go.
    """
    made: list[RotelCollector] = []

    def make(experiment_id: str | None = None, extra_args: tuple[str, ...] = (), start: bool = True):
        experiment_id = experiment_id or create_experiment(mlflow_server, "rotel")
        collector = RotelCollector(tmp_path / f"rotel-{len(made)}", f"{mlflow_server}/v1/traces",
                                   headers={"x-mlflow-experiment-id": experiment_id}, extra_args=extra_args)
        collector.experiment_id = experiment_id
        made.append(collector)
        return collector.start() if start else collector

    yield make
    for collector in made:
        collector.stop()


@pytest.fixture
def rotel_collector(rotel_factory):
    """A running rotel collector forwarding to a fresh experiment on the mlflow_server fixture."""
    return rotel_factory()
