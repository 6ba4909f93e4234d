"""Two-agent chats, tools, errors, async, run(), content on/off, secrets, metrics, instrument/uninstrument."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.trace import SpanKind, StatusCode

from ag2_otel import Ag2Instrumentor
from ag2_otel import semconv as k
from ag2_otel.scripted import Step, ToolCall
from tests.scripted_llm import scripted_llm_config
from tests.helpers import assert_conversation_id, span_tree

SECRET_KEY = "sk-test-SECRET-0123456789"
SECRET_PASSWORD = "hunter2-SECRET"


def _is_termination(message):
    return (message.get("content") or "").rstrip().endswith("TERMINATE")


def make_calculator_agents(script, *, llm_config=None):
    """The calculator round trip from AG2's docs (tool use): AG2's OpenAIClient against the local server, answering
    from ``script``."""
    from autogen import ConversableAgent, register_function

    assistant = ConversableAgent(
        "assistant",
        system_message="You are a helpful AI assistant. You can help with simple calculations. Reply TERMINATE when done.",
        llm_config=llm_config or scripted_llm_config(script),
    )
    user = ConversableAgent("user", llm_config=False, is_termination_msg=_is_termination, human_input_mode="NEVER")

    def calculator(a: int, b: int, operator: Annotated[str, "operator"]) -> int:
        if operator == "+":
            return a + b
        if operator == "-":
            return a - b
        if operator == "*":
            return a * b
        if operator == "/":
            return int(a / b)
        raise ValueError("Invalid operator")

    register_function(calculator, caller=assistant, executor=user, name="calculator", description="A simple calculator")
    return user, assistant


CALCULATOR_SCRIPT = [
    Step(tool_calls=[ToolCall("calculator", {"a": 232, "b": 32, "operator": "-"}, id="call-1")],
         prompt_tokens=120, completion_tokens=21),
    Step(tool_calls=[ToolCall("calculator", {"a": 13312, "b": 200, "operator": "/"}, id="call-2")],
         prompt_tokens=160, completion_tokens=22),
    Step(text="The result is 44298. TERMINATE", prompt_tokens=200, completion_tokens=9),
]

CALCULATOR_TREE = [
    "invoke_workflow initiate_chat",
    "  invoke_agent assistant",
    "    chat scripted-model",
    "  invoke_agent user",
    "    execute_tool calculator",
    "  invoke_agent assistant",
    "    chat scripted-model",
    "  invoke_agent user",
    "    execute_tool calculator",
    "  invoke_agent assistant",
    "    chat scripted-model",
    "  invoke_agent user",
]


def _llm_spans(spans):
    return sorted((s for s in spans if s.attributes.get(k.OPERATION_NAME) == k.OP_CHAT), key=lambda s: s.start_time)


def test_two_agent_text_chat(instrument, span_exporter):
    from autogen import ConversableAgent

    instrument()
    alice = ConversableAgent("alice", llm_config=scripted_llm_config([Step(text="hi bob", prompt_tokens=11,
                                                                                completion_tokens=3)]),
                             human_input_mode="NEVER")
    bob = ConversableAgent("bob", llm_config=scripted_llm_config([Step(text="hi alice", prompt_tokens=13,
                                                                            completion_tokens=4)]),
                           human_input_mode="NEVER")
    result = alice.initiate_chat(bob, message="hello", max_turns=2)

    spans = span_exporter.get_finished_spans()
    assert span_tree(spans) == [
        "invoke_workflow initiate_chat",
        "  invoke_agent bob",
        "    chat scripted-model",
        "  invoke_agent alice",
        "    chat scripted-model",
        "  invoke_agent bob",
        "    chat scripted-model",
    ]
    assert len({s.context.trace_id for s in spans}) == 1
    root = next(s for s in spans if s.parent is None)
    assert root.attributes[k.OPERATION_NAME] == k.OP_WORKFLOW
    assert list(root.attributes[k.AG2_PARTICIPANTS]) == ["alice", "bob"]
    assert root.attributes[k.AG2_MAX_TURNS] == 2
    assert_conversation_id(root.attributes, result.chat_id)
    assert root.attributes[k.AG2_TERMINATION_REASON] == "Maximum turns (2) reached"
    turns = [s for s in spans if s.attributes.get(k.OPERATION_NAME) == k.OP_AGENT]
    assert [t.attributes[k.AG2_SENDER] for t in turns] == ["alice", "bob", "alice"]
    assert all(t.kind is SpanKind.INTERNAL for t in turns)
    llm = _llm_spans(spans)
    assert all(s.kind is SpanKind.CLIENT for s in llm)
    assert [(s.attributes[k.USAGE_INPUT_TOKENS], s.attributes[k.USAGE_OUTPUT_TOKENS]) for s in llm] == [
        (13, 4), (11, 3), (13, 4)]
    assert [s.attributes[k.AGENT_NAME] for s in llm] == ["bob", "alice", "bob"]
    assert llm[0].attributes[k.PROVIDER_NAME] == "openai"
    assert llm[0].attributes[k.SERVER_ADDRESS] == "127.0.0.1"
    assert llm[0].attributes[k.REQUEST_MODEL] == "scripted-model"
    assert list(llm[0].attributes[k.RESPONSE_FINISH_REASONS]) == ["stop"]
    assert llm[0].attributes[k.RESPONSE_ID].startswith("chatcmpl-")


def test_calculator_round_trip(instrument, span_exporter):
    instrument(capture_content=True)
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    result = user.initiate_chat(assistant, message="What is (44232 + 13312 / (232 - 32)) * 5?", max_turns=6)

    spans = span_exporter.get_finished_spans()
    assert span_tree(spans) == CALCULATOR_TREE
    llm = _llm_spans(spans)
    usage = [(s.attributes[k.USAGE_INPUT_TOKENS], s.attributes[k.USAGE_OUTPUT_TOKENS]) for s in llm]
    assert usage == [(120, 21), (160, 22), (200, 9)]
    assert sum(a + b for a, b in usage) == result.cost["usage_including_cached_inference"]["scripted-model"]["total_tokens"]
    assert llm[0].attributes[k.AG2_COST] == pytest.approx(120 * 1e-6 + 21 * 2e-6)
    assert llm[0].attributes[k.AG2_CACHE_HIT] is False
    assert list(llm[0].attributes[k.RESPONSE_FINISH_REASONS]) == ["tool_calls"]

    tools = [s for s in spans if s.attributes.get(k.OPERATION_NAME) == k.OP_TOOL]
    assert [t.attributes[k.TOOL_CALL_ID] for t in tools] == ["call-1", "call-2"]
    assert tools[0].attributes[k.TOOL_NAME] == "calculator"
    assert tools[0].attributes[k.TOOL_TYPE] == "function"
    assert json.loads(tools[0].attributes[k.TOOL_CALL_ARGUMENTS]) == {"a": 232, "b": 32, "operator": "-"}
    assert tools[0].attributes[k.TOOL_CALL_RESULT] == "200"
    assert tools[0].status.status_code is StatusCode.UNSET

    # content: the model call's input in the GenAI shape, the tool call in the output, the instructions apart
    output = json.loads(llm[0].attributes[k.OUTPUT_MESSAGES])
    assert output[0]["role"] == "assistant" and output[0]["finish_reason"] == "tool_calls"
    assert output[0]["parts"][-1] == {"type": "tool_call", "id": "call-1", "name": "calculator",
                                      "arguments": {"a": 232, "b": 32, "operator": "-"}}
    second_input = json.loads(llm[1].attributes[k.INPUT_MESSAGES])
    assert {"type": "tool_call_response", "id": "call-1", "response": "200"} in second_input[-1]["parts"]
    assert "helpful AI assistant" in llm[0].attributes[k.SYSTEM_INSTRUCTIONS]
    root = next(s for s in spans if s.parent is None)
    assert json.loads(root.attributes[k.INPUT_MESSAGES])[0]["parts"][0]["content"].startswith("What is")
    assert root.attributes[k.AG2_SUMMARY] == result.summary


def test_failing_tool_is_an_error_span(instrument, span_exporter):
    instrument(capture_content=True)
    script = [Step(tool_calls=[ToolCall("calculator", {"a": 1, "b": 2, "operator": "%"})]), Step(text="TERMINATE")]
    user, assistant = make_calculator_agents(script)
    user.initiate_chat(assistant, message="1 % 2", max_turns=3)
    tool = next(s for s in span_exporter.get_finished_spans() if s.name == "execute_tool calculator")
    assert tool.status.status_code is StatusCode.ERROR
    assert tool.attributes[k.ERROR_TYPE] == "ToolExecutionError"
    assert tool.attributes[k.AG2_TOOL_SUCCESS] is False
    assert "Invalid operator" in tool.attributes[k.TOOL_CALL_RESULT]


class ProviderDown(RuntimeError):
    pass


def test_llm_error_propagates_unchanged_and_marks_every_span(instrument, span_exporter):
    """The provider answers HTTP 500: the openai SDK's exception reaches the caller, and every span says so."""
    import openai

    instrument()
    user, assistant = make_calculator_agents([Step(raise_error=ProviderDown("503 from provider"))])
    with pytest.raises(openai.InternalServerError) as raised:
        user.initiate_chat(assistant, message="hi", max_turns=2)
    assert "503 from provider" in str(raised.value)

    spans = span_exporter.get_finished_spans()
    assert span_tree(spans) == ["invoke_workflow initiate_chat", "  invoke_agent assistant", "    chat scripted-model"]
    for span in spans:
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes[k.ERROR_TYPE] == "InternalServerError"
        event = next(e for e in span.events if e.name == "exception")
        assert event.attributes["exception.type"] == "openai.InternalServerError"


def test_async_chat_is_one_trace_with_llm_under_the_turn(instrument, span_exporter):
    instrument()
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)

    async def main():
        return await user.a_initiate_chat(assistant, message="compute", max_turns=6)

    asyncio.run(main())
    spans = span_exporter.get_finished_spans()
    tree = span_tree(spans)
    assert tree[0] == "invoke_workflow a_initiate_chat"
    assert tree == ["invoke_workflow a_initiate_chat"] + CALCULATOR_TREE[1:]
    assert len({s.context.trace_id for s in spans}) == 1
    assert [s.attributes[k.USAGE_INPUT_TOKENS] for s in _llm_spans(spans)] == [120, 160, 200]


def test_run_in_worker_thread_lands_under_the_users_span(instrument, span_exporter, tracer_provider):
    instrument()
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    tracer = tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("user request") as outer:
        response = user.run(assistant, message="compute", max_turns=6)
        response.process()
    spans = span_exporter.get_finished_spans()
    assert span_tree(spans) == ["user request"] + ["  " + line.replace("initiate_chat", "run") for line in CALCULATOR_TREE]
    assert {s.context.trace_id for s in spans} == {outer.get_span_context().trace_id}


def test_content_off_records_no_text(instrument, span_exporter):
    instrument(capture_content=False)
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    user.initiate_chat(assistant, message="What is MARKER-QUESTION?", max_turns=6)
    spans = span_exporter.get_finished_spans()
    assert len(spans) == len(CALCULATOR_TREE)
    dump = json.dumps([[dict(s.attributes), [dict(e.attributes) for e in s.events]] for s in spans], default=str)
    for text in ("MARKER-QUESTION", "44298", "helpful AI assistant", "operator"):
        assert text not in dump
    for key in (k.INPUT_MESSAGES, k.OUTPUT_MESSAGES, k.SYSTEM_INSTRUCTIONS, k.TOOL_CALL_ARGUMENTS, k.TOOL_CALL_RESULT):
        assert not any(key in s.attributes for s in spans)


def test_content_mode_from_environment_and_event_only(instrument, span_exporter, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "EVENT_ONLY")
    instrument(capture_content=None)
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    user.initiate_chat(assistant, message="What is MARKER-QUESTION?", max_turns=6)
    spans = span_exporter.get_finished_spans()
    assert not any(k.INPUT_MESSAGES in s.attributes for s in spans)
    root = next(s for s in spans if s.parent is None)
    content_events = [e for e in root.events if e.name == "gen_ai.content"]
    assert "MARKER-QUESTION" in content_events[0].attributes[k.INPUT_MESSAGES]


def test_secrets_in_llm_config_never_reach_spans(instrument, span_exporter):
    instrument(capture_content=True)
    llm_config = scripted_llm_config(CALCULATOR_SCRIPT, api_key=SECRET_KEY)
    entry = llm_config["config_list"][0]  # the credentials really flow: the SDK sends them to the local server
    entry["base_url"] = entry["base_url"].replace("http://", f"http://bob:{SECRET_PASSWORD}@")
    llm_config["temperature"] = 0.2
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT, llm_config=llm_config)
    user.initiate_chat(assistant, message="compute", max_turns=6)
    spans = span_exporter.get_finished_spans()
    dump = json.dumps([[s.name, dict(s.attributes), [dict(e.attributes) for e in s.events]] for s in spans], default=str)
    assert SECRET_KEY not in dump and SECRET_PASSWORD not in dump and "bob:" not in dump
    llm = _llm_spans(spans)[0]
    assert llm.attributes["gen_ai.request.temperature"] == 0.2  # request parameters are recorded, secrets are not


def test_metrics_record_tokens_and_duration(tracer_provider, span_exporter):
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    Ag2Instrumentor().instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
        user.initiate_chat(assistant, message="compute", max_turns=6)
    finally:
        Ag2Instrumentor().uninstrument()
    metrics = {m.name: m for rm in reader.get_metrics_data().resource_metrics
               for sm in rm.scope_metrics for m in sm.metrics}
    points = metrics[k.METRIC_TOKEN_USAGE].data.data_points
    by_type = {p.attributes[k.TOKEN_TYPE]: p.sum for p in points}
    assert by_type == {"input": 480, "output": 52}
    duration = metrics[k.METRIC_OPERATION_DURATION].data.data_points
    assert sum(p.count for p in duration) == 3


def test_chat_result_is_not_mutated(instrument, span_exporter):
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    plain = user.initiate_chat(assistant, message="compute", max_turns=6)
    instrument(capture_content=True)
    user2, assistant2 = make_calculator_agents(CALCULATOR_SCRIPT)
    traced = user2.initiate_chat(assistant2, message="compute", max_turns=6)
    assert traced.cost == plain.cost
    assert "total_cost" in traced.cost["usage_including_cached_inference"]
    assert [m.get("content") for m in traced.chat_history] == [m.get("content") for m in plain.chat_history]
    assert traced.summary == plain.summary


def test_instrument_is_idempotent_and_uninstrument_restores_originals(tracer_provider, span_exporter):
    from autogen import ConversableAgent
    from autogen.oai.client import OpenAIWrapper

    originals = {name: ConversableAgent.__dict__[name] for name in ("initiate_chat", "generate_reply", "execute_function")}
    original_create = OpenAIWrapper.__dict__["create"]
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)  # created BEFORE instrument(): still traced
    instrumentor = Ag2Instrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    instrumentor.instrument(tracer_provider=tracer_provider)  # twice: no double wrapping
    try:
        user.initiate_chat(assistant, message="compute", max_turns=6)
        assert span_tree(span_exporter.get_finished_spans()) == CALCULATOR_TREE
    finally:
        instrumentor.uninstrument()
    for name, original in originals.items():
        assert ConversableAgent.__dict__[name] is original
    assert OpenAIWrapper.__dict__["create"] is original_create
    import autogen.agentchat.conversable_agent as module
    import threading

    assert module.threading is threading
    span_exporter.clear()
    user2, assistant2 = make_calculator_agents(CALCULATOR_SCRIPT)
    user2.initiate_chat(assistant2, message="compute", max_turns=6)
    assert span_exporter.get_finished_spans() == ()


def test_our_failure_never_breaks_the_chat(instrument, span_exporter, monkeypatch, caplog):
    """A bug in an attribute builder is logged once and the agent goes on untraced at that point."""
    from ag2_otel.instrumentation import extract

    def broken(*args, **kwargs):
        raise RuntimeError("bug in ag2-otel")

    monkeypatch.setattr(extract, "tool_call", broken)
    instrument()
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    with caplog.at_level("WARNING", logger="ag2_otel"):
        result = user.initiate_chat(assistant, message="compute", max_turns=6)
    assert result.summary.startswith("The result is 44298")
    tree = span_tree(span_exporter.get_finished_spans())
    assert "execute_tool calculator" not in "\n".join(tree)
    assert tree.count("    chat scripted-model") == 3
    assert sum("bug in ag2-otel" in r.getMessage() for r in caplog.records) == 1


def test_server_address_comes_from_base_url_without_credentials():
    from ag2_otel.instrumentation import extract

    _, attrs = extract.llm_request(None, {"model": "m", "base_url": f"https://bob:{SECRET_PASSWORD}@llm.example.com:8443/v1",
                                          "api_key": SECRET_KEY})
    assert attrs[k.SERVER_ADDRESS] == "llm.example.com" and attrs[k.SERVER_PORT] == 8443
    assert SECRET_PASSWORD not in json.dumps(attrs) and SECRET_KEY not in json.dumps(attrs)
