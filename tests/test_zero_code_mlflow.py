"""Zero code, both sinks: ``OTEL_TRACES_EXPORTER=otlp,mlflow opentelemetry-instrument python app.py``.

``mlflow`` is our ``MlflowSpanExporter`` (entry point group ``opentelemetry_traces_exporter``); ``otlp`` is the SDK's
exporter, here pointed at a real rotel collector that forwards to the real ``mlflow_server``. The app is the scripted
calculator chat, unmodified (no ag2_otel import). It must arrive in the local sqlite store through our exporter with
exact token totals and span types, and in the server's experiment through the collector.

Also shown: why the exporter sets ``MLFLOW_ENABLE_OTLP_EXPORTER=false`` (when an OTLP endpoint variable is set and the
user has not chosen): with it explicitly ``true`` MLflow sends our replayed trace to the collector instead of the store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from ag2_otel.mapping import mlflow_trace as m
from tests.test_otlp_collector import fetch_trace

REPO = Path(__file__).resolve().parents[1]
OTEL_INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")
RUN_TIMEOUT_S = 180.0
SPANS = 12
TOTALS = {"input_tokens": 480, "output_tokens": 52, "total_tokens": 532}
PER_CALL = [
    {"input_tokens": 120, "output_tokens": 21, "total_tokens": 141},
    {"input_tokens": 160, "output_tokens": 22, "total_tokens": 182},
    {"input_tokens": 200, "output_tokens": 9, "total_tokens": 209},
]
# MLflow span types by start time (the same list as tests/test_autolog.py::test_seed_calculator_example)
TYPES = ["CHAIN", "AGENT", "CHAT_MODEL", "AGENT", "TOOL", "AGENT", "CHAT_MODEL", "AGENT", "TOOL", "AGENT",
         "CHAT_MODEL", "AGENT"]

CHAT = """
    from tests.test_instrumentation_basic import CALCULATOR_SCRIPT, make_calculator_agents

    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    user.initiate_chat(assistant, message="What is (44232 + 13312 / (232 - 32)) * 5?", max_turns=10)
    print("CHAT_DONE", flush=True)
"""
APP = textwrap.dedent(CHAT)


def _exporter_installed() -> bool:
    return any(ep.name == "mlflow" and ep.value == "ag2_otel.sinks.mlflow_exporter:MlflowSpanExporter"
               for ep in entry_points(group="opentelemetry_traces_exporter"))


needs_zero_code = [
    pytest.mark.skipif(not OTEL_INSTRUMENT.exists(), reason="opentelemetry-instrument not installed next to python"),
    pytest.mark.skipif(not _exporter_installed(), reason="ag2-otel not installed: pip install -e . (entry point)"),
]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test process's environment without any OTEL_* / MLFLOW_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MLFLOW_"))}
    env.update({
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_MODEL_CATALOG_URI": "",  # offline: the store would download a price catalog
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    })
    env.update(extra)
    return env


class Run:
    def __init__(self, returncode: int, stdout: str, stderr: str, total_s: float, after_chat_s: float | None):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr
        self.total_s, self.after_chat_s = total_s, after_chat_s  # after_chat_s: "CHAT_DONE" printed -> exited


def run_app(cmd: list[str], env: dict[str, str], cwd: Path) -> Run:
    """Run ``cmd``; time the whole run and the stretch from the chat's end (``CHAT_DONE`` on stdout) to exit."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr_lines: list[str] = []
    reader = threading.Thread(target=lambda: stderr_lines.extend(proc.stderr), daemon=True)
    reader.start()
    stdout_lines, chat_done = [], None
    deadline = started + RUN_TIMEOUT_S
    try:
        for line in proc.stdout:  # ends at EOF (the process closed stdout: it exited)
            stdout_lines.append(line)
            if line.startswith("CHAT_DONE") and chat_done is None:
                chat_done = time.monotonic()
            if time.monotonic() > deadline:
                break
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    ended = time.monotonic()
    reader.join(timeout=10)
    return Run(proc.returncode, "".join(stdout_lines), "".join(stderr_lines), ended - started,
               None if chat_done is None else ended - chat_done)


def store_traces(tmp_path: Path):
    """Every trace in the sqlite store's default experiment (none if the store was never created)."""
    from mlflow import MlflowClient

    if not (tmp_path / "mlflow.db").exists():
        return []
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    return [client.get_trace(t.info.trace_id) for t in client.search_traces(locations=["0"])]


def assert_sqlite_trace(trace) -> str:
    """The calculator chat as written by our MLflow sink; returns its OTel trace id (hex)."""
    spans = sorted(trace.data.spans, key=lambda s: s.start_time_ns)
    assert len(spans) == SPANS
    assert trace.info.token_usage == TOTALS
    assert [s.get_attribute(m.MLFLOW_CHAT_USAGE) for s in spans if s.get_attribute(m.MLFLOW_CHAT_USAGE)] == PER_CALL
    assert [s.span_type for s in spans] == TYPES
    assert spans[0].name == "invoke_workflow initiate_chat" and spans[0].parent_id is None
    assert m.TAG_INCOMPLETE not in trace.info.tags
    return trace.info.tags[m.TAG_OTEL_TRACE_ID]


def assert_server_trace(trace):
    """The same chat as the MLflow server built it from the OTLP spans (gen_ai.* attributes only)."""
    assert len(trace.data.spans) == SPANS
    assert trace.info.token_usage == TOTALS
    types = sorted(s.span_type or "" for s in trace.data.spans)
    assert types == sorted(["", *TYPES[1:]])  # measured: the server gives invoke_workflow no span type


@needs_zero_code[0]
@needs_zero_code[1]
def test_opentelemetry_instrument_otlp_and_mlflow(tmp_path, rotel_collector, mlflow_server):
    (tmp_path / "app.py").write_text(APP)
    env = clean_env(tmp_path, OTEL_TRACES_EXPORTER="otlp,mlflow", OTEL_SERVICE_NAME="zero-code-mlflow",
                    OTEL_EXPORTER_OTLP_ENDPOINT=rotel_collector.grpc_endpoint,
                    OTEL_EXPORTER_OTLP_PROTOCOL="grpc")

    run = run_app([str(OTEL_INSTRUMENT), sys.executable, "app.py"], env, tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "CHAT_DONE" in run.stdout
    print(f"opentelemetry-instrument run {run.total_s:.2f}s, chat end -> exit {run.after_chat_s:.2f}s")

    # (a) the local store, through MlflowSpanExporter: written by the time the process exits
    traces = store_traces(tmp_path)
    assert len(traces) == 1, [t.info.trace_id for t in traces]
    otel_trace_id = assert_sqlite_trace(traces[0])

    # (b) the server, through the SDK's OTLP exporter -> rotel -> /v1/traces; the same OTel trace
    server_trace = fetch_trace(mlflow_server, rotel_collector.experiment_id, otel_trace_id, expected_spans=SPANS)
    assert_server_trace(server_trace)
    assert "ag2_otel:" not in run.stderr, run.stderr[-4000:]  # our warnings all start so; none expected


@needs_zero_code[0]
@needs_zero_code[1]
def test_mlflow_otlp_switch_does_not_divert_our_store_writes(tmp_path, rotel_collector, mlflow_server):
    """MLFLOW_ENABLE_OTLP_EXPORTER=true, chosen explicitly, governs MLflow's OWN tracer. The sink writes the store
    from its writer process, not through that tracer, so the trace is still in the store, and the collector backend
    gets exactly one copy (the SDK's OTLP export), not a second one made by MLflow."""
    (tmp_path / "app.py").write_text(APP)
    env = clean_env(tmp_path, OTEL_TRACES_EXPORTER="otlp,mlflow", MLFLOW_ENABLE_OTLP_EXPORTER="true",
                    OTEL_EXPORTER_OTLP_ENDPOINT=rotel_collector.grpc_endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="grpc")

    run = run_app([str(OTEL_INSTRUMENT), sys.executable, "app.py"], env, tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    traces = store_traces(tmp_path)
    assert len(traces) == 1
    otel_trace_id = assert_sqlite_trace(traces[0])

    from mlflow import MlflowClient

    fetch_trace(mlflow_server, rotel_collector.experiment_id, otel_trace_id, expected_spans=SPANS)
    server_traces = MlflowClient(tracking_uri=mlflow_server).search_traces(locations=[rotel_collector.experiment_id])
    assert len(server_traces) == 1


# --- MlflowSpanExporter in process: what a BatchSpanProcessor may hand it -----------------------------------------
# Real SDK spans (captured with the in-memory exporter), fed to the exporter in split, reordered batches; real sqlite.

def _captured(build) -> list:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    build(provider.get_tracer("app"))
    provider.shutdown()
    return list(memory.get_finished_spans())


@pytest.fixture
def sqlite_experiment(tmp_path_factory):
    import uuid

    import mlflow

    root = tmp_path_factory.mktemp("exporter_store")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    experiment = mlflow.set_experiment(f"exporter-{uuid.uuid4().hex[:8]}")
    try:
        yield experiment.experiment_id
    finally:
        mlflow.flush_trace_async_logging()
        mlflow.set_tracking_uri(previous)


def _store(experiment_id):
    import mlflow

    mlflow.flush_trace_async_logging()
    return mlflow.search_traces(locations=[experiment_id], return_type="list")


def test_exporter_assembles_split_and_reordered_batches(sqlite_experiment):
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from ag2_otel.sinks.mlflow_exporter import MlflowSpanExporter
    from tests.test_mlflow_mapping import build_conversation, expected_totals

    remote = trace.set_span_in_context(NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=True,
                                                                    trace_flags=TraceFlags(TraceFlags.SAMPLED))))

    def two_conversations_one_remote_trace(tracer):
        build_conversation(tracer, context=remote)
        build_conversation(tracer, context=remote)

    spans = _captured(two_conversations_one_remote_trace)
    roots = [s for s in spans if s.parent is not None and s.parent.is_remote]
    assert len(roots) == 2 and len({s.context.trace_id for s in spans}) == 1
    first, second = (set(), set())
    for s in spans:  # which conversation each span belongs to: by the end of its root
        (first if s.end_time <= roots[0].end_time else second).add(s.context.span_id)
    others = [s for s in spans if s not in roots]
    # batch 1: the second conversation's children (reversed) and half of the first's; batch 2: the first root ahead
    # of the rest of its children; batch 3: the second root alone
    a = [s for s in others if s.context.span_id in first]
    b = [s for s in others if s.context.span_id in second]
    exporter = MlflowSpanExporter(wait_for_write=True)
    exporter.export(list(reversed(b)) + a[: len(a) // 2])
    assert exporter.stats["traces_written"] == 0
    exporter.export([roots[0]] + a[len(a) // 2:])
    assert exporter.stats["traces_written"] == 1
    exporter.export([roots[1]])
    exporter.shutdown()

    traces = _store(sqlite_experiment)
    assert len(traces) == 2
    for t in traces:
        assert t.info.token_usage == {**expected_totals(), "cache_read_input_tokens": 40}
        assert len(t.data.spans) == len(spans) // 2
        assert "ag2_otel.incomplete" not in t.info.tags
    assert exporter.stats == {**exporter.stats, "traces_written": 2, "late_spans": 0, "dropped_spans": 0,
                              "incomplete_traces_written": 0, "write_errors": 0}


def test_exporter_late_spans_caps_and_shutdown(sqlite_experiment):
    from ag2_otel import semconv as sc
    from ag2_otel.sinks.mlflow_exporter import MlflowSpanExporter

    def chat(tokens):
        return {sc.OPERATION_NAME: sc.OP_CHAT, sc.USAGE_INPUT_TOKENS: tokens, sc.USAGE_OUTPUT_TOKENS: 1}

    def build(tracer):
        with tracer.start_as_current_span("invoke_workflow a"):
            for i in range(3):
                with tracer.start_as_current_span(f"chat a{i}", attributes=chat(10)):
                    pass
        with tracer.start_as_current_span("invoke_workflow stuck"):
            with tracer.start_as_current_span("chat s", attributes=chat(4)):
                pass
        with tracer.start_as_current_span("invoke_workflow refused"):
            with tracer.start_as_current_span("chat r", attributes=chat(1)):
                pass

    spans = {s.name: s for s in _captured(build)}
    exporter = MlflowSpanExporter(max_traces=1, max_spans_per_trace=2)
    exporter.export([spans["chat a0"], spans["chat a1"], spans["chat a2"], spans["invoke_workflow a"]])
    exporter.export([spans["chat s"], spans["chat r"], spans["chat a0"]])  # a0 again: its root was written: late
    exporter.export([spans["invoke_workflow refused"]])  # "stuck" fills max_traces=1: this trace was refused
    stats = exporter.stats
    assert stats["traces_written"] == 1 and stats["late_spans"] == 1
    assert stats["dropped_traces"] == 1
    assert stats["dropped_spans"] == 1 + 2  # a2 over max_spans_per_trace=2; chat r and its root (refused trace)
    exporter.shutdown()  # "stuck" never got its root: written, tagged incomplete
    assert exporter.export([spans["chat s"]]).name == "FAILURE"

    traces = {t.info.tags.get("mlflow.traceName"): t for t in _store(sqlite_experiment)}
    assert len(traces) == 2 and "invoke_workflow refused" not in traces
    written = traces["invoke_workflow a"]
    assert written.info.tags["ag2_otel.dropped_spans"] == "1"
    assert written.info.token_usage["input_tokens"] == 20
    stuck = next(t for t in traces.values() if t.info.tags.get("ag2_otel.incomplete") == "true")
    assert stuck.info.token_usage["input_tokens"] == 4
    assert exporter.stats["incomplete_traces_written"] == 1
