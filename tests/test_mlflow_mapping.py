"""The pure mapping: finished OTel GenAI spans (made with a real SDK tracer) -> TraceRecord."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from ag2_otel import semconv as sc
from ag2_otel.mapping import mlflow_trace as m
from ag2_otel.mapping.mlflow_trace import build_trace_record

# (agent, model, input, output, cache_read) per successful chat call in build_conversation
CHAT_CALLS = [("planner", "gpt-a", 100, 20, 40), ("planner", "gpt-b", 50, 10, None), ("coder", "gpt-a", 30, 7, None)]
FAILED_CALL = ("coder", "gpt-a")  # the ERROR chat span reports no usage
CONVERSATION_ID = "chat-42"


def text_messages(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])


def build_conversation(tracer: trace.Tracer, *, context=None) -> None:
    """A workflow root, two invoke_agent children, chat spans with usage, a tool call and one failed chat call."""
    with tracer.start_as_current_span(
        "invoke_workflow team",
        context=context,
        attributes={
            sc.OPERATION_NAME: sc.OP_WORKFLOW, sc.WORKFLOW_NAME: "team", sc.CONVERSATION_ID: CONVERSATION_ID,
            sc.INPUT_MESSAGES: text_messages("user", "build it"), sc.OUTPUT_MESSAGES: text_messages("assistant", "done"),
        },
    ):
        for agent in ("planner", "coder"):
            with tracer.start_as_current_span(
                f"invoke_agent {agent}", attributes={sc.OPERATION_NAME: sc.OP_AGENT, sc.AGENT_NAME: agent}
            ):
                for who, model, inp, out, cache in CHAT_CALLS:
                    if who != agent:
                        continue
                    attrs = {
                        sc.OPERATION_NAME: sc.OP_CHAT, sc.PROVIDER_NAME: "openai", sc.REQUEST_MODEL: model,
                        sc.RESPONSE_MODEL: model, sc.USAGE_INPUT_TOKENS: inp, sc.USAGE_OUTPUT_TOKENS: out,
                        sc.AG2_COST: 0.5, sc.INPUT_MESSAGES: text_messages("user", "q"),
                        sc.OUTPUT_MESSAGES: text_messages("assistant", "a"),
                    }
                    if cache is not None:
                        attrs[sc.USAGE_CACHE_READ_INPUT_TOKENS] = cache
                    with tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attrs):
                        pass
                if agent == "coder":
                    with tracer.start_as_current_span(
                        "execute_tool add",
                        attributes={
                            sc.OPERATION_NAME: sc.OP_TOOL, sc.TOOL_NAME: "add",
                            sc.TOOL_CALL_ARGUMENTS: json.dumps({"a": 1, "b": 2}), sc.TOOL_CALL_RESULT: "3",
                        },
                    ):
                        pass
                    with tracer.start_as_current_span(
                        f"chat {FAILED_CALL[1]}", kind=SpanKind.CLIENT,
                        attributes={sc.OPERATION_NAME: sc.OP_CHAT, sc.REQUEST_MODEL: FAILED_CALL[1]},
                        record_exception=False, set_status_on_exception=False,
                    ) as span:
                        error = RuntimeError("rate limited")
                        span.record_exception(error)
                        span.set_status(Status(StatusCode.ERROR, "rate limited"))
                        span.set_attribute(sc.ERROR_TYPE, "RuntimeError")


def expected_totals() -> dict[str, int]:
    return {
        "input_tokens": sum(c[2] for c in CHAT_CALLS),
        "output_tokens": sum(c[3] for c in CHAT_CALLS),
        "total_tokens": sum(c[2] + c[3] for c in CHAT_CALLS),
    }


def expected_breakdown(index: int) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for call in CHAT_CALLS:
        entry = out.setdefault(call[index], {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0})
        entry["input_tokens"] += call[2]
        entry["output_tokens"] += call[3]
        entry["total_tokens"] += call[2] + call[3]
    return out


def finished_spans(build, **kwargs):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    build(provider.get_tracer("test"), **kwargs)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def test_tool_result_keeps_its_type():
    """A string result stays a string; a structured one (marked json by the instrumentation) is parsed back."""
    def build(tracer):
        with tracer.start_as_current_span("invoke_workflow t", attributes={sc.OPERATION_NAME: sc.OP_WORKFLOW}):
            tracer.start_span("execute_tool a", attributes={sc.OPERATION_NAME: sc.OP_TOOL,
                                                            sc.TOOL_CALL_RESULT: '{"x": 1}'}).end()
            tracer.start_span("execute_tool b", attributes={sc.OPERATION_NAME: sc.OP_TOOL, sc.TOOL_CALL_RESULT: '{"x": 1}',
                                                            sc.AG2_TOOL_RESULT_ENCODING: "json"}).end()

    outputs = {r.name: r.outputs for r in build_trace_record(finished_spans(build)).spans}
    assert outputs["execute_tool a"] == '{"x": 1}' and outputs["execute_tool b"] == {"x": 1}


def test_conversation_record():
    spans = finished_spans(build_conversation)
    record = build_trace_record(spans)
    assert record is not None and record.complete
    by_name = {}
    for r in record.spans:
        by_name.setdefault(r.name, []).append(r)
    root = record.root
    assert root.name == "invoke_workflow team" and root.parent_id is None and root.span_type == m.CHAIN
    assert [r.span_type for r in by_name["invoke_agent planner"]] == [m.AGENT]
    assert by_name["execute_tool add"][0].span_type == m.TOOL
    # arguments are the model's JSON; the result is the string AG2 produced and stays one (MLflow shows "3", not 3)
    assert by_name["execute_tool add"][0].inputs == {"a": 1, "b": 2} and by_name["execute_tool add"][0].outputs == "3"
    # parent-first, and every parent id points at an earlier span
    seen = set()
    for r in record.spans:
        assert r.parent_id is None or r.parent_id in seen
        seen.add(r.span_id)
    assert len(record.spans) == len(spans)
    # usage only on model calls with usage; the failed one has none
    with_usage = [r for r in record.spans if m.MLFLOW_CHAT_USAGE in r.attributes]
    assert all(r.span_type == m.CHAT_MODEL for r in with_usage) and len(with_usage) == len(CHAT_CALLS)
    assert with_usage[0].attributes[m.MLFLOW_CHAT_USAGE] == {
        "input_tokens": 100, "output_tokens": 20, "total_tokens": 120, "cache_read_input_tokens": 40}
    assert with_usage[0].attributes[m.MLFLOW_LLM_MODEL] == "gpt-a"
    assert with_usage[0].attributes[m.MLFLOW_LLM_PROVIDER] == "openai"
    # originals kept
    assert with_usage[0].attributes[sc.USAGE_INPUT_TOKENS] == 100
    totals = record.usage.to_mlflow()
    assert {k: totals[k] for k in ("input_tokens", "output_tokens", "total_tokens")} == expected_totals()
    assert totals["cache_read_input_tokens"] == 40
    assert record.usage.cost == pytest.approx(0.5 * len(CHAT_CALLS))
    assert {k: {f: v.to_dict()[f] for f in ("input_tokens", "output_tokens", "total_tokens")}
            for k, v in record.usage_by_agent.items()} == expected_breakdown(0)
    assert {k: {f: v.to_dict()[f] for f in ("input_tokens", "output_tokens", "total_tokens")}
            for k, v in record.usage_by_model.items()} == expected_breakdown(1)
    assert json.loads(record.metadata[m.META_USAGE_BY_AGENT])["coder"]["calls"] == 1
    failed = [r for r in record.spans if r.status == "ERROR"]
    assert len(failed) == 1 and failed[0].status_message == "rate limited"
    assert failed[0].events[0].name == "exception"
    assert failed[0].events[0].attributes["exception.type"] == "RuntimeError"
    assert record.session_id == CONVERSATION_ID and record.metadata[m.MLFLOW_TRACE_SESSION] == CONVERSATION_ID
    assert record.tags[m.TAG_OTEL_TRACE_ID] == format(spans[0].context.trace_id, "032x")
    assert record.request_preview == "build it" and record.response_preview == "done"
    # the root in the chat shape the store derives previews from
    assert root.inputs == {"messages": [{"role": "user", "content": "build it"}]}
    assert root.outputs == {"messages": [{"role": "assistant", "content": "done"}]}


TOOL_CALL = {"type": "tool_call", "id": "c1", "name": "add", "arguments": {"a": 1}}


def test_root_chat_shape_keeps_everything():
    """Text-only GenAI messages become {role, content}; a message with other parts keeps them; OpenAI-shaped messages
    and other values are not touched; a string becomes one message of the given role."""
    genai = [{"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
             {"role": "user", "parts": [{"type": "text", "content": "a"}, {"type": "text", "content": "b"}]},
             {"role": "assistant", "parts": [TOOL_CALL], "finish_reason": "tool_call"}]
    assert m.chat_messages(genai, "user") == {"messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "a\nb"},
        {"role": "assistant", "finish_reason": "tool_call", "content": "", "parts": [TOOL_CALL]}]}
    openai = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": []}]
    assert m.chat_messages(openai, "user") == {"messages": openai}
    assert m.chat_messages("the summary", "assistant") == {"messages": [{"role": "assistant", "content": "the summary"}]}
    for other in (None, {"a": 1}, [], [1, 2], 3):
        assert m.chat_messages(other, "user") == other


ROOT_VALUES = [
    [{"role": "system", "parts": [{"type": "text", "content": "sys"}]},
     {"role": "user", "parts": [{"type": "text", "content": "first"}]}],
    [{"role": "user", "parts": [{"type": "text", "content": "x" * 1500}]}],
    [{"role": "assistant", "parts": [TOOL_CALL]}],
    [{"role": "user", "content": [{"type": "text", "text": "openai parts"}]}, {"role": "assistant", "content": "ok"}],
    "a plain summary",
    {"speakers": ["a", "b"]},
    [{"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "3"}]}],
]


@pytest.mark.parametrize("value", ROOT_VALUES)
def test_previews_follow_mlflows_own_rule(value):
    """Our previews (written by start_trace where a store needs it) equal what MLflow's store derives from the root
    span that log_spans stores (MLflow's own function, on the span dict as the store sees it): one trace either way."""
    from mlflow.entities import Span
    from mlflow.tracing.otel.translation import translate_span_when_storing
    from mlflow.tracing.utils.truncation import _get_truncated_preview

    from ag2_otel.mapping.mlflow_wire import span_dicts

    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    encoded = value if isinstance(value, str) else json.dumps(value)
    with provider.get_tracer("t").start_as_current_span("invoke_workflow w", attributes={
            sc.OPERATION_NAME: sc.OP_WORKFLOW, sc.INPUT_MESSAGES: encoded, sc.OUTPUT_MESSAGES: encoded}):
        pass
    record = build_trace_record(exporter.get_finished_spans())
    root = translate_span_when_storing(Span.from_dict(span_dicts(record, "tr-" + "1" * 32)[0]))
    assert record.request_preview == _get_truncated_preview(root["attributes"]["mlflow.spanInputs"], role="user")
    assert record.response_preview == _get_truncated_preview(root["attributes"]["mlflow.spanOutputs"], role="assistant")


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({sc.OPERATION_NAME: sc.OP_WORKFLOW}, m.CHAIN),
        ({sc.OPERATION_NAME: "conversation", sc.AG2_SPAN_TYPE: "conversation"}, m.CHAIN),
        ({sc.OPERATION_NAME: "initiate_chats", sc.AG2_SPAN_TYPE: "multi_conversation"}, m.CHAIN),
        ({sc.OPERATION_NAME: sc.OP_AGENT}, m.AGENT),
        ({sc.OPERATION_NAME: sc.OP_CHAT}, m.CHAT_MODEL),
        ({sc.OPERATION_NAME: sc.OP_TEXT_COMPLETION}, m.CHAT_MODEL),
        ({sc.OPERATION_NAME: sc.OP_GENERATE_CONTENT}, m.CHAT_MODEL),
        ({sc.OPERATION_NAME: sc.OP_TOOL, sc.TRANSFER_MODE: "pass_control"}, m.TOOL),
        ({sc.OPERATION_NAME: sc.OP_TOOL, sc.AG2_SPAN_TYPE: sc.SPAN_TYPE_CODE_EXECUTION}, m.TOOL),
        ({sc.OPERATION_NAME: "execute_code", sc.AG2_SPAN_TYPE: "code_execution"}, m.TOOL),
        ({sc.OPERATION_NAME: sc.OP_EMBEDDINGS}, m.EMBEDDING),
        ({sc.OPERATION_NAME: sc.OP_RETRIEVAL}, m.RETRIEVER),
        ({sc.AG2_SPAN_TYPE: sc.SPAN_TYPE_SPEAKER_SELECTION}, m.CHAIN),
        ({sc.AG2_SPAN_TYPE: sc.SPAN_TYPE_HUMAN_INPUT, sc.OPERATION_NAME: "await_human_input"}, m.UNKNOWN),
        ({}, m.UNKNOWN),
    ],
)
def test_span_types(attrs, expected):
    assert m.span_type_of(attrs) == expected


def test_roll_up_usage_is_not_counted_and_blocks_store_translation():
    """AG2's own conversation span carries the summed usage; only the chat spans count."""

    def build(tracer):
        with tracer.start_as_current_span("conversation a", attributes={
            sc.OPERATION_NAME: "conversation", sc.USAGE_INPUT_TOKENS: 999, sc.USAGE_OUTPUT_TOKENS: 999,
        }):
            with tracer.start_as_current_span("chat m", attributes={
                sc.OPERATION_NAME: sc.OP_CHAT, sc.USAGE_PROMPT_TOKENS_DEPRECATED: 3,
                sc.USAGE_COMPLETION_TOKENS_DEPRECATED: 4, sc.SYSTEM_DEPRECATED: "openai", sc.AGENT_NAME: "a",
                sc.AG2_NATIVE_COST: 0.25,
            }):
                pass

    record = build_trace_record(finished_spans(build))
    assert record.usage.to_mlflow() == {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    assert record.usage.cost == 0.25
    assert record.root.attributes[m.MLFLOW_CHAT_USAGE] is None
    assert record.spans[1].attributes[m.MLFLOW_LLM_PROVIDER] == "openai"
    assert list(record.usage_by_agent) == ["a"] and list(record.usage_by_model) == [m.UNKNOWN_KEY]


def test_nested_model_call_counted_once():
    """A provider instrumentation's chat span under a framework chat span: MLflow's rule, the outer one counts."""

    def build(tracer):
        with tracer.start_as_current_span("invoke_agent a", attributes={sc.OPERATION_NAME: sc.OP_AGENT,
                                                                        sc.AGENT_NAME: "a"}):
            with tracer.start_as_current_span("chat m", attributes={sc.OPERATION_NAME: sc.OP_CHAT,
                                                                    sc.USAGE_INPUT_TOKENS: 5, sc.USAGE_OUTPUT_TOKENS: 1}):
                with tracer.start_as_current_span("chat m", attributes={
                        sc.OPERATION_NAME: sc.OP_CHAT, sc.USAGE_INPUT_TOKENS: 5, sc.USAGE_OUTPUT_TOKENS: 1}):
                    pass

    record = build_trace_record(finished_spans(build))
    assert record.usage.total_tokens == 6 and record.usage_by_agent["a"].calls == 1


def test_missing_parents_hang_under_root_and_bad_content_is_kept_raw():
    def build(tracer):
        with tracer.start_as_current_span("invoke_workflow w", attributes={sc.OPERATION_NAME: sc.OP_WORKFLOW}) as root:
            ghost = SpanContext(root.get_span_context().trace_id, 0xABC, is_remote=False,
                                trace_flags=TraceFlags(TraceFlags.SAMPLED))
            ctx = trace.set_span_in_context(NonRecordingSpan(ghost))
            with tracer.start_as_current_span("execute_tool t", context=ctx, attributes={
                sc.OPERATION_NAME: sc.OP_TOOL, sc.TOOL_CALL_ARGUMENTS: '{"a": 1, "b": [tr…(truncated)',
                sc.TOOL_CALL_RESULT: "plain text"}):
                pass

    record = build_trace_record(finished_spans(build))
    tool = record.spans[1]
    assert tool.parent_id == record.root.span_id
    assert tool.inputs == '{"a": 1, "b": [tr…(truncated)' and tool.outputs == "plain text"


def test_unended_root_is_marked_incomplete():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    root = tracer.start_span("invoke_workflow w", attributes={sc.OPERATION_NAME: sc.OP_WORKFLOW})
    with tracer.start_as_current_span("chat m", context=trace.set_span_in_context(root),
                                      attributes={sc.OPERATION_NAME: sc.OP_CHAT, sc.USAGE_INPUT_TOKENS: 2}):
        pass
    with tracer.start_as_current_span("chat m", context=trace.set_span_in_context(root),
                                      attributes={sc.OPERATION_NAME: sc.OP_CHAT, sc.USAGE_INPUT_TOKENS: 3}):
        pass
    first, second = exporter.get_finished_spans()
    record = build_trace_record([first, second, root], root_span_id=root.get_span_context().span_id, complete=False)
    assert not record.complete and record.tags[m.TAG_INCOMPLETE] == "true"
    assert record.root.end_time_ns == second.end_time and record.usage.input_tokens == 5
    assert record.root.name == "invoke_workflow w" and not record.root.synthetic
    # the root lost and not named: a synthetic root holds both orphans, and the trace is marked incomplete
    record = build_trace_record([first, second])
    assert record.root.synthetic and [r.parent_id for r in record.spans[1:]] == [record.root.span_id] * 2
    assert record.root.start_time_ns == first.start_time and record.root.end_time_ns == second.end_time
    assert not record.complete and record.usage.input_tokens == 5
    provider.shutdown()


def test_empty_input():
    assert build_trace_record([]) is None


# --- property-based: arbitrary trees and attribute values ----------------------------------------------------------
OPS = [sc.OP_WORKFLOW, sc.OP_AGENT, sc.OP_CHAT, sc.OP_TEXT_COMPLETION, sc.OP_TOOL, sc.OP_EMBEDDINGS, "conversation",
       "speaker_selection", "weird", None]
token_values = st.one_of(
    st.none(), st.integers(-5, 10_000), st.booleans(), st.sampled_from(["12", "abc", "", " 7 ", "-3", "1e3", "٣"]),
    st.floats(allow_nan=True, allow_infinity=True),
)
junk = st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.booleans(),
                 st.lists(st.text(max_size=5), max_size=3))


def oracle_count(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        return int(value) if value == value and value not in (float("inf"), float("-inf")) and value >= 0 \
            and value.is_integer() else None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return None


span_specs = st.lists(
    st.tuples(
        st.integers(0, 1000),  # parent choice (mod index; 0 => attach to an earlier span or be a top)
        st.sampled_from(OPS),
        token_values, token_values, token_values,
        st.dictionaries(st.sampled_from([sc.INPUT_MESSAGES, sc.OUTPUT_MESSAGES, sc.TOOL_CALL_ARGUMENTS,
                                         sc.TOOL_CALL_RESULT, sc.CONVERSATION_ID, sc.AGENT_NAME, sc.REQUEST_MODEL,
                                         sc.AG2_COST, sc.SYSTEM_INSTRUCTIONS, "x.other"]), junk, max_size=4),
        st.booleans(),  # error
    ),
    min_size=1, max_size=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=span_specs, drop=st.sets(st.integers(0, 24), max_size=5))
def test_mapping_never_raises_and_totals_equal_the_sum(specs, drop):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("prop")
    live = []
    for i, (parent_choice, op, inp, out, dep_inp, extra, error) in enumerate(specs):
        attrs = {k: v for k, v in extra.items() if v is not None}
        if op is not None:
            attrs[sc.OPERATION_NAME] = op
        for key, value in ((sc.USAGE_INPUT_TOKENS, inp), (sc.USAGE_OUTPUT_TOKENS, out),
                           (sc.USAGE_PROMPT_TOKENS_DEPRECATED, dep_inp)):
            if value is not None:
                attrs[key] = value
        parent = live[parent_choice % i] if i and parent_choice % 3 else (live[0] if i else None)
        span = tracer.start_span(f"s{i}", context=trace.set_span_in_context(parent) if parent else None,
                                 attributes=attrs)
        if error:
            span.record_exception(ValueError("boom"))
            span.set_status(Status(StatusCode.ERROR, "boom"))
        live.append(span)
    for span in reversed(live):
        span.end()
    spans = [s for k, s in enumerate(sorted(exporter.get_finished_spans(), key=lambda s: s.name)) if k not in drop]
    provider.shutdown()
    record = build_trace_record(spans)
    if not spans:
        assert record is None
        return
    # structure: every span once, parent-first, exactly one root
    real = [r for r in record.spans if not r.synthetic]
    assert len(real) == len(spans)
    assert sum(r.parent_id is None for r in record.spans) == 1 and record.spans[0].parent_id is None
    seen = set()
    for r in record.spans:
        assert r.parent_id is None or r.parent_id in seen
        seen.add(r.span_id)
    # oracle: model-call spans with usage, not under another model-call span with usage
    by_id = {s.context.span_id: s for s in spans}
    parent_of = {r.span_id: r.parent_id for r in record.spans}
    id_of = {format(s.context.span_id, "016x"): s for s in spans}

    def usage(span):
        a = span.attributes
        if a.get(sc.OPERATION_NAME) not in m.MODEL_OPS:
            return None
        i = oracle_count(a.get(sc.USAGE_INPUT_TOKENS))
        if i is None:
            i = oracle_count(a.get(sc.USAGE_PROMPT_TOKENS_DEPRECATED))
        o = oracle_count(a.get(sc.USAGE_OUTPUT_TOKENS))
        return None if i is None and o is None else (i or 0, o or 0)

    want_in = want_out = 0
    for hex_id, span in id_of.items():
        u = usage(span)
        if u is None:
            continue
        p, hidden = parent_of[hex_id], False
        while p is not None:
            if p in id_of and usage(id_of[p]) is not None:
                hidden = True
            p = parent_of.get(p)
        if not hidden:
            want_in += u[0]
            want_out += u[1]
    assert (record.usage.input_tokens, record.usage.output_tokens) == (want_in, want_out)
    assert sum(u.total_tokens for u in record.usage_by_agent.values()) == want_in + want_out
    assert sum(u.total_tokens for u in record.usage_by_model.values()) == want_in + want_out
    for key in (m.META_USAGE_TOTAL, m.META_USAGE_BY_AGENT, m.META_USAGE_BY_MODEL):
        json.loads(record.metadata[key])
        assert len(record.metadata[key]) <= m.MAX_METADATA_CHARS
    assert by_id  # used


def test_chat_span_inputs_are_one_message_list_with_tools():
    """MLflow's trace UI shows a conversation for a top-level list of {role, parts} messages: the instructions come
    first as a system message; the offered tools go to mlflow.chat.tools in the OpenAI shape."""
    tools = [{"type": "function", "name": "calculator", "description": "A simple calculator",
              "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}]

    def build(tracer):
        with tracer.start_as_current_span("invoke_workflow t", attributes={sc.OPERATION_NAME: sc.OP_WORKFLOW}):
            tracer.start_span("chat m", attributes={
                sc.OPERATION_NAME: sc.OP_CHAT, sc.REQUEST_MODEL: "m",
                sc.SYSTEM_INSTRUCTIONS: json.dumps([{"type": "text", "content": "Be terse."}]),
                sc.INPUT_MESSAGES: text_messages("user", "2+2?"),
                sc.TOOL_DEFINITIONS: json.dumps(tools)}).end()

    chat = next(r for r in build_trace_record(finished_spans(build)).spans if r.name == "chat m")
    assert chat.inputs == [{"role": "system", "parts": [{"type": "text", "content": "Be terse."}]},
                           *json.loads(text_messages("user", "2+2?"))]
    assert chat.attributes[m.MLFLOW_CHAT_TOOLS] == [{"type": "function", "function": {
        "name": "calculator", "description": "A simple calculator", "parameters": tools[0]["parameters"]}}]
