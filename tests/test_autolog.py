"""``ag2_otel.autolog()`` end to end: AG2 on the scripted model → spans → the real MLflow sqlite store (and a real
``mlflow server``), read back with MLflow's public API exactly as the seed example does."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

import mlflow
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import ag2_otel
from ag2_otel.scripted import Step, ToolCall
from tests.genai_schema import SchemaCheckedSpanExporter
from tests.scripted_llm import scripted_llm_config
from tests.test_instrumentation_basic import CALCULATOR_SCRIPT, ProviderDown, make_calculator_agents

SEED_QUESTION = "What is (44232 + 13312 / (232 - 32)) * 5?"


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture
def store(sqlite_uri):
    """The real local MLflow sqlite store, a fresh experiment per test; the previous tracking URI restored after."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(sqlite_uri)
    experiment = mlflow.set_experiment(f"test-{uuid.uuid4().hex[:8]}")
    yield experiment
    mlflow.set_tracking_uri(previous)


@pytest.fixture
def provider():
    """autolog() on a fresh provider (the global one can be set only once per process), with an in-memory copy of
    every span to compare against what MLflow stored."""
    exporter = SchemaCheckedSpanExporter()  # an InMemorySpanExporter that also checks the GenAI content
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer_provider.exporter = exporter
    yield tracer_provider
    ag2_otel.autolog(disable=True)
    exporter.assert_content_valid()


def _traces(experiment):
    return mlflow.search_traces(locations=[experiment.experiment_id], return_type="list")


def _seed_snippet():
    """The seed's token-usage snippet, unchanged."""
    last_trace_id = mlflow.get_last_active_trace_id()
    trace = mlflow.get_trace(trace_id=last_trace_id)
    total_usage = trace.info.token_usage
    per_call = [(span.name, span.get_attribute("mlflow.chat.tokenUsage")) for span in trace.data.spans
                if span.get_attribute("mlflow.chat.tokenUsage")]
    return trace, total_usage, per_call


def test_seed_calculator_example(store, provider):
    ag2_otel.autolog(tracer_provider=provider)
    user_proxy, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    user_proxy.initiate_chat(assistant, message=SEED_QUESTION, max_turns=10)

    trace, total_usage, per_call = _seed_snippet()
    assert total_usage == {"input_tokens": 480, "output_tokens": 52, "total_tokens": 532}
    assert [usage for _, usage in per_call] == [
        {"input_tokens": 120, "output_tokens": 21, "total_tokens": 141},
        {"input_tokens": 160, "output_tokens": 22, "total_tokens": 182},
        {"input_tokens": 200, "output_tokens": 9, "total_tokens": 209},
    ]
    spans = {s.span_id: s for s in trace.data.spans}
    root = next(s for s in trace.data.spans if s.parent_id is None)
    assert root.name == "invoke_workflow initiate_chat"
    types = [s.span_type for s in sorted(trace.data.spans, key=lambda s: s.start_time_ns)]
    assert types == ["CHAIN", "AGENT", "CHAT_MODEL", "AGENT", "TOOL", "AGENT", "CHAT_MODEL", "AGENT", "TOOL", "AGENT",
                     "CHAT_MODEL", "AGENT"]
    for span in trace.data.spans:
        if span.span_type in ("CHAT_MODEL", "TOOL"):  # nesting by agent and turn
            assert spans[span.parent_id].span_type == "AGENT"
        if span.span_type == "AGENT":
            assert span.parent_id == root.span_id
    tool = next(s for s in trace.data.spans if s.span_type == "TOOL")
    assert tool.inputs == {"a": 232, "b": 32, "operator": "-"}
    assert str(tool.outputs) == "200"

    usage = ag2_otel.get_token_usage(trace.info.trace_id)
    assert usage["total"]["input_tokens"] == 480 and usage["total"]["output_tokens"] == 52
    assert usage["by_agent"]["assistant"]["total_tokens"] == 532
    assert usage["by_model"]["scripted-model"]["calls"] == 3
    assert usage["total"]["cost"] == pytest.approx(480e-6 + 52 * 2e-6)
    otel_trace_ids = {format(s.context.trace_id, "032x") for s in provider.exporter.get_finished_spans()}
    assert usage["otel_trace_id"] in otel_trace_ids  # the same trace can be found in a collector backend


def test_group_chat_async_and_threads(store, provider):
    from autogen import ConversableAgent, GroupChat, GroupChatManager

    ag2_otel.autolog(tracer_provider=provider)

    def group(tag: int):
        def member(name, tokens):
            return ConversableAgent(f"{name}", llm_config=scripted_llm_config(
                [Step(text=f"{name} says {tag}", prompt_tokens=tokens + tag, completion_tokens=tag)],
                model=f"model-{name}"), human_input_mode="NEVER")

        user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER")
        chat = GroupChat([user, member("a", 100), member("b", 200)], messages=[], max_round=3,
                         speaker_selection_method="round_robin")
        return user, GroupChatManager(chat, llm_config=False)

    # threads: three group chats at once, each its own MLflow trace with its own exact totals
    def run_in_thread(tag):
        user, manager = group(tag)
        user.initiate_chat(manager, message=f"go {tag}")

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(run_in_thread, [1, 2, 3]))

    async def run_async():
        user, manager = group(4)
        await user.a_initiate_chat(manager, message="go 4")

    asyncio.run(run_async())
    ag2_otel.flush()
    traces = _traces(store)
    assert len(traces) == 4
    totals = sorted((t.info.token_usage["input_tokens"], t.info.token_usage["output_tokens"]) for t in traces)
    assert totals == [(300 + 2 * tag, 2 * tag) for tag in (1, 2, 3, 4)]
    for t in traces:
        names = [s.name for s in sorted(t.data.spans, key=lambda s: s.start_time_ns)]
        assert names[1] == "invoke_workflow group_chat"
        assert names.count("speaker_selection") == 2


def test_errors_reach_mlflow(store, provider):
    ag2_otel.autolog(tracer_provider=provider)
    failing_tool = [Step(tool_calls=[ToolCall("calculator", {"a": 1, "b": 2, "operator": "%"})]), Step(text="TERMINATE")]
    user, assistant = make_calculator_agents(failing_tool)
    user.initiate_chat(assistant, message="1 % 2", max_turns=3)
    trace = mlflow.get_trace(mlflow.get_last_active_trace_id())
    tool = next(s for s in trace.data.spans if s.span_type == "TOOL")
    assert tool.status.status_code == "ERROR"

    import openai

    user, assistant = make_calculator_agents([Step(raise_error=ProviderDown("503 from provider"))])
    with pytest.raises(openai.InternalServerError):  # the provider's HTTP 500, as the openai SDK raises it
        user.initiate_chat(assistant, message="hi", max_turns=2)
    trace = mlflow.get_trace(mlflow.get_last_active_trace_id())
    assert trace.info.state == "ERROR"
    llm = next(s for s in trace.data.spans if s.span_type == "CHAT_MODEL")
    assert llm.status.status_code == "ERROR"
    event = next(e for e in llm.events if e.name == "exception")
    assert event.attributes["exception.type"] == "openai.InternalServerError"
    assert "503 from provider" in event.attributes["exception.message"]


def test_content_off_keeps_message_text_out_of_mlflow(store, provider):
    ag2_otel.autolog(tracer_provider=provider, capture_content=False)
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    user.initiate_chat(assistant, message="What is MARKER-QUESTION?", max_turns=10)
    trace = mlflow.get_trace(mlflow.get_last_active_trace_id())
    dump = trace.to_json()
    for text in ("MARKER-QUESTION", "44298", "helpful AI assistant", '"operator"'):
        assert text not in dump
    assert trace.info.token_usage["total_tokens"] == 532  # usage is not content: still exact


def test_disable_writes_nothing_and_twice_never_doubles(store, provider):
    ag2_otel.autolog(tracer_provider=provider)
    ag2_otel.autolog(tracer_provider=provider)
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    user.initiate_chat(assistant, message="compute", max_turns=10)
    trace = mlflow.get_trace(mlflow.get_last_active_trace_id())
    assert len(trace.data.spans) == 12
    assert len(provider.exporter.get_finished_spans()) == 12

    ag2_otel.autolog(disable=True)
    before = len(_traces(store))
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    user.initiate_chat(assistant, message="compute", max_turns=10)
    ag2_otel.flush()
    assert len(_traces(store)) == before == 1
    assert len(provider.exporter.get_finished_spans()) == 12


def test_user_mlflow_span_becomes_the_parent(store, provider):
    ag2_otel.autolog(tracer_provider=provider)
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)

    @mlflow.trace(name="handle_request")
    def handle_request():
        return user.initiate_chat(assistant, message="compute", max_turns=10).summary

    handle_request()
    ag2_otel.flush()  # the trace is the user's: MLflow writes it (asynchronously) when handle_request returns
    traces = _traces(store)
    assert len(traces) == 1
    trace = traces[0]
    root = next(s for s in trace.data.spans if s.parent_id is None)
    assert root.name == "handle_request"
    conversation = next(s for s in trace.data.spans if s.name == "invoke_workflow initiate_chat")
    assert conversation.parent_id == root.span_id
    assert len(trace.data.spans) == 13
    assert trace.info.token_usage["total_tokens"] == 532


def test_mlflow_ag2_autolog_is_turned_off_not_doubled(store, provider, caplog):
    mlflow.ag2.autolog()
    with caplog.at_level(logging.WARNING, logger="ag2_otel"):
        ag2_otel.autolog(tracer_provider=provider)
    assert any("mlflow.ag2.autolog() was on" in r.getMessage() for r in caplog.records)
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    user.initiate_chat(assistant, message="compute", max_turns=10)
    ag2_otel.flush()
    traces = _traces(store)
    assert len(traces) == 1
    assert traces[0].info.token_usage["total_tokens"] == 532


def test_seed_example_against_a_real_mlflow_server(mlflow_server, provider):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        mlflow.set_experiment(f"server-{uuid.uuid4().hex[:8]}")
        ag2_otel.autolog(tracer_provider=provider)
        user_proxy, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
        user_proxy.initiate_chat(assistant, message=SEED_QUESTION, max_turns=10)
        trace, total_usage, per_call = _seed_snippet()
        assert total_usage == {"input_tokens": 480, "output_tokens": 52, "total_tokens": 532}
        assert len(per_call) == 3
        assert sorted({s.span_type for s in trace.data.spans}) == ["AGENT", "CHAIN", "CHAT_MODEL", "TOOL"]
        assert json.loads(json.dumps(ag2_otel.get_token_usage(trace.info.trace_id)["by_agent"]))["assistant"][
            "input_tokens"] == 480
    finally:
        mlflow.set_tracking_uri(previous)


def test_mlflow_ag2_autolog_enabled_later_is_turned_off_too(store, provider, caplog):
    """Enabled after ours, MLflow's patch sits outside ours: the first chat still gets MLflow's own (one-span) root
    before we can turn it off, with a warning; every chat after that is traced once, by us."""
    ag2_otel.autolog(tracer_provider=provider)
    mlflow.ag2.autolog()
    with caplog.at_level(logging.WARNING, logger="ag2_otel"):
        user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
        user.initiate_chat(assistant, message="compute", max_turns=10)
    assert any("mlflow.ag2.autolog() was on" in r.getMessage() for r in caplog.records)
    ag2_otel.flush()
    first = {t.info.trace_id for t in _traces(store)}
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    user.initiate_chat(assistant, message="compute", max_turns=10)
    ag2_otel.flush()
    new = [t for t in _traces(store) if t.info.trace_id not in first]
    assert len(new) == 1
    assert new[0].info.token_usage["total_tokens"] == 532
    assert len(new[0].data.spans) == 12
