"""MlflowSpanProcessor end to end: real OTel SDK spans -> real MLflow stores (local sqlite, a real `mlflow server`)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import mlflow
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from ag2_otel import semconv as sc
from ag2_otel.mapping import mlflow_trace as m
from ag2_otel.sinks.mlflow_processor import MlflowSpanProcessor
from ag2_otel.usage import get_token_usage
from tests.test_mlflow_mapping import (
    CHAT_CALLS,
    CONVERSATION_ID,
    build_conversation,
    expected_breakdown,
    expected_totals,
)

# The store prices spans from a model catalog it downloads from GitHub; this box is offline, so switch that off.
NO_CATALOG = ("MLFLOW_MODEL_CATALOG_URI", "")
EXPECTED_TOKEN_USAGE = {**expected_totals(), "cache_read_input_tokens": 40}


@pytest.fixture(scope="module")
def _local_store_dir(tmp_path_factory):
    """One sqlite store per module (creating one takes ~10 s here); cwd moved so MLflow's ./mlruns lands in tmp."""
    root: Path = tmp_path_factory.mktemp("mlflow_local")
    previous_uri, previous_cwd = mlflow.get_tracking_uri(), os.getcwd()
    previous_catalog = os.environ.get(NO_CATALOG[0])
    os.environ[NO_CATALOG[0]] = NO_CATALOG[1]
    os.chdir(root)
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    try:
        yield root
    finally:
        mlflow.flush_trace_async_logging()
        mlflow.set_tracking_uri(previous_uri)
        os.chdir(previous_cwd)
        if previous_catalog is None:
            os.environ.pop(NO_CATALOG[0], None)
        else:
            os.environ[NO_CATALOG[0]] = previous_catalog


@pytest.fixture
def local_store(_local_store_dir):
    """The module's sqlite store, made current for this test with its experiment: the active experiment is MLflow
    global state and another test (or the server test) may have left an id of another store active."""
    mlflow.set_tracking_uri(f"sqlite:///{_local_store_dir / 'mlflow.db'}")
    mlflow.set_experiment("sink-tests")
    return _local_store_dir


@pytest.fixture
def server_store(mlflow_server, tmp_path, monkeypatch):
    previous = mlflow.get_tracking_uri()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(*NO_CATALOG)
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("sink-tests")
    try:
        yield mlflow_server
    finally:
        mlflow.flush_trace_async_logging()
        mlflow.set_tracking_uri(previous)


def make_provider(**processor_kwargs):
    """A fresh provider with the processor under test and an in-memory copy of every span (the ground truth)."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    processor = MlflowSpanProcessor(**processor_kwargs)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(processor)
    return provider, processor, exporter


def assert_trace_matches(mlflow_trace, otel_spans, *, under=None):
    """Same tree (by name + original start time), types, per-span usage, statuses, events and totals."""
    mine = [s for s in mlflow_trace.data.spans if under is None or s.span_id != under]
    key_of = {s.span_id: (s.name, s.start_time_ns) for s in mine}
    otel_key = {o.context.span_id: (o.name, o.start_time) for o in otel_spans}
    assert sorted(key_of.values()) == sorted(otel_key.values())
    otel_by_key = {otel_key[o.context.span_id]: o for o in otel_spans}
    for span in mine:
        otel = otel_by_key[key_of[span.span_id]]
        parent_key = otel_key.get(otel.parent.span_id) if otel.parent is not None else None
        assert key_of.get(span.parent_id) == parent_key or (parent_key is None and span.parent_id == under)
        assert span.end_time_ns == otel.end_time
        assert span.span_type == m.span_type_of(otel.attributes)
        usage = m.usage_of(otel.attributes) if m.is_model_call(otel.attributes) else None
        assert span.get_attribute(m.MLFLOW_CHAT_USAGE) == (usage.to_mlflow() if usage else None)
        assert span.status.status_code.value == ("ERROR" if otel.status.status_code.name == "ERROR" else "OK")
        assert [e.name for e in span.events] == [e.name for e in otel.events]
    assert mlflow_trace.info.token_usage == EXPECTED_TOKEN_USAGE


def assert_conversation(trace_id, otel_spans):
    got = mlflow.get_trace(trace_id)
    assert got is not None
    assert_trace_matches(got, otel_spans)
    info = got.info
    assert info.tags[m.TAG_OTEL_TRACE_ID] == format(otel_spans[0].context.trace_id, "032x")
    assert info.trace_metadata[m.MLFLOW_TRACE_SESSION] == CONVERSATION_ID
    assert info.tags["mlflow.traceName"] == "invoke_workflow team"
    failed = [s for s in got.data.spans if s.status.status_code.value == "ERROR"]
    assert len(failed) == 1 and failed[0].events[0].attributes["exception.type"] == "RuntimeError"
    assert failed[0].events[0].attributes["exception.message"] == "rate limited"
    tool = next(s for s in got.data.spans if s.name == "execute_tool add")
    assert tool.inputs == {"a": 1, "b": 2} and tool.outputs == "3"  # the string the tool produced
    usage = get_token_usage(trace_id)
    assert usage["otel_trace_id"] == info.tags[m.TAG_OTEL_TRACE_ID]
    assert usage["mlflow_token_usage"] == EXPECTED_TOKEN_USAGE
    assert {k: usage["total"][k] for k in expected_totals()} == expected_totals()
    assert usage["total"]["calls"] == len(CHAT_CALLS)
    assert usage["total"]["cost"] == pytest.approx(0.5 * len(CHAT_CALLS))
    for key, index in (("by_agent", 0), ("by_model", 1)):
        got_breakdown = {name: {f: v[f] for f in ("input_tokens", "output_tokens", "total_tokens")}
                         for name, v in usage[key].items()}
        assert got_breakdown == expected_breakdown(index)
    return got


def run_seed_snippet(provider, exporter):
    """What a user does: run the conversation, then read the last trace right away (no flush)."""
    build_conversation(provider.get_tracer("app"))
    trace_id = mlflow.get_last_active_trace_id()
    return trace_id, list(exporter.get_finished_spans())


def test_conversation_to_local_store(local_store):
    provider, processor, exporter = make_provider()
    trace_id, spans = run_seed_snippet(provider, exporter)
    assert_conversation(trace_id, spans)
    assert processor.stats["traces_written"] == 1 and processor.stats["write_errors"] == 0
    provider.shutdown()


def test_conversation_to_mlflow_server(server_store):
    provider, processor, exporter = make_provider()
    trace_id, spans = run_seed_snippet(provider, exporter)
    assert_conversation(trace_id, spans)
    provider.shutdown()


def test_no_wait_then_flush(local_store):
    provider, processor, exporter = make_provider(wait_for_write=False)
    trace_id, spans = run_seed_snippet(provider, exporter)
    assert processor.flush(timeout=30)
    assert_conversation(trace_id, spans)
    provider.shutdown()


@pytest.mark.parametrize("propagate", [False, True], ids=["isolated-context", "shared-otel-context"])
def test_nested_under_user_mlflow_span(local_store, monkeypatch, propagate):
    monkeypatch.setenv("MLFLOW_TRACE_PROPAGATE_TO_OTEL_CONTEXT", "true" if propagate else "false")
    provider, processor, exporter = make_provider()
    with mlflow.start_span("my app") as user_span:
        build_conversation(provider.get_tracer("app"))
    assert processor.flush(timeout=30)
    spans = list(exporter.get_finished_spans())
    root = next(s for s in spans if s.name == "invoke_workflow team")
    if propagate:  # the OTel parent of our root IS the user's MLflow span
        assert root.parent is not None and format(root.parent.span_id, "016x") == user_span.span_id
    else:  # MLflow's isolated context: no OTel parent, nested because an MLflow span is active
        assert root.parent is None
    assert mlflow.get_last_active_trace_id() == user_span.trace_id
    got = mlflow.get_trace(user_span.trace_id)
    assert_trace_matches(got, spans, under=user_span.span_id)
    assert get_token_usage(user_span.trace_id)["by_agent"]["coder"]["input_tokens"] == 30
    provider.shutdown()


def test_remote_parent_makes_a_separate_trace(local_store):
    provider, processor, exporter = make_provider()
    remote = SpanContext(0x1234, 0x99, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with mlflow.start_span("unrelated user span") as user_span:
        build_conversation(provider.get_tracer("app"), context=trace.set_span_in_context(NonRecordingSpan(remote)))
        ours = mlflow.get_last_active_trace_id()  # ours ended (and was written) inside the user's span
    assert ours != user_span.trace_id
    got = mlflow.get_trace(ours)
    assert got.info.tags[m.TAG_OTEL_TRACE_ID] == format(0x1234, "032x")
    assert_trace_matches(got, list(exporter.get_finished_spans()))
    provider.shutdown()


def test_incomplete_trace_written_at_shutdown(local_store):
    provider, processor, exporter = make_provider()
    tracer = provider.get_tracer("app")
    root = tracer.start_span("invoke_workflow stuck", attributes={sc.OPERATION_NAME: sc.OP_WORKFLOW})
    with tracer.start_as_current_span("chat m", context=trace.set_span_in_context(root), attributes={
            sc.OPERATION_NAME: sc.OP_CHAT, sc.USAGE_INPUT_TOKENS: 4, sc.USAGE_OUTPUT_TOKENS: 1}):
        pass
    provider.shutdown()  # the root never ended
    got = mlflow.get_trace(mlflow.get_last_active_trace_id())
    assert got.info.tags[m.TAG_INCOMPLETE] == "true"
    assert [s.name for s in got.data.spans] == ["invoke_workflow stuck", "chat m"]
    assert got.data.spans[1].parent_id == got.data.spans[0].span_id
    assert got.info.token_usage == {"input_tokens": 4, "output_tokens": 1, "total_tokens": 5}
    assert processor.stats["incomplete_traces_written"] == 1


def test_caps_drop_and_count_with_one_warning(local_store, caplog):
    provider, processor, exporter = make_provider(max_traces=1, max_spans_per_trace=2)
    tracer = provider.get_tracer("app")
    with caplog.at_level(logging.WARNING, logger="ag2_otel.sinks.mlflow_processor"):
        with tracer.start_as_current_span("invoke_workflow kept", attributes={sc.OPERATION_NAME: sc.OP_WORKFLOW}):
            for i in range(5):
                with tracer.start_as_current_span(f"chat {i}", attributes={
                        sc.OPERATION_NAME: sc.OP_CHAT, sc.USAGE_INPUT_TOKENS: 1, sc.USAGE_OUTPUT_TOKENS: 1}):
                    pass
            # a second, concurrent trace while the first is buffered: refused whole
            for _ in range(2):
                with tracer.start_as_current_span("invoke_workflow refused", context=trace.set_span_in_context(
                        NonRecordingSpan(SpanContext(0x77, 0x88, True, TraceFlags(TraceFlags.SAMPLED))))):
                    with tracer.start_as_current_span("chat x"):
                        pass
    stats = processor.stats
    assert stats["dropped_traces"] == 2 and stats["dropped_spans"] == 3 + 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per cap, not one per drop
    got = mlflow.get_trace(mlflow.get_last_active_trace_id())
    assert got.info.tags[m.TAG_DROPPED_SPANS] == "3"
    assert [s.name for s in got.data.spans] == ["invoke_workflow kept", "chat 0", "chat 1"]
    assert got.info.token_usage["total_tokens"] == 4
    provider.shutdown()


def test_our_errors_are_swallowed_and_logged_once(local_store, caplog):
    processor = MlflowSpanProcessor()
    with caplog.at_level(logging.WARNING, logger="ag2_otel.sinks.mlflow_processor"):
        for _ in range(3):
            processor.on_start(object())  # not a span: our code fails, the app must not
            processor.on_end(object())
    messages = Counter(r.getMessage().split(" failed")[0] for r in caplog.records)
    assert messages == Counter({"ag2_otel: MlflowSpanProcessor.on_start": 1, "ag2_otel: MlflowSpanProcessor.on_end": 1})
    processor.shutdown()
