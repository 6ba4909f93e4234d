"""Our GenAI content schemas (tests/genai_schema): they accept the shapes the conventions define and reject the
malformed ones, and the checking exporter behind the ``span_exporter`` fixture reports what it finds."""

from __future__ import annotations

import json
from typing import Annotated

import jsonschema
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from ag2_otel.instrumentation import content as rendering
from tests.genai_schema import (
    INPUT_MESSAGES,
    OUTPUT_MESSAGES,
    SYSTEM_INSTRUCTIONS,
    TOOL_DEFINITIONS,
    VALIDATORS,
    SchemaCheckedSpanExporter,
    content_errors,
    span_content_errors,
    validate_span_content,
)


def errors(key, document):
    return content_errors(key, json.dumps(document, ensure_ascii=False))


def text(content):
    return {"type": "text", "content": content}


def user(*parts, **extra):
    return {"role": "user", "parts": list(parts), **extra}


def answer(*parts, finish_reason="stop", **extra):
    return {"role": "assistant", "parts": list(parts), "finish_reason": finish_reason, **extra}


def test_the_schemas_are_valid_draft_2020_12():
    for validator in VALIDATORS.values():
        jsonschema.Draft202012Validator.check_schema(validator.schema)
        assert validator.schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert "@" in validator.schema["$comment"]  # cites the upstream commit read


# --- input messages -------------------------------------------------------------------------------------------------

VALID_INPUT = [
    [],
    [{"role": "system", "parts": [text("You are a calculator.")]}, user(text("What is 2+2?"), name="user_proxy")],
    [user(text(""))],  # empty text is still text
    [{"role": "assistant", "parts": [
        {"type": "tool_call", "id": "call_1", "name": "calculator", "arguments": {"a": 2, "b": 2, "op": "+"}},
        {"type": "tool_call", "id": None, "name": "calculator", "arguments": "not json {"},
        {"type": "tool_call", "name": "no_id_no_arguments"},
    ]}],
    [{"role": "tool", "parts": [
        {"type": "tool_call_response", "id": "call_1", "response": "4"},
        {"type": "tool_call_response", "id": "call_2", "response": {"value": 4}},
        {"type": "tool_call_response", "id": None, "response": None},
        {"type": "tool_call_response", "response": [1, 2]},
    ]}],
    [user(
        {"type": "blob", "modality": "image", "mime_type": "image/png", "content": "iVBORw0KGgo="},
        {"type": "file", "modality": "document", "file_id": "file-abc"},
        {"type": "uri", "modality": "image", "uri": "https://example.com/cat.png", "mime_type": None},
        {"type": "blob", "modality": "audio", "content": "AAAA", "transcript": "hello"},
        {"type": "uri", "modality": "some-new-modality", "uri": "gs://bucket/object"},  # modality: enum or any string
    )],
    [{"role": "assistant", "parts": [
        {"type": "reasoning", "content": "2 and 2 make 4"},
        {"type": "compaction", "id": "cmp_1", "content": None},
        {"type": "server_tool_call", "id": "srv_1", "name": "web_search",
         "server_tool_call": {"type": "web_search", "query": "otel"}},
        {"type": "server_tool_call_response", "id": "srv_1",
         "server_tool_call_response": {"type": "web_search", "results": []}},
        {"type": "ag2.custom", "payload": {"anything": [1, 2]}},  # an unknown type is a generic part
    ]}],
    [{"role": "function_result_from_some_framework", "parts": [text("roles: any non-empty string")]}],
    [user(text("extra fields are allowed"), turn=3)],
    [user(text("a"), text("b"), "…[12 more items]")],  # the renderer's list-overflow marker, last in parts
    [user(text("a")), "…[159 more items]"],  # ... and last in the message list
    [user(text("cut…[truncated 400 chars]"))],  # a truncated string is still a string
]


@pytest.mark.parametrize("document", VALID_INPUT)
def test_input_messages_accept(document):
    assert errors(INPUT_MESSAGES, document) == []


INVALID_INPUT = [
    # the bug of issue #10: the whole pydantic ChatCompletionMessage dumped into a text part
    ([answer({"type": "text", "content": {"content": None, "refusal": None, "role": "assistant",
                                          "tool_calls": [{"id": "c", "function": {"name": "f"}}]}})],
     "$[0].parts[0].content: {'content': None"),
    ([user(text(None))], "$[0].parts[0].content: None is not of type 'string'"),
    ([user(text(42))], "$[0].parts[0].content: 42 is not of type 'string'"),
    ([user(text(["a", "b"]))], "$[0].parts[0].content: ['a', 'b'] is not of type 'string'"),
    ([user({"type": "text"})], "$[0].parts[0]: 'content' is a required property"),
    ([user({"content": "no type"})], "$[0].parts[0]: 'type' is a required property"),
    ([user({"type": 7, "content": "x"})], "$[0].parts[0].type: 7 is not of type 'string'"),
    ([user("a bare string part")], "$[0].parts[0]: 'a bare string part' is not of type 'object'"),
    ([{"role": "assistant", "parts": [{"type": "tool_call", "id": "c", "arguments": {}}]}],
     "$[0].parts[0]: 'name' is a required property"),
    ([{"role": "assistant", "parts": [{"type": "tool_call", "id": "c", "name": None}]}],
     "$[0].parts[0].name: None is not of type 'string'"),
    ([{"role": "assistant", "parts": [{"type": "tool_call", "id": 5, "name": "f"}]}],
     "$[0].parts[0].id: 5 is not of type 'string', 'null'"),
    ([{"role": "tool", "parts": [{"type": "tool_call_response", "id": "c", "result": "4"}]}],  # the old field name
     "$[0].parts[0]: 'response' is a required property"),
    ([user({"type": "blob", "content": "AAAA"})], "$[0].parts[0]: 'modality' is a required property"),
    ([user({"type": "blob", "modality": "image", "content": 5})],
     "$[0].parts[0].content: 5 is not of type 'string'"),
    ([user({"type": "uri", "modality": "image", "uri": None})], "$[0].parts[0].uri: None is not of type 'string'"),
    ([user({"type": "file", "modality": "document"})], "$[0].parts[0]: 'file_id' is a required property"),
    ([{"role": "assistant", "parts": [{"type": "reasoning", "content": {"steps": []}}]}],
     "$[0].parts[0].content: {'steps': []} is not of type 'string'"),
    ([{"role": "assistant", "parts": [{"type": "server_tool_call", "name": "web_search"}]}],
     "$[0].parts[0]: 'server_tool_call' is a required property"),
    ([{"parts": [text("x")]}], "$[0]: 'role' is a required property"),
    ([{"role": "", "parts": [text("x")]}], "$[0].role: '' should be non-empty"),
    ([{"role": None, "parts": [text("x")]}], "$[0].role: None is not of type 'string'"),
    ([{"role": "user"}], "$[0]: 'parts' is a required property"),
    ([{"role": "user", "content": "the OpenAI shape, not the GenAI one"}], "$[0]: 'parts' is a required property"),
    ([{"role": "user", "parts": "…[truncated]"}], "$[0].parts: '…[truncated]' is not of type 'array'"),
    ([{"role": "user", "parts": [text("x")], "name": 3}], "$[0].name: 3 is not of type 'string', 'null'"),
    (["…[truncated]"], "$[0]: '…[truncated]' is not of type 'object'"),
    (["hello"], "$[0]: 'hello' is not of type 'object'"),
    ({"role": "user", "parts": []}, "$: {'role': 'user', 'parts': []} is not of type 'array'"),
    # a message the budget cut mid-object (what to_json leaves when the budget runs out inside a message)
    ([user(text("x")), {"role": "user", "pa…[truncated 3 chars]": "…[truncated]"}],
     "$[1]: 'parts' is a required property"),
    ([user(text("x")), {"role": "user", "…": "[1 more items]"}], "$[1]: 'parts' is a required property"),
    # the overflow marker: only that exact string, once, last
    (["…[3 more items]", user(text("x"))], "$[0]: overflow marker '…[3 more items]' is not the last item"),
    ([user(text("x")), "…[3 more items]", "…[3 more items]"],
     "$: Too many items match the given schema (expected at most 1)"),
    ([user(text("x")), "…[many more items]"], "$[1]: '…[many more items]' is not of type 'object'"),
    ([user("…[2 more items]", text("x"))], "$[0].parts[0]: overflow marker '…[2 more items]' is not the last item"),
]


@pytest.mark.parametrize("document, expected", INVALID_INPUT)
def test_input_messages_reject(document, expected):
    found = errors(INPUT_MESSAGES, document)
    assert any(e.startswith(expected) for e in found), found


def test_not_json_or_not_a_string_is_rejected():
    assert content_errors(INPUT_MESSAGES, "<redacted>")[0].startswith("not JSON")
    assert content_errors(INPUT_MESSAGES, ("[]",))[0].startswith("not a JSON string but tuple")
    assert content_errors(INPUT_MESSAGES, "[]") == []
    assert content_errors("gen_ai.tool.call.arguments", "<not content>") == []  # only the four content attributes


# --- output messages ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("document", [
    [answer(text("Paris"))],
    [answer(text("Paris"), name="assistant")],
    [answer({"type": "tool_call", "id": "call_1", "name": "calculator", "arguments": {"a": 1}},
            {"type": "tool_call", "id": "call_2", "name": "calculator", "arguments": {"a": 2}},
            finish_reason="tool_call")],
    [answer(text("a"), finish_reason="length"), answer(text("b"), finish_reason="tool_calls")],  # n>1; any string
    [answer({"type": "reasoning", "content": "thinking"}, text("4"))],
    [answer(finish_reason="content_filter")],  # a refusal with no content: no parts
    [answer(text("a")), "…[3 more items]"],
])
def test_output_messages_accept(document):
    assert errors(OUTPUT_MESSAGES, document) == []


@pytest.mark.parametrize("document, expected", [
    ([answer({"type": "text", "content": {"role": "assistant", "content": "Paris"}})],
     "$[0].parts[0].content: {'role': 'assistant', 'content': 'Paris'} is not of type 'string'"),
    ([{"role": "assistant", "parts": [text("Paris")]}], "$[0]: 'finish_reason' is a required property"),
    ([answer(text("Paris"), finish_reason=None)], "$[0].finish_reason: None is not of type 'string'"),
    ([answer(text("Paris"), finish_reason="")], "$[0].finish_reason: '' should be non-empty"),
    ([answer(text("Paris"), finish_reason=["stop"])], "$[0].finish_reason: ['stop'] is not of type 'string'"),
    ([{"role": "assistant", "finish_reason": "stop"}], "$[0]: 'parts' is a required property"),
    ([answer({"type": "tool_call", "id": "c", "arguments": "{}"})], "$[0].parts[0]: 'name' is a required property"),
])
def test_output_messages_reject(document, expected):
    found = errors(OUTPUT_MESSAGES, document)
    assert any(e.startswith(expected) for e in found), found


# --- system instructions --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("document", [
    [text("You are a helpful assistant.")],
    [text("one"), text("two")],
    [{"type": "ag2.unknown", "anything": 1}],  # UnknownSystemInstructionPart: any other type
    [],
])
def test_system_instructions_accept(document):
    assert errors(SYSTEM_INSTRUCTIONS, document) == []


@pytest.mark.parametrize("document, expected", [
    ([text({"content": "dumped object"})], "$[0].content: {'content': 'dumped object'} is not of type 'string'"),
    ([text(None)], "$[0].content: None is not of type 'string'"),
    ([{"type": "text"}], "$[0]: 'content' is a required property"),
    (["You are a helpful assistant."], "$[0]: 'You are a helpful assistant.' is not of type 'object'"),
    ([{"role": "system", "parts": [text("x")]}], "$[0]: 'type' is a required property"),  # a message, not parts
    ("You are a helpful assistant.", "$: 'You are a helpful assistant.' is not of type 'array'"),
])
def test_system_instructions_reject(document, expected):
    found = errors(SYSTEM_INSTRUCTIONS, document)
    assert any(e.startswith(expected) for e in found), found


# --- tool definitions -----------------------------------------------------------------------------------------------

CALCULATOR_PARAMETERS = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "op": {"type": "string", "enum": ["+", "-"]}},
    "required": ["a", "b", "op"],
}


@pytest.mark.parametrize("document", [
    [{"type": "function", "name": "calculator", "description": "A simple calculator",
      "parameters": CALCULATOR_PARAMETERS}],
    [{"type": "function", "name": "calculator"}],  # description and parameters not captured
    [{"type": "function", "name": "calculator", "description": None, "parameters": None}],
    [{"type": "custom", "name": "code_interpreter", "format": {"anything": True}}],  # a generic tool definition
    [{"type": "function", "name": "f", "parameters": CALCULATOR_PARAMETERS}, "…[1 more items]"],
])
def test_tool_definitions_accept(document):
    assert errors(TOOL_DEFINITIONS, document) == []


@pytest.mark.parametrize("document, expected", [
    # the OpenAI request `tools` list as AG2 sends it: the name is nested under "function"
    ([{"type": "function", "function": {"name": "calculator", "description": "A simple calculator",
                                         "parameters": CALCULATOR_PARAMETERS}}],
     "$[0]: 'name' is a required property"),
    ([{"name": "calculator"}], "$[0]: 'type' is a required property"),
    ([{"type": "function", "name": ""}], "$[0].name: '' should be non-empty"),
    ([{"type": "function", "name": "f", "description": 3}], "$[0].description: 3 is not of type 'string', 'null'"),
    ([{"type": "function", "name": "f", "parameters": {"type": "objekt"}}], "$[0].parameters.type: 'objekt'"),
    ([{"type": "function", "name": "f", "parameters": "not a schema"}], "$[0].parameters: 'not a schema'"),
])
def test_tool_definitions_reject(document, expected):
    found = errors(TOOL_DEFINITIONS, document)
    assert any(e.startswith(expected) for e in found), found


# --- spans, events and the checking exporter ----------------------------------------------------------------------

BAD_OUTPUT = json.dumps([answer(text({"role": "assistant"}))])
GOOD_INPUT = json.dumps([user(text("hi"))])


def test_span_and_event_content_are_checked():
    exporter = SchemaCheckedSpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("chat good") as span:
        span.set_attribute(INPUT_MESSAGES, GOOD_INPUT)
        span.add_event("gen_ai.content", {INPUT_MESSAGES: GOOD_INPUT})
    with tracer.start_as_current_span("chat bad on span") as span:
        span.set_attribute(OUTPUT_MESSAGES, BAD_OUTPUT)
    with tracer.start_as_current_span("chat bad in event") as span:
        span.set_attribute(INPUT_MESSAGES, GOOD_INPUT)
        span.add_event("gen_ai.content", {SYSTEM_INSTRUCTIONS: "not json"})
    with tracer.start_as_current_span("no content") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
    provider.shutdown()

    good, bad_span, bad_event, plain = exporter.get_finished_spans()
    assert span_content_errors(good) == [] and span_content_errors(plain) == []
    validate_span_content(good)
    assert span_content_errors(bad_span) == [
        "span 'chat bad on span' attributes gen_ai.output.messages $[0].parts[0].content: "
        "{'role': 'assistant'} is not of type 'string'"]
    with pytest.raises(AssertionError, match="chat bad on span"):
        validate_span_content(bad_span)
    (problem,) = span_content_errors(bad_event)
    assert problem.startswith("span 'chat bad in event' event 'gen_ai.content' gen_ai.system_instructions not JSON")

    # the exporter saw the same, stored every span unchanged, and keeps its findings across clear()
    assert exporter.content_checked == 3
    assert len(exporter.content_problems) == 2
    assert exporter.get_finished_spans()[1].attributes[OUTPUT_MESSAGES] == BAD_OUTPUT
    exporter.clear()
    assert exporter.get_finished_spans() == ()
    with pytest.raises(AssertionError, match=r"violations \(2\)"):
        exporter.assert_content_valid()


def test_span_exporter_fixture_is_the_checking_exporter(span_exporter, tracer_provider):
    """Every test using the fixture gets the check; a valid span passes it (an invalid one would fail teardown)."""
    assert isinstance(span_exporter, SchemaCheckedSpanExporter)
    with tracer_provider.get_tracer("test").start_as_current_span("chat m") as span:
        span.set_attribute(OUTPUT_MESSAGES, json.dumps([answer(text("Paris"))]))
    assert span_exporter.content_checked == 1 and span_exporter.content_problems == []


# --- what our renderer produces (ag2_otel.instrumentation.content: pure functions) --------------------------------------------

def test_renderer_history_is_valid():
    instructions_json, messages_json = rendering.instructions_json, rendering.messages_json
    output_messages_json = rendering.output_messages_json
    history = [
        {"role": "user", "content": "What is 2+2?", "name": "user_proxy"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": '{"a": 2, "b": 2}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "4"},
        {"role": "tool", "content": "", "tool_responses": [{"tool_call_id": "call_1", "role": "tool", "content": "4"}]},
        {"role": "assistant", "content": "4. TERMINATE"},
    ]
    assert content_errors(INPUT_MESSAGES, messages_json(history, 16384)) == []
    assert content_errors(OUTPUT_MESSAGES, output_messages_json([history[-1]], ["stop"], 16384)) == []
    assert content_errors(SYSTEM_INSTRUCTIONS, instructions_json("You are a calculator.", 16384)) == []


def test_renderer_list_overflow_marker_is_accepted_as_last_item():
    rendered = rendering.messages_json([{"role": "user", "content": f"hello {i}"} for i in range(300)], 100_000)
    assert json.loads(rendered)[-1] == "…[100 more items]"  # cut at 200 items
    assert content_errors(INPUT_MESSAGES, rendered) == []


def _completion(*choices):
    from openai.types.chat import ChatCompletion

    return ChatCompletion(id="chatcmpl-1", created=0, object="chat.completion", model="gpt-4o-mini",
                          choices=list(choices))


def _choice(index=0, finish_reason="stop", **message):
    from openai.types.chat.chat_completion import ChatCompletionMessage, Choice

    return Choice(index=index, finish_reason=finish_reason, message=ChatCompletionMessage(role="assistant", **message))


def _call(id, name, arguments):
    from openai.types.chat.chat_completion_message_tool_call import ChatCompletionMessageToolCall, Function

    return ChatCompletionMessageToolCall(id=id, type="function", function=Function(name=name, arguments=arguments))


@pytest.mark.parametrize("response", [
    _completion(_choice(content="Paris")),
    _completion(_choice(finish_reason="tool_calls", content=None, tool_calls=[_call("c1", "calc", '{"a": 1}')])),
    _completion(_choice(finish_reason="tool_calls", content=None,  # parallel calls, one with broken JSON
                        tool_calls=[_call("c1", "calc", '{"a": 1}'), _call("c2", "calc", '{not json')])),
    _completion(_choice(content=None, refusal="I can't help with that.")),
    _completion(_choice(content="a"), _choice(index=1, finish_reason="length", content="b")),  # n=2
], ids=["plain", "tool_call", "parallel_tool_calls", "refusal", "n2"])
def test_output_of_openai_chat_completion_objects_is_valid(response):
    """Issue #10: the pydantic ChatCompletionMessage AG2's OpenAIClient returns was dumped into a text part."""
    from ag2_otel.instrumentation.extract import llm_response_content

    rendered = llm_response_content(response, 16384)[OUTPUT_MESSAGES]
    assert content_errors(OUTPUT_MESSAGES, rendered) == []
    for message in json.loads(rendered):
        for part in message["parts"]:
            assert part["type"] in ("text", "tool_call", "reasoning"), part


@pytest.mark.parametrize("key, render", [
    (OUTPUT_MESSAGES, lambda: rendering.output_messages_json(
        [{"role": "assistant", "content": "x" * 20000}], ["stop"], 16384)),
    (INPUT_MESSAGES, lambda: rendering.messages_json(
        [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c" * 20000, "type": "function", "function": {"name": "calc", "arguments": "{}"}}]}], 16384)),
    (INPUT_MESSAGES, lambda: rendering.messages_json(
        [{"role": "tool", "tool_call_id": "c" * 20000, "content": "4"}], 16384)),
], ids=["finish_reason_dropped", "tool_call_name_dropped", "tool_response_dropped"])
def test_a_budget_cut_keeps_the_required_fields(key, render):
    assert content_errors(key, render()) == []


def test_tool_definitions_as_recorded_are_valid():
    from ag2_otel.instrumentation.extract import llm_request_content

    tools = [{"type": "function", "function": {"name": "calculator", "description": "A simple calculator",
                                               "parameters": CALCULATOR_PARAMETERS}}]
    recorded = llm_request_content({"messages": [{"role": "user", "content": "hi"}], "tools": tools}, 16384, 20)
    assert content_errors(TOOL_DEFINITIONS, recorded[TOOL_DEFINITIONS]) == []


def test_a_real_tool_chat_records_valid_tool_definitions(instrument, span_exporter):
    from autogen import ConversableAgent, register_function

    from tests.openai_stub import OpenAIStub, Reply, completion, tool_call

    script = [Reply(body=completion(None, tool_calls=[tool_call("calculator", {"a": 2, "b": 2}, id="call_1")])),
              Reply(body=completion("4. TERMINATE"))]
    instrument(capture_content=True)
    with OpenAIStub(script) as stub:
        assistant = ConversableAgent("assistant", llm_config=stub.llm_config("sk-test"))
        user_agent = ConversableAgent("user", llm_config=False, human_input_mode="NEVER",
                                      is_termination_msg=lambda m: "TERMINATE" in (m.get("content") or ""))

        def calculator(a: Annotated[int, "a"], b: Annotated[int, "b"]) -> int:
            return a + b

        register_function(calculator, caller=assistant, executor=user_agent, description="adds")
        user_agent.initiate_chat(assistant, message="2+2?", max_turns=2)
        assert stub.requests[0].body["tools"][0]["function"]["name"] == "calculator"  # AG2 did send the tools
    chats = [s for s in span_exporter.get_finished_spans() if s.name.startswith("chat ")]
    assert chats and all(TOOL_DEFINITIONS in s.attributes for s in chats)
    for span in chats:
        validate_span_content(span)
