"""The OTLP path of ``ag2_otel.autolog()`` under collector faults, with a real rotel collector.

app (autolog, OTLP only, scripted AG2 chats, a subprocess driven line by line over stdin/stdout)
  -> SDK BatchSpanProcessor + OTLP exporter -> rotel (killed, restarted on the same ports)
  -> :class:`OtlpSink`, a small real OTLP/HTTP receiver that parses what rotel forwards (trace id -> span ids)

What the SDK documents and these tests pin down (opentelemetry-sdk / exporter-otlp 1.45):
- the application thread never exports: a chat's wall time does not depend on the collector;
- one batch export retries a failed request with exponential backoff (1 s, 2 s, 4 s ... +-20 % jitter) while the next
  wait still fits in OTEL_EXPORTER_OTLP_TIMEOUT, then the batch is dropped: it is never put back in the queue;
- the queue holds OTEL_BSP_MAX_QUEUE_SIZE spans; when it is full, the OLDEST span is evicted for each new one
  ("Queue full, dropping span.");
- a batch is exported when the queue reaches OTEL_BSP_MAX_EXPORT_BATCH_SIZE or OTEL_BSP_SCHEDULE_DELAY passed.
The tests set MAX_EXPORT_BATCH_SIZE to the span count of one chat (12) and a very long SCHEDULE_DELAY, so every chat is
exactly one batch, exported the moment its root span ends: which traces arrive is then deterministic.
The MLflow sink is off here (OTEL_TRACES_EXPORTER=otlp, AG2_OTEL_MLFLOW=false): this file does not depend on it.
"""

from __future__ import annotations

import gzip
import json
import os
import queue
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.collector import RotelCollector, wait_until

REPO = Path(__file__).resolve().parents[1]
SPANS_PER_CHAT = 12  # the calculator chat: workflow + 6 agent turns + 3 model calls + 2 tool calls
DELIVERY_DEADLINE_S = 30.0
APP_READY_DEADLINE_S = 90.0
COMMAND_DEADLINE_S = 60.0


# ==================================================================================================================
# A real OTLP/HTTP receiver (optionally TLS): what rotel forwards, or what an application sends directly.
# ==================================================================================================================
class OtlpSink:
    """OTLP/HTTP ``POST /v1/traces`` receiver. Keeps every decoded request body, the request headers, and which span
    ids arrived per trace id. With ``ssl_context`` it serves HTTPS."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1"):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest, ExportTraceServiceResponse)

        self.lock = threading.Lock()
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.spans: dict[str, set[str]] = {}
        self.requests = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                sink.record(body, dict(self.headers.items()), request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):  # quiet
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # a killed rotel resets its keep-alive connection
                if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError)):
                    super().handle_error(request, client_address)

        self.server = Server((host, 0), Handler)
        if ssl_context is not None:
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.scheme = "https" if ssl_context is not None else "http"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def record(self, body: bytes, headers: dict[str, str], request) -> None:
        with self.lock:
            self.requests += 1
            self.bodies.append(body)
            self.headers.append(headers)
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.setdefault(span.trace_id.hex(), set()).add(span.span_id.hex())

    def span_count(self, trace_id: str) -> int:
        with self.lock:
            return len(self.spans.get(trace_id, ()))

    def complete(self, trace_ids, spans_per_trace: int = SPANS_PER_CHAT) -> bool:
        return all(self.span_count(t) >= spans_per_trace for t in trace_ids)

    def trace_ids(self) -> set[str]:
        with self.lock:
            return set(self.spans)

    def raw(self) -> bytes:
        with self.lock:
            return b"".join(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink():
    receiver = OtlpSink()
    yield receiver
    receiver.close()


@pytest.fixture
def collector(sink, tmp_path):
    """A rotel collector (not started) forwarding to ``sink`` over OTLP/HTTP; stopped at teardown."""
    made = RotelCollector(tmp_path / "rotel", f"{sink.url}/v1/traces")
    yield made
    made.stop()


# ==================================================================================================================
# The application: autolog() in a subprocess, one JSON command per stdin line, one JSON event per stdout line.
# ==================================================================================================================
DRIVER = textwrap.dedent("""
    import collections, json, logging, os, sys, time, traceback

    logging.basicConfig(level=os.environ.get("APP_LOG_LEVEL", "WARNING"), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    started = time.perf_counter()
    import ag2_otel
    from opentelemetry import trace
    from opentelemetry.sdk.trace import SpanProcessor

    ag2_otel.autolog()


    class Roots(SpanProcessor):
        '''Which traces this process finished, and how many spans each had (a plain SDK processor).'''

        def __init__(self):
            self.spans = collections.Counter()
            self.roots = []

        def on_end(self, span):
            trace_id = format(span.context.trace_id, "032x")
            self.spans[trace_id] += 1
            if span.parent is None:
                self.roots.append(trace_id)


    roots = Roots()
    trace.get_tracer_provider().add_span_processor(roots)
    from tests.test_instrumentation_basic import CALCULATOR_SCRIPT, make_calculator_agents


    def emit(**event):
        print("@@EVENT " + json.dumps(event), flush=True)  # AG2 prints the conversation on stdout too


    emit(event="ready", startup_s=time.perf_counter() - started)
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        try:
            if op == "chats":
                chats = []
                for _ in range(command["n"]):
                    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
                    begun = time.perf_counter()
                    user.initiate_chat(assistant, message="What is (44232 + 13312 / (232 - 32)) * 5?", max_turns=10)
                    wall = time.perf_counter() - begun
                    trace_id = roots.roots[-1]
                    chats.append({"trace_id": trace_id, "wall_s": wall, "spans": roots.spans[trace_id]})
                emit(event="chats", chats=chats)
            elif op == "flush":
                begun = time.perf_counter()
                result = ag2_otel.flush(timeout=command.get("timeout", 30.0))
                emit(event="flushed", result=result, wall_s=time.perf_counter() - begun)
            elif op == "exit":
                emit(event="exiting")
                break
        except BaseException as exc:  # the application must never see one: report it to the test
            emit(event="error", op=op, error=repr(exc), traceback=traceback.format_exc())
""")


def app_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MLFLOW_", "AG2_OTEL_", "DATABRICKS_"))}
    env.update({
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'unused-mlflow.db'}",  # the MLflow sink is off; never written
        "MLFLOW_MODEL_CATALOG_URI": "",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_TRACES_EXPORTER": "otlp",
        "AG2_OTEL_MLFLOW": "false",
    })
    env.update(extra)
    return env


class App:
    """The driver subprocess. ``do(op, **args)`` sends one command and returns its event (or fails the test)."""

    def __init__(self, tmp_path: Path, env: dict[str, str]):
        script = tmp_path / "fault_app.py"
        script.write_text(DRIVER)
        self.events: queue.Queue = queue.Queue()
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self.process = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=lambda: self.stderr_lines.extend(self.process.stderr), daemon=True).start()
        self.ready = self.expect("ready", APP_READY_DEADLINE_S)

    def _read_stdout(self):
        for line in self.process.stdout:
            if line.startswith("@@EVENT "):
                self.events.put(json.loads(line[len("@@EVENT "):]))
            else:
                self.stdout_lines.append(line)
        self.events.put({"event": "eof"})

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def expect(self, name: str, deadline_s: float) -> dict:
        try:
            event = self.events.get(timeout=deadline_s)
        except queue.Empty:
            raise AssertionError(f"no {name!r} event from the app within {deadline_s}s; stderr:\n{self.stderr[-4000:]}")
        assert event.get("event") == name, f"expected {name!r}, got {event}; stderr:\n{self.stderr[-4000:]}"
        return event

    def do(self, op: str, deadline_s: float = COMMAND_DEADLINE_S, **args) -> dict:
        self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.process.stdin.flush()
        reply = {"chats": "chats", "flush": "flushed", "exit": "exiting"}[op]
        return self.expect(reply, deadline_s)

    def chats(self, n: int) -> list[dict]:
        chats = self.do("chats", n=n)["chats"]
        assert all(c["spans"] == SPANS_PER_CHAT for c in chats), chats
        return chats

    def exit(self, deadline_s: float = 60.0) -> float:
        """Send exit; the seconds from the app leaving its loop to the process being gone (its exit flush)."""
        self.do("exit")
        begun = time.monotonic()
        self.process.stdin.close()
        self.process.wait(timeout=deadline_s)
        return time.monotonic() - begun

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def start_app(tmp_path):
    apps: list[App] = []

    def start(**env: str) -> App:
        app = App(tmp_path, app_env(tmp_path, **env))
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.kill()


def lines(text: str, needle: str) -> int:
    return sum(1 for line in text.splitlines() if needle in line)


def endpoint_env(collector: RotelCollector, protocol: str) -> dict[str, str]:
    endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
    return {"OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}


def batch_env(timeout_s: int, queue_size: int = 2048) -> dict[str, str]:
    """One chat = one batch, exported when its root span ends (the schedule delay never fires)."""
    return {"OTEL_EXPORTER_OTLP_TIMEOUT": str(timeout_s), "OTEL_BSP_SCHEDULE_DELAY": "600000",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": str(SPANS_PER_CHAT), "OTEL_BSP_MAX_QUEUE_SIZE": str(queue_size)}




def delivered(sink: OtlpSink, chats: list[dict]) -> list[str]:
    """Trace ids of ``chats`` that reached the sink complete."""
    return [c["trace_id"] for c in chats if sink.span_count(c["trace_id"]) >= SPANS_PER_CHAT]


def walls(chats: list[dict]) -> list[float]:
    return [round(c["wall_s"], 3) for c in chats]


PROTOCOLS = ["grpc", "http/protobuf"]
CHAT_WALL_BOUND_S = 1.0  # a scripted chat takes 10-80 ms here; the application thread never waits for an export
SLACK_S = 3.0  # scheduling slack on a busy 2-core box


# ==================================================================================================================
# (a) the collector is not running when the application starts; it is started later; it is gone again at exit
# ==================================================================================================================
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_collector_down_at_start_then_started(protocol, collector, sink, start_app):
    """OTEL_EXPORTER_OTLP_TIMEOUT=2: a failed batch is retried once after ~1 s (the 2 s backoff no longer fits) and
    then dropped. Measured: over gRPC the first batch after the collector comes up fails once (the channel is still in
    reconnect backoff) and gets through on that retry; with a 1 s timeout the retry does not fit and that trace is
    lost, so 2 s is the smallest timeout at which "everything finished after the collector is up arrives" holds."""
    timeout_s = 2
    app = start_app(**endpoint_env(collector, protocol), **batch_env(timeout_s), AG2_OTEL_EXIT_FLUSH_TIMEOUT="0.5")
    assert not collector.running

    down = app.chats(3)  # each chat's batch is exported (and fails) as it ends; the worker retries, the app goes on
    flushed_down = app.do("flush", timeout=0.5)  # returns once every pending batch was tried and given up
    collector.start()
    up = app.chats(3)
    flushed_up = app.do("flush", timeout=30)
    wait_until(lambda: len(delivered(sink, up)) == 3, DELIVERY_DEADLINE_S, "the 3 chats finished after rotel started")
    collector.kill()  # gone again: the batches still pending at exit are tried once more by the SDK's shutdown
    late = app.chats(3)
    exit_s = app.exit()

    print(f"\n[{protocol}] OTEL_EXPORTER_OTLP_TIMEOUT={timeout_s}s; app startup {app.ready['startup_s']:.2f}s, "
          f"rotel start {collector.last_start_seconds:.3f}s\n"
          f"  collector not started: chat walls {walls(down)} s; flush(timeout=0.5) took {flushed_down['wall_s']:.2f}s "
          f"and returned {flushed_down['result']}; delivered {len(delivered(sink, down))}/3\n"
          f"  collector started:     chat walls {walls(up)} s; flush {flushed_up['wall_s']:.2f}s; "
          f"delivered {len(delivered(sink, up))}/3\n"
          f"  collector killed:      chat walls {walls(late)} s; exit (3 batches pending, AG2_OTEL_EXIT_FLUSH_TIMEOUT=0.5)"
          f" {exit_s:.2f}s; delivered {len(delivered(sink, late))}/3\n"
          f"  SDK log lines: 'Transient error' {lines(app.stderr, 'Transient error')}, "
          f"'Failed to export' {lines(app.stderr, 'Failed to export')} (the gRPC exporter's DuplicateFilter hides "
          f"repeats)")

    assert app.process.returncode == 0, app.stderr[-4000:]
    assert "Traceback" not in app.stderr, app.stderr[-4000:]
    assert max(c["wall_s"] for c in down + up + late) < CHAT_WALL_BOUND_S, (walls(down), walls(up), walls(late))
    # a failed batch is dropped after its retries, never re-queued: nothing from before the collector existed arrives
    assert delivered(sink, down) == [] and not any(sink.span_count(c["trace_id"]) for c in down)
    assert len(delivered(sink, up)) == 3
    # force_flush ignores its timeout (SDK TODO #4568): it takes as long as the pending batches' retries, each bounded
    # by OTEL_EXPORTER_OTLP_TIMEOUT
    assert flushed_down["wall_s"] <= 3 * timeout_s + SLACK_S, flushed_down
    # the exit is bounded by AG2_OTEL_EXIT_FLUSH_TIMEOUT (0.5 s here), not by the pending batches' retries (the SDK's
    # own atexit shutdown took 5-6 s here): autolog's provider is shut down by our exit hook within that budget
    assert exit_s <= 0.5 + SLACK_S, exit_s
    assert sink.trace_ids() == {c["trace_id"] for c in up}


# ==================================================================================================================
# (b) rotel killed mid-run and restarted on the same ports
# ==================================================================================================================
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_collector_killed_and_restarted_on_the_same_ports(protocol, collector, sink, start_app):
    """OTEL_EXPORTER_OTLP_TIMEOUT=10 (retries at ~1, ~3, ~7 s), OTEL_BSP_MAX_QUEUE_SIZE=24 (two chats).

    1. outage shorter than the retry window: the batch in flight gets through on a retry, nothing is lost;
    2. outage with more spans than the queue holds: the batch in flight gets through; of the 4 chats finished meanwhile
       (48 spans for 24 places) the 2 oldest are evicted span by span, the 2 newest arrive;
    3. after the restart everything arrives."""
    timeout_s = 10
    collector.start()
    ports = (collector.grpc_port, collector.http_port)
    app = start_app(**endpoint_env(collector, protocol), **batch_env(timeout_s, queue_size=2 * SPANS_PER_CHAT))

    before = app.chats(2)
    app.do("flush")
    wait_until(lambda: len(delivered(sink, before)) == 2, DELIVERY_DEADLINE_S, "the chats before the kill")

    # 1. short outage
    collector.kill()
    killed = time.monotonic()
    short = app.chats(1)
    collector.start()
    short_outage_s = time.monotonic() - killed
    flushed_short = app.do("flush")  # waits for the batch in flight: its retry reaches the restarted collector
    wait_until(lambda: len(delivered(sink, short)) == 1, DELIVERY_DEADLINE_S, "the chat of the short outage")

    # 2. outage with an overflowing queue
    collector.kill()
    killed = time.monotonic()
    in_flight = app.chats(1)  # its batch is taken by the worker at once, fails, and is retried
    queued = app.chats(4)  # 48 spans into a 24-span queue while the worker waits to retry
    collector.start()
    long_outage_s = time.monotonic() - killed
    flushed_overflow = app.do("flush")
    survivors, evicted = in_flight + queued[2:], queued[:2]
    wait_until(lambda: len(delivered(sink, survivors)) == 3, DELIVERY_DEADLINE_S, "the surviving chats")

    # 3. normal again
    after = app.chats(2)
    app.do("flush")
    wait_until(lambda: len(delivered(sink, after)) == 2, DELIVERY_DEADLINE_S, "the chats after the restarts")
    exit_s = app.exit()

    sent = before + short + in_flight + queued + after
    got = delivered(sink, sent)
    partial = [c["trace_id"] for c in sent if 0 < sink.span_count(c["trace_id"]) < SPANS_PER_CHAT]
    queue_full = lines(app.stderr, "Queue full")
    print(f"\n[{protocol}] OTEL_EXPORTER_OTLP_TIMEOUT={timeout_s}s, OTEL_BSP_MAX_QUEUE_SIZE={2 * SPANS_PER_CHAT}; "
          f"rotel restarts {collector.starts - 1} on ports {ports}\n"
          f"  short outage {short_outage_s:.2f}s: flush {flushed_short['wall_s']:.2f}s, delivered "
          f"{len(delivered(sink, short))}/1\n"
          f"  overflow outage {long_outage_s:.2f}s: chat walls {walls(in_flight + queued)} s, flush "
          f"{flushed_overflow['wall_s']:.2f}s, delivered in-flight {len(delivered(sink, in_flight))}/1, queued "
          f"{len(delivered(sink, queued))}/4 (evicted {sum(1 for c in evicted if not sink.span_count(c['trace_id']))}"
          f"/2 with 0 spans)\n"
          f"  total: sent {len(sent)} traces ({len(sent) * SPANS_PER_CHAT} spans), delivered {len(got)}, partial "
          f"{len(partial)}, lost {len(sent) - len(got)}; 'Queue full' log lines {queue_full}; exit {exit_s:.2f}s\n"
          f"  SDK log lines: 'Transient error' {lines(app.stderr, 'Transient error')}, "
          f"'Failed to export' {lines(app.stderr, 'Failed to export')}")

    assert app.process.returncode == 0, app.stderr[-4000:]
    assert "Traceback" not in app.stderr, app.stderr[-4000:]
    assert (collector.grpc_port, collector.http_port) == ports and collector.starts == 3
    assert max(c["wall_s"] for c in sent) < CHAT_WALL_BOUND_S, walls(sent)
    assert flushed_short["wall_s"] <= timeout_s + SLACK_S and flushed_overflow["wall_s"] <= timeout_s + SLACK_S
    # the documented queue behaviour: full queue -> the oldest spans go, whole chats here (one chat = one batch)
    assert [sink.span_count(c["trace_id"]) for c in evicted] == [0, 0]
    assert queue_full >= 1, app.stderr[-4000:]
    assert got == [c["trace_id"] for c in before + short + in_flight + queued[2:] + after]
    assert partial == []
    assert len(sent) == 10 and len(got) == 8
