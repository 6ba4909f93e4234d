"""Collector-route parity, and one trace per conversation per MLflow server. Real everything: ``ag2_otel.autolog()``
in a subprocess configured only through the environment, AG2's OpenAIClient over HTTP to the scripted local model,
the SDK's OTLP exporter, a real rotel collector, a real ``mlflow server`` (sqlite store).

1. The calculator chat, once through the MLflow sink (``MLFLOW_TRACKING_URI`` = the server) and once with only
   OTEL_* set (``AG2_OTEL_MLFLOW=false``: the issue's setup; ``AG2_OTEL_OTLP_MLFLOW`` left at ``auto``) through rotel
   to the same server's ``/v1/traces``. The scripted model makes the two conversations identical but for ids and
   times; the two MLflow traces are compared field by field. Where MLflow's OTLP ingest cannot give the same (read in
   MLflow 3.17.2's server; ag2_otel/mapping/mlflow_otlp.py), the test asserts what it does give:
   - the root span's inputs/outputs: the server derives previews from them and reads text only out of
     ``{"messages": [{"role", "content"}]}``, so over OTLP the root carries its previews in that shape (the MLflow
     sink's root holds the GenAI messages);
   - the per-agent / per-model breakdown: trace metadata cannot be set over OTLP, it arrives as trace tags (same keys;
     ``get_token_usage`` reads either).
2. Both routes on in one process, to one server (``docker-compose.yml``'s setup): one trace, ``tr-<otel trace id>``,
   in the MLflow sink's experiment, tagged ``ag2_otel.via_otlp=true`` once the collector's copy merged into it; the
   collector's experiment gets nothing; the trace equals the MLflow sink's own.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from ag2_otel.mapping import mlflow_trace as m
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
    # the root's inputs/outputs: the GenAI messages (sink), the preview message MLflow's ingest reads (OTLP)
    assert _root(sink).inputs == [{"role": "user", "parts": [{"type": "text", "content": QUESTION}]}]
    assert _root(otlp).inputs == {"messages": [{"role": "user", "content": QUESTION}]}
    assert _root(otlp).outputs == {"messages": [{"role": "assistant", "content": ANSWER}]}
    assert _root(otlp).get_attribute("gen_ai.input.messages") == _root(sink).get_attribute("gen_ai.input.messages")

    # the per-agent / per-model breakdown: metadata on the sink's trace, tags on the OTLP one, the same numbers
    sink_usage = _token_usage(mlflow_server, sink.info.trace_id)
    otlp_usage = _token_usage(mlflow_server, otlp.info.trace_id)
    print("usage ", json.dumps(otlp_usage, sort_keys=True))
    for key in ("total", "by_agent", "by_model", "mlflow_token_usage"):
        assert otlp_usage[key] == sink_usage[key], key
    assert _without_cost(otlp_usage["by_agent"]) == PER_AGENT
    assert _without_cost(otlp_usage["by_model"]) == PER_MODEL
    assert m.META_USAGE_BY_AGENT in sink.info.trace_metadata and m.META_USAGE_BY_AGENT in otlp.info.tags


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
    assert m.META_USAGE_BY_AGENT in trace.info.trace_metadata  # the sink's trace info stands
    assert trace.info.tags.get("service.name") == "both-routes"  # and the collector's copy is in it
    assert _client(mlflow_server).search_traces(locations=[collector.experiment_id]) == []

    usage = _token_usage(mlflow_server, trace.info.trace_id)
    assert _without_cost(usage["by_agent"]) == PER_AGENT and usage["mlflow_token_usage"] == TOTALS


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
