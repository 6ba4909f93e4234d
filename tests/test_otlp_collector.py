"""OTLP export of GenAI spans, through a real collector (rotel) and straight to a real `mlflow server`.

The spans are built by hand with the real SDK tracer (no AG2 here) and carry only OTel GenAI attributes: no
``mlflow.*`` keys. What comes back from MLflow is what its server does with plain ``gen_ai.*`` spans on OTLP ingest
(MLflow 3.17.2, SQL store), measured here:
- ``invoke_agent`` -> AGENT, ``chat`` -> CHAT_MODEL, ``execute_tool`` -> TOOL; ``invoke_workflow`` gets no span type;
- ``gen_ai.usage.input_tokens/output_tokens`` -> span ``mlflow.chat.tokenUsage`` and trace ``token_usage`` totals;
- ``gen_ai.request.model``/``gen_ai.provider.name`` -> ``mlflow.llm.model``/``mlflow.llm.provider`` (+ a cost estimate);
- resource ``service.name`` -> a trace tag.
"""

from __future__ import annotations

import logging
import socket
import time

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from ag2_otel import semconv as sc
from ag2_otel.config import build_otlp_span_exporter, load_settings
from tests.collector import create_experiment, wait_until

DELIVERY_DEADLINE_S = 90.0  # a cold `mlflow server` answers its first OTLP request slowly

# (agent, model, input_tokens, output_tokens) per model call; distinct numbers so a wrong sum cannot pass
CALLS = [("writer", "gpt-4o-mini", 120, 31), ("critic", "gpt-4o", 245, 17)]
EXPECTED_USAGE = {
    "input_tokens": sum(c[2] for c in CALLS),
    "output_tokens": sum(c[3] for c in CALLS),
    "total_tokens": sum(c[2] + c[3] for c in CALLS),
}
SPAN_COUNT = 1 + 3 * len(CALLS)  # workflow + per agent: invoke_agent, chat, execute_tool

OTLP_ENV = [
    "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
]


@pytest.fixture
def otlp_env(monkeypatch):
    """A clean OTLP environment; the test sets what it needs (the SDK exporter reads os.environ)."""
    for name in OTLP_ENV:
        monkeypatch.delenv(name, raising=False)

    def set_env(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        return load_settings()

    return set_env


def emit_workflow(provider: TracerProvider, workflow: str = "review") -> str:
    """One multi-agent conversation as GenAI spans; returns the OTel trace id (hex)."""
    tracer = provider.get_tracer("tests.otlp")
    with tracer.start_as_current_span(sc.span_name(sc.OP_WORKFLOW, workflow), attributes={
        sc.OPERATION_NAME: sc.OP_WORKFLOW, sc.WORKFLOW_NAME: workflow,
    }) as root:
        for agent, model, tokens_in, tokens_out in CALLS:
            with tracer.start_as_current_span(sc.span_name(sc.OP_AGENT, agent), attributes={
                sc.OPERATION_NAME: sc.OP_AGENT, sc.AGENT_NAME: agent, sc.PROVIDER_NAME: "openai",
            }):
                with tracer.start_as_current_span(sc.span_name(sc.OP_CHAT, model), kind=SpanKind.CLIENT, attributes={
                    sc.OPERATION_NAME: sc.OP_CHAT, sc.PROVIDER_NAME: "openai", sc.REQUEST_MODEL: model,
                    sc.RESPONSE_MODEL: model, sc.RESPONSE_FINISH_REASONS: ["tool_calls"],
                    sc.USAGE_INPUT_TOKENS: tokens_in, sc.USAGE_OUTPUT_TOKENS: tokens_out,
                }):
                    pass
                with tracer.start_as_current_span(sc.span_name(sc.OP_TOOL, "word_count"), attributes={
                    sc.OPERATION_NAME: sc.OP_TOOL, sc.TOOL_NAME: "word_count", sc.TOOL_TYPE: "function",
                    sc.TOOL_CALL_ID: f"call_{agent}",
                }) as tool:
                    if agent == "critic":
                        tool.set_attribute(sc.ERROR_TYPE, "ValueError")
                        tool.set_status(Status(StatusCode.ERROR, "bad input"))
        return format(root.get_span_context().trace_id, "032x")


def new_provider(service_name: str) -> TracerProvider:
    return TracerProvider(resource=Resource.create({"service.name": service_name}))


def fetch_trace(tracking_uri: str, experiment_id: str, otel_trace_id: str, expected_spans: int = SPAN_COUNT):
    """Poll MLflow until the trace for ``otel_trace_id`` is there with all its spans."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)

    def complete():
        for info in client.search_traces(locations=[experiment_id]):
            if info.info.trace_id == f"tr-{otel_trace_id}":
                trace = client.get_trace(info.info.trace_id)
                if len(trace.data.spans) >= expected_spans:
                    return trace
        return None

    return wait_until(complete, DELIVERY_DEADLINE_S, f"trace tr-{otel_trace_id} in experiment {experiment_id}",
                      poll_s=0.25)


def assert_genai_trace(trace, service_name: str):
    spans = {s.span_id: s for s in trace.data.spans}
    assert len(spans) == SPAN_COUNT
    by_name: dict[str, list] = {}
    for s in spans.values():
        by_name.setdefault(s.name, []).append(s)

    (root,) = by_name["invoke_workflow review"]
    assert root.parent_id is None
    assert root.span_type is None  # measured: MLflow 3.17.2 has no mapping for invoke_workflow

    for agent, model, tokens_in, tokens_out in CALLS:
        (agent_span,) = by_name[f"invoke_agent {agent}"]
        assert agent_span.span_type == "AGENT"
        assert agent_span.parent_id == root.span_id
        chat = [s for s in by_name[f"chat {model}"] if s.parent_id == agent_span.span_id]
        assert len(chat) == 1
        chat = chat[0]
        assert chat.span_type == "CHAT_MODEL"
        assert chat.attributes[sc.USAGE_INPUT_TOKENS] == tokens_in  # gen_ai.* kept as sent
        assert chat.attributes["mlflow.chat.tokenUsage"] == {
            "input_tokens": tokens_in, "output_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}
        assert chat.attributes["mlflow.llm.model"] == model
        tools = [s for s in by_name["execute_tool word_count"] if s.parent_id == agent_span.span_id]
        assert len(tools) == 1 and tools[0].span_type == "TOOL"
        expected_status = "ERROR" if agent == "critic" else "UNSET"
        assert tools[0].status.status_code.value == expected_status

    assert trace.info.token_usage == EXPECTED_USAGE
    assert trace.info.tags.get("service.name") == service_name


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_sdk_to_rotel_to_mlflow(protocol, rotel_collector, mlflow_server, otlp_env):
    endpoint = rotel_collector.grpc_endpoint if protocol == "grpc" else rotel_collector.http_endpoint
    settings = otlp_env(OTEL_EXPORTER_OTLP_PROTOCOL=protocol, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)
    assert settings.otlp_enabled and settings.otlp_protocol == protocol
    exporter = build_otlp_span_exporter(settings)
    assert exporter.__class__.__module__.split(".")[4] == {"grpc": "grpc", "http/protobuf": "http"}[protocol]

    service = f"ag2-otel-test-{protocol.replace('/', '-')}"
    provider = new_provider(service)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace_id = emit_workflow(provider)
    flushed = time.monotonic()
    assert provider.force_flush(10_000)
    provider.shutdown()

    trace = fetch_trace(mlflow_server, rotel_collector.experiment_id, trace_id)
    print(f"rotel start {rotel_collector.last_start_seconds:.3f}s; "
          f"{protocol} flush -> MLflow trace {time.monotonic() - flushed:.2f}s")
    assert_genai_trace(trace, service)


def test_sdk_straight_to_mlflow_server(mlflow_server, otlp_env):
    """No collector: the SDK's OTLP/HTTP exporter posts to the MLflow server's /v1/traces with the experiment header."""
    experiment_id = create_experiment(mlflow_server, "direct")
    settings = otlp_env(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/protobuf",
                        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{mlflow_server}/v1/traces",
                        OTEL_EXPORTER_OTLP_TRACES_HEADERS=f"x-mlflow-experiment-id={experiment_id}")
    assert settings.masked()["otlp_headers"] == {"x-mlflow-experiment-id": "***"}
    exporter = build_otlp_span_exporter(settings)

    memory = InMemorySpanExporter()
    provider = new_provider("ag2-otel-direct")
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace_id = emit_workflow(provider)
    provider.shutdown()
    # export synchronously so the server's answer is the result we assert on
    assert exporter.export(memory.get_finished_spans()) == SpanExportResult.SUCCESS
    exporter.shutdown()

    assert_genai_trace(fetch_trace(mlflow_server, experiment_id, trace_id), "ag2-otel-direct")


def test_mlflow_server_rejects_otlp_without_experiment_header(mlflow_server, otlp_env, caplog):
    settings = otlp_env(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/protobuf",
                        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{mlflow_server}/v1/traces")
    exporter = build_otlp_span_exporter(settings)
    memory = InMemorySpanExporter()
    provider = new_provider("ag2-otel-no-header")
    provider.add_span_processor(SimpleSpanProcessor(memory))
    emit_workflow(provider)
    provider.shutdown()
    with caplog.at_level(logging.WARNING):
        assert exporter.export(memory.get_finished_spans()) == SpanExportResult.FAILURE
    exporter.shutdown()
    assert any("export" in r.getMessage().lower() for r in caplog.records)


def closed_port() -> int:
    """A port nothing listens on (bound, then released; connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_collector_unreachable_does_not_raise_or_hang(protocol, otlp_env, caplog):
    port = closed_port()
    timeout_s = 2
    settings = otlp_env(OTEL_EXPORTER_OTLP_PROTOCOL=protocol, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
                        OTEL_EXPORTER_OTLP_TIMEOUT=str(timeout_s))
    assert settings.otlp_timeout == timeout_s
    provider = new_provider("ag2-otel-unreachable")
    provider.add_span_processor(BatchSpanProcessor(build_otlp_span_exporter(settings)))

    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        emit_workflow(provider)  # the application's own work: must not block on the dead collector
        emitted = time.monotonic() - started
        provider.force_flush(30_000)
        provider.shutdown()
    elapsed = time.monotonic() - started
    print(f"{protocol}: emit {emitted:.3f}s, flush+shutdown to a closed port {elapsed:.2f}s")

    assert emitted < 0.5
    # one export attempt is bounded by the timeout (retries with backoff included); allow scheduling slack
    assert elapsed < timeout_s + 3
    exporter_logs = [r for r in caplog.records if r.name.startswith("opentelemetry.exporter.otlp")
                     and r.levelno >= logging.WARNING]
    assert exporter_logs, [r.getMessage() for r in caplog.records]


def test_rotel_kill_and_restart_on_same_ports(rotel_factory, mlflow_server, otlp_env, caplog):
    """The factory's collector can be killed and restarted; the application's exporter keeps the same endpoint."""
    collector = rotel_factory()
    settings = otlp_env(OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                        OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_endpoint, OTEL_EXPORTER_OTLP_TIMEOUT="2")
    exporter = build_otlp_span_exporter(settings)
    memory = InMemorySpanExporter()
    provider = new_provider("ag2-otel-restart")
    provider.add_span_processor(SimpleSpanProcessor(memory))

    ports = (collector.grpc_port, collector.http_port)
    collector.kill()
    assert not collector.running
    lost_trace = emit_workflow(provider)
    with caplog.at_level(logging.WARNING):
        assert exporter.export(memory.get_finished_spans()) == SpanExportResult.FAILURE
    memory.clear()

    collector.start()
    assert (collector.grpc_port, collector.http_port) == ports and collector.starts == 2
    kept_trace = emit_workflow(provider)
    provider.shutdown()
    assert exporter.export(memory.get_finished_spans()) == SpanExportResult.SUCCESS
    exporter.shutdown()

    assert_genai_trace(fetch_trace(mlflow_server, collector.experiment_id, kept_trace), "ag2-otel-restart")
    from mlflow import MlflowClient

    ids = {t.info.trace_id for t in MlflowClient(tracking_uri=mlflow_server).search_traces(
        locations=[collector.experiment_id])}
    assert f"tr-{lost_trace}" not in ids
