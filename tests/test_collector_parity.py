"""Collector-route parity, and one trace per conversation per MLflow server. Real everything: ``ag2_otel.autolog()``
in a subprocess configured only through the environment, AG2's OpenAIClient over HTTP to the scripted local model,
the SDK's OTLP exporter, a real rotel collector, a real ``mlflow server`` (sqlite store).

1. The calculator chat, once through the MLflow sink (``MLFLOW_TRACKING_URI`` = the server) and once with only
   OTEL_* set (``AG2_OTEL_MLFLOW=false``: the issue's setup; ``AG2_OTEL_OTLP_MLFLOW`` left at ``auto``) through rotel
   to the same server's ``/v1/traces``. The scripted model makes the two conversations identical but for ids and
   times; the two MLflow traces are compared field by field. Where MLflow's OTLP ingest cannot give the same (read in
   MLflow 3.17.2's server; ag2_otel/mapping/mlflow_otlp.py), the test asserts what it does give. Since the MLflow
   sink writes its trace-level data the same way (on the root span, one ``log_spans``), both routes now give:
   - the root span's inputs/outputs as ``{"messages": [{"role", "content"}]}``, the one shape the store derives
     previews from;
   - the per-agent / per-model breakdown as trace tags (``get_token_usage`` reads tags or metadata).
2. Both routes on in one process, to one server (``docker-compose.yml``'s setup): one trace, ``tr-<otel trace id>``,
   in the experiment of the copy that arrived first (the sink's, which writes as the root ends), tagged
   ``ag2_otel.via_otlp=true`` once the collector's copy merged into it; the trace equals the MLflow sink's own.
3. In process: the exporter wrapper (held until the root, late spans, caps, shutdown; other processors' spans
   untouched) and the encoding, checked against MLflow's own ingest functions.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ag2_otel.mapping import mlflow_trace as m
from ag2_otel.mapping.mlflow_otlp import TRACE_TAG_PREFIX, otlp_value
from ag2_otel.mapping.mlflow_trace import build_trace_record
from ag2_otel.sinks.otlp_mlflow import MlflowKeysExporter
from tests.collector import create_experiment, wait_until
from tests.test_zero_code_mlflow import CHAT, SPANS, TOTALS, TYPES, clean_env, run_app

APP = textwrap.dedent("""
    import ag2_otel

    ag2_otel.autolog()
""") + textwrap.dedent(CHAT)
DEADLINE_S = 120.0
PER_AGENT = {"assistant": {"calls": 3, "input_tokens": 480, "output_tokens": 52, "total_tokens": 532}}
PER_MODEL = {"scripted-model": {"calls": 3, "input_tokens": 480, "output_tokens": 52, "total_tokens": 532}}
QUESTION = "What is (44232 + 13312 / (232 - 32)) * 5?"
ANSWER = "The result is 44298. "  # the reply with AG2's TERMINATE stripped, as the summary records it


def _run(tmp_path, name: str, **env):
    workdir = tmp_path / name
    workdir.mkdir()
    (workdir / "app.py").write_text(APP)
    run = run_app([sys.executable, "app.py"], clean_env(workdir, **env), workdir)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "ag2_otel:" not in run.stderr, run.stderr[-4000:]  # none of our warnings
    return run


def _client(server: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=server)


def _only_trace(server: str, experiment_id: str, ready=lambda trace: True):
    """The one trace of an experiment, once it has every span and ``ready(trace)``."""
    client = _client(server)

    def found():
        infos = client.search_traces(locations=[experiment_id])
        if len(infos) != 1:
            assert len(infos) < 2, [i.info.trace_id for i in infos]
            return None
        trace = client.get_trace(infos[0].info.trace_id)
        return trace if len(trace.data.spans) == SPANS and ready(trace) else None

    return wait_until(found, DEADLINE_S, f"one complete trace in experiment {experiment_id}", poll_s=0.5)


def _shape(trace) -> list[tuple]:
    """Each span by start time: name, type, parent's index, failed or not, and MLflow's keys (root's inputs/outputs apart)."""
    spans = sorted(trace.data.spans, key=lambda s: s.start_time_ns)
    index = {s.span_id: i for i, s in enumerate(spans)}
    out = []
    for i, s in enumerate(spans):
        out.append((
            # the sink stores an unset status as OK (as MLflow's own exporter does), OTLP ingest keeps UNSET
            s.name, s.span_type, index.get(s.parent_id), s.status.status_code.value == "ERROR",
            None if i == 0 else s.inputs, None if i == 0 else s.outputs,
            s.get_attribute(m.MLFLOW_CHAT_USAGE), s.get_attribute(m.MLFLOW_LLM_MODEL),
            s.get_attribute(m.MLFLOW_LLM_PROVIDER), s.get_attribute(m.MLFLOW_CHAT_TOOLS),
        ))
    return out


def _token_usage(server: str, trace_id: str) -> dict:
    """``ag2_otel.get_token_usage`` as an application calls it (MLflow's current tracking URI)."""
    import mlflow

    import ag2_otel

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(server)
    try:
        return ag2_otel.get_token_usage(trace_id)
    finally:
        mlflow.set_tracking_uri(previous)


def _without_cost(breakdown: dict) -> dict:
    return {key: {k: v for k, v in usage.items() if k != "cost"} for key, usage in breakdown.items()}


def _root(trace):
    return next(s for s in trace.data.spans if s.parent_id is None)


def _assert_sink_trace(trace):
    """What the MLflow sink writes for the calculator chat (the reference)."""
    assert [t for *_, t in sorted((s.start_time_ns, s.span_type) for s in trace.data.spans)] == TYPES
    assert trace.info.token_usage == TOTALS
    assert trace.info.request_preview == QUESTION
    assert trace.info.response_preview == ANSWER


def test_collector_route_gives_the_mlflow_sinks_trace(tmp_path, mlflow_server, rotel_factory):
    sink_experiment = create_experiment(mlflow_server, "parity-sink")
    _run(tmp_path, "sink", MLFLOW_TRACKING_URI=mlflow_server, MLFLOW_EXPERIMENT_ID=sink_experiment)
    collector = rotel_factory()
    _run(tmp_path, "otlp", AG2_OTEL_MLFLOW="false", OTEL_EXPORTER_OTLP_ENDPOINT=collector.grpc_endpoint,
         OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_SERVICE_NAME="parity-otlp")

    sink = _only_trace(mlflow_server, sink_experiment)
    otlp = _only_trace(mlflow_server, collector.experiment_id)
    _assert_sink_trace(sink)
    print("sink  ", sink.info.trace_id, sink.info.request_preview, "|", sink.info.response_preview)
    print("otlp  ", otlp.info.trace_id, otlp.info.request_preview, "|", otlp.info.response_preview)

    # span by span: names, types, parents, status, inputs/outputs, token usage, model, provider, offered tools
    assert _shape(otlp) == _shape(sink)
    # trace level
    assert otlp.info.trace_id == "tr-" + otlp.info.tags[m.TAG_OTEL_TRACE_ID]
    assert _root(otlp).span_type == _root(sink).span_type == m.CHAIN
    assert otlp.info.token_usage == sink.info.token_usage == TOTALS
    assert otlp.info.request_preview == sink.info.request_preview == QUESTION
    assert otlp.info.response_preview == sink.info.response_preview == ANSWER
    assert otlp.info.tags["mlflow.traceName"] == sink.info.tags["mlflow.traceName"] == "invoke_workflow initiate_chat"
    assert otlp.info.state == sink.info.state
    for trace in (sink, otlp):  # the session is the conversation's own id (AG2's chat_id), on both routes
        conversation = _root(trace).get_attribute("gen_ai.conversation.id")
        if conversation is not None:  # AG2 >= 0.10
            assert trace.info.trace_metadata.get(m.MLFLOW_TRACE_SESSION) == conversation
    # the root's inputs/outputs: the chat shape the store reads previews from, on both routes
    assert _root(otlp).inputs == _root(sink).inputs == {"messages": [{"role": "user", "content": QUESTION}]}
    assert _root(otlp).outputs == _root(sink).outputs
    assert _root(sink).outputs["messages"][-1]["content"] == ANSWER
    assert _root(otlp).get_attribute("gen_ai.input.messages") == _root(sink).get_attribute("gen_ai.input.messages")

    # the per-agent / per-model breakdown: tags on both, the same numbers
    sink_usage = _token_usage(mlflow_server, sink.info.trace_id)
    otlp_usage = _token_usage(mlflow_server, otlp.info.trace_id)
    print("usage ", json.dumps(otlp_usage, sort_keys=True))
    for key in ("total", "by_agent", "by_model", "mlflow_token_usage"):
        assert otlp_usage[key] == sink_usage[key], key
    assert _without_cost(otlp_usage["by_agent"]) == PER_AGENT
    assert _without_cost(otlp_usage["by_model"]) == PER_MODEL
    assert m.META_USAGE_BY_AGENT in sink.info.tags and m.META_USAGE_BY_AGENT in otlp.info.tags
    assert otlp.info.tags.get("ag2_otel.via_otlp") == "true" and "ag2_otel.via_otlp" not in sink.info.tags


def test_both_routes_to_one_server_give_one_trace_owned_by_the_sink(tmp_path, mlflow_server, rotel_factory):
    """docker-compose.yml's setup: the MLflow sink writes to the server, the collector forwards the OTLP copy to the
    same server under another experiment. One conversation = one MLflow trace there (both routes name it
    ``tr-<otel trace id>``): the MLflow sink's experiment, trace info and spans; the collector's copy, carrying the
    same keys (AG2_OTEL_OTLP_MLFLOW=auto is on for a sink that writes to a server), merges into it."""
    sink_experiment = create_experiment(mlflow_server, "both-sink")
    collector = rotel_factory()
    _run(tmp_path, "both", MLFLOW_TRACKING_URI=mlflow_server, MLFLOW_EXPERIMENT_ID=sink_experiment,
         OTEL_EXPORTER_OTLP_ENDPOINT=collector.grpc_endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
         OTEL_SERVICE_NAME="both-routes")

    # the collector's copy has arrived when its tag is on the trace
    trace = _only_trace(mlflow_server, sink_experiment, ready=lambda t: t.info.tags.get("ag2_otel.via_otlp") == "true")
    _assert_sink_trace(trace)
    assert trace.info.trace_id == "tr-" + trace.info.tags[m.TAG_OTEL_TRACE_ID]
    assert m.META_USAGE_BY_AGENT in trace.info.tags
    assert trace.info.tags.get("service.name") == "both-routes"  # and the collector's copy is in it
    assert _client(mlflow_server).search_traces(locations=[collector.experiment_id]) == []

    usage = _token_usage(mlflow_server, trace.info.trace_id)
    assert _without_cost(usage["by_agent"]) == PER_AGENT and usage["mlflow_token_usage"] == TOTALS


def test_one_trace_when_the_collectors_copy_came_first(mlflow_server, monkeypatch):
    """The other order: the OTLP copy (with our keys; straight to the server's /v1/traces here, a collector is
    transparent) is stored first, in its experiment; then the MLflow sink writes the same conversation (to another
    experiment): still one trace, where the first copy put it (``log_spans`` does not move a trace), holding the
    sink's write too (its source tags, which the OTLP copy does not carry) and the same trace-level data."""
    import mlflow
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from ag2_otel.sinks.mlflow_exporter import MlflowSpanExporter

    otlp_experiment = create_experiment(mlflow_server, "first-otlp")
    sink_experiment = create_experiment(mlflow_server, "then-sink")
    otlp = OTLPSpanExporter(endpoint=f"{mlflow_server}/v1/traces",
                            headers={"x-mlflow-experiment-id": otlp_experiment})
    plain = _chat_through(MlflowKeysExporter(otlp)).get_finished_spans()  # exported as the root ended
    first = _only_trace(mlflow_server, otlp_experiment)
    assert first.info.tags.get("ag2_otel.via_otlp") == "true" and m.META_USAGE_BY_AGENT in first.info.tags
    assert "mlflow.source.type" not in first.info.tags

    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", sink_experiment)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        sink = MlflowSpanExporter()
        sink.export(plain)
        assert sink.force_flush(60_000)
        sink.shutdown()
    finally:
        mlflow.set_tracking_uri(previous)
    trace = _only_trace(mlflow_server, otlp_experiment, ready=lambda t: t.info.tags.get("mlflow.source.type"))
    assert trace.info.trace_id == first.info.trace_id
    _assert_sink_trace(trace)
    assert trace.info.tags.get("ag2_otel.via_otlp") == "true"
    assert trace.info.tags[m.META_USAGE_BY_AGENT] == first.info.tags[m.META_USAGE_BY_AGENT]
    assert _client(mlflow_server).search_traces(locations=[sink_experiment]) == []


def test_a_copy_without_our_keys_replaces_the_sinks_spans_on_one_server(tmp_path, mlflow_server, rotel_factory):
    """Why both routes to one server need the keys (measured, MLflow 3.17.2): with AG2_OTEL_OTLP_MLFLOW=false the
    collector's plain copy, exported at exit after the MLflow sink's write, merges into the sink's trace (its trace
    info stands) and MLflow keeps the span rows of the copy that arrived last: the plain ones."""
    sink_experiment = create_experiment(mlflow_server, "plain-merge")
    collector = rotel_factory()
    _run(tmp_path, "plain-merge", MLFLOW_TRACKING_URI=mlflow_server, MLFLOW_EXPERIMENT_ID=sink_experiment,
         AG2_OTEL_OTLP_MLFLOW="false", OTEL_EXPORTER_OTLP_ENDPOINT=collector.grpc_endpoint,
         OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_SERVICE_NAME="plain-merge", OTEL_BSP_SCHEDULE_DELAY="600000")
    # the copy's resource became a tag: it has arrived (the sink's own write has an empty resource)
    trace = _only_trace(mlflow_server, sink_experiment, ready=lambda t: t.info.tags.get("service.name") == "plain-merge")
    assert trace.info.request_preview == QUESTION and m.META_USAGE_BY_AGENT in trace.info.tags
    assert trace.info.token_usage == TOTALS
    assert _root(trace).span_type in (None, m.UNKNOWN)  # was CHAIN in the sink's copy
    assert _client(mlflow_server).search_traces(locations=[collector.experiment_id]) == []


@pytest.mark.parametrize("mode", ["false"])
def test_plain_genai_spans_when_turned_off(tmp_path, mlflow_server, rotel_factory, mode):
    """AG2_OTEL_OTLP_MLFLOW=false: the spans are the plain GenAI ones, mapped by MLflow's own translator (the
    workflow root gets no type, previews are raw GenAI JSON, no breakdown)."""
    collector = rotel_factory()
    _run(tmp_path, "plain", AG2_OTEL_MLFLOW="false", AG2_OTEL_OTLP_MLFLOW=mode,
         OTEL_EXPORTER_OTLP_ENDPOINT=collector.grpc_endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    trace = _only_trace(mlflow_server, collector.experiment_id)
    assert trace.info.token_usage == TOTALS
    assert _root(trace).span_type in (None, m.UNKNOWN)
    assert trace.info.request_preview != QUESTION and QUESTION in trace.info.request_preview
    assert "ag2_otel.via_otlp" not in trace.info.tags and m.META_USAGE_BY_AGENT not in trace.info.tags


# --- in process: the exporter wrapper and the encoding, on real SDK spans and MLflow's own ingest functions ----------

class _Batches(InMemorySpanExporter):
    """An in-memory exporter that also records each export call's span names."""

    def __init__(self):
        super().__init__()
        self.batches: list[list[str]] = []

    def export(self, spans):
        self.batches.append([s.name for s in spans])
        super().export(spans)
        return SpanExportResult.SUCCESS


def _stored(value):
    """What MLflow 3.17's OTLP ingest stores for an attribute sent as ``otlp_value(value)``, read back as MLflow reads
    a span attribute: its own from_otel_proto encoding, then its own sanitize_attributes (mlflow.tracing)."""
    from mlflow.tracing.otel.translation import sanitize_attributes
    from mlflow.tracing.utils import dump_span_attribute_value

    return json.loads(sanitize_attributes({"k": dump_span_attribute_value(otlp_value(value))})["k"])


@pytest.mark.parametrize("value", [
    "CHAIN", "200", "3.5", "true", '{"a": 1}', '"quoted"', "[1, 2]", "naïve ünïcode", "", 200, 1.5, True, False,
    {"messages": [{"role": "user", "content": "hi"}]}, [{"role": "user", "parts": []}], {"input_tokens": 3},
])
def test_every_value_is_stored_as_the_mlflow_sink_stores_it(value):
    assert _stored(value) == value and type(_stored(value)) is type(value)


def test_a_null_is_stored_as_the_string_null_which_counts_as_no_usage():
    assert _stored(None) == "null"  # an OTel attribute cannot be None; MLflow's aggregation skips a non-dict usage


def test_auto_turns_the_keys_on_where_mlflow_may_be_behind_the_collector():
    from ag2_otel.config import ConfigError, load_settings

    auto = load_settings({})
    assert auto.otlp_mlflow == "auto"
    assert auto.otlp_mlflow_keys(mlflow_sink_on=False, tracking_uri=None)  # only the collector reaches MLflow
    assert auto.otlp_mlflow_keys(mlflow_sink_on=True, tracking_uri="http://mlflow:5000")  # may feed that server
    assert not auto.otlp_mlflow_keys(mlflow_sink_on=True, tracking_uri="sqlite:///mlflow.db")
    assert not auto.otlp_mlflow_keys(mlflow_sink_on=True, tracking_uri="databricks")
    assert not auto.otlp_mlflow_keys(mlflow_sink_on=True, tracking_uri=None)  # MLflow's default: a local store
    assert not load_settings({"AG2_OTEL_OTLP_MLFLOW": "false"}).otlp_mlflow_keys(False, None)
    assert load_settings({"AG2_OTEL_OTLP_MLFLOW": "TRUE"}).otlp_mlflow_keys(True, "sqlite:///x.db")
    with pytest.raises(ConfigError, match="AG2_OTEL_OTLP_MLFLOW='maybe' is not valid; use one of: auto, true, false"):
        load_settings({"AG2_OTEL_OTLP_MLFLOW": "maybe"})


def _chat_through(exporter) -> InMemorySpanExporter:
    """The calculator chat (AG2's OpenAIClient over HTTP), its spans to ``exporter`` and, untouched, to the returned
    in-memory exporter (another processor on the same provider)."""
    from ag2_otel import Ag2Instrumentor
    from tests.test_instrumentation_basic import CALCULATOR_SCRIPT, make_calculator_agents

    plain = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(plain))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = Ag2Instrumentor()
    instrumentor.instrument(tracer_provider=provider, capture_content=True)
    try:
        user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
        user.initiate_chat(assistant, message=QUESTION, max_turns=10, silent=True)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    return plain


def test_keys_exporter_sends_a_conversation_when_its_root_ends_with_the_mlflow_sinks_mapping():
    inner = _Batches()
    plain = _chat_through(MlflowKeysExporter(inner))
    originals = plain.get_finished_spans()
    assert len(originals) == SPANS
    assert not any(k.startswith("mlflow.") for s in originals for k in s.attributes)  # other processors: untouched
    # each span was exported on its own (SimpleSpanProcessor); the wrapper held them and sent one batch at the root
    assert inner.batches == [[s.name for s in originals]]

    sent = {s.context.span_id: s for s in inner.get_finished_spans()}
    record = build_trace_record(originals)
    for original in originals:
        copy = sent[original.context.span_id]
        assert dict(copy.attributes).items() >= dict(original.attributes).items()  # the GenAI attributes as they were
        assert (copy.name, copy.parent, copy.start_time, copy.end_time) == (
            original.name, original.parent, original.start_time, original.end_time)
    for rec in record.spans[1:]:  # every span but the root: the mapping's type, inputs, outputs and added keys
        attrs = sent[int(rec.span_id, 16)].attributes
        assert attrs["mlflow.spanType"] == rec.span_type
        assert json.loads(attrs["mlflow.spanInputs"]) == rec.inputs
        if rec.outputs is None:  # the last agent turn (termination) has no reply
            assert "mlflow.spanOutputs" not in attrs
        else:
            assert attrs["mlflow.spanOutputs"] == otlp_value(rec.outputs) and _stored(rec.outputs) == rec.outputs
        if rec.usage is not None:
            assert json.loads(attrs[m.MLFLOW_CHAT_USAGE]) == rec.usage.to_mlflow()
    root = sent[int(record.root.span_id, 16)].attributes
    assert root["mlflow.spanType"] == m.CHAIN
    assert json.loads(root[TRACE_TAG_PREFIX + m.META_USAGE_BY_AGENT]) == json.loads(record.metadata[
        m.META_USAGE_BY_AGENT])
    assert root[TRACE_TAG_PREFIX + m.TAG_OTEL_TRACE_ID] == record.otel_trace_id


def _tracer(exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, provider.get_tracer("tests.parity")


def test_late_spans_go_at_once_and_caps_release_the_oldest_conversation():
    inner = _Batches()
    keys = MlflowKeysExporter(inner, max_traces=1)
    provider, tracer = _tracer(keys)
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "a"}
    root = tracer.start_span("invoke_workflow x", attributes={"gen_ai.operation.name": "invoke_workflow"})
    late = tracer.start_span("invoke_agent a", context=_context(root), attributes=agent)
    root.end()
    assert inner.batches == [["invoke_workflow x"]]
    late.end()  # its root is gone: sent on its own, with its span-level keys
    assert inner.batches[-1] == ["invoke_agent a"]
    assert inner.get_finished_spans()[-1].attributes["mlflow.spanType"] == m.AGENT

    first = tracer.start_span("invoke_workflow one")
    tracer.start_span("invoke_agent a", context=_context(first), attributes=agent).end()
    second = tracer.start_span("invoke_workflow two")
    tracer.start_span("invoke_agent b", context=_context(second), attributes=agent).end()
    # max_traces=1: holding "two"'s span released "one"'s, without trace-level keys
    assert inner.batches[-1] == ["invoke_agent a"]
    assert not any(k.startswith(TRACE_TAG_PREFIX) for k in inner.get_finished_spans()[-1].attributes)
    second.end()
    assert inner.batches[-1] == ["invoke_agent b", "invoke_workflow two"]
    open_one = tracer.start_span("invoke_workflow three")
    tracer.start_span("invoke_agent c", context=_context(open_one), attributes=agent).end()
    provider.shutdown()  # held spans of a conversation still running go out at shutdown
    assert inner.batches[-1] == ["invoke_agent c"]
    first.end(), open_one.end()


def test_spans_sent_over_the_cap_still_count_in_the_breakdown_their_root_carries():
    inner = _Batches()
    provider, tracer = _tracer(MlflowKeysExporter(inner, max_spans=1, max_traces=2))
    chat = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m1", "gen_ai.usage.input_tokens": 7,
            "gen_ai.usage.output_tokens": 2, "gen_ai.input.messages": "x" * 5000}
    root = tracer.start_span("invoke_workflow x", attributes={"gen_ai.operation.name": "invoke_workflow"})
    agent = tracer.start_span("invoke_agent a", context=_context(root), attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "a"})
    tracer.start_span("chat m1", context=_context(agent), attributes=chat).end()
    agent.end()  # two spans held, one allowed: both go now, with their span-level keys
    assert inner.batches == [["chat m1", "invoke_agent a"]]
    assert json.loads(inner.get_finished_spans()[0].attributes[m.MLFLOW_CHAT_USAGE])["input_tokens"] == 7
    root.end()
    assert inner.batches[-1] == ["invoke_workflow x"]
    tags = inner.get_finished_spans()[-1].attributes
    by_agent = json.loads(tags[TRACE_TAG_PREFIX + m.META_USAGE_BY_AGENT])
    assert by_agent["a"]["input_tokens"] == 7 and by_agent["a"]["calls"] == 1  # from the skeletons

    # over max_traces the oldest conversation is forgotten: its root goes without a (partial) breakdown
    workflow = {"gen_ai.operation.name": "invoke_workflow"}
    first = tracer.start_span("invoke_workflow one", attributes=workflow)
    tracer.start_span("chat m1", context=_context(first), attributes=chat).end()
    for name in ("two", "three"):
        other = tracer.start_span(f"invoke_workflow {name}", attributes=workflow)
        tracer.start_span("chat m1", context=_context(other), attributes=chat).end()
    first.end()
    root_one = inner.get_finished_spans()[-1]
    assert root_one.name == "invoke_workflow one" and root_one.attributes["mlflow.spanType"] == m.CHAIN
    assert TRACE_TAG_PREFIX + m.META_USAGE_BY_AGENT not in root_one.attributes
    provider.shutdown()


def _context(span):
    from opentelemetry import trace

    return trace.set_span_in_context(span)
