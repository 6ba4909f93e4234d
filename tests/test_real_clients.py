"""Real model clients (issue #10): AG2's own client classes talking HTTP through the real provider SDKs to local
wire-compatible servers (``tests/openai_stub.py``, ``tests/anthropic_stub.py``). Nothing but the network is replaced:
``OpenAIWrapper`` builds AG2's real ``OpenAIClient`` / ``AnthropicClient`` / ``OpenAIResponsesClient``, the ``openai`` and
``anthropic`` SDKs parse the wire bytes into their own objects, and the ``chat`` span must say exactly what the server
answered.

Every ``chat {model}`` span is checked for ``gen_ai.output.messages`` (the GenAI output-message shape, compared whole),
``gen_ai.response.finish_reasons``, ``gen_ai.response.id/model`` and ``gen_ai.usage.*``; every ``execute_tool`` span
for the result AG2 produced; no span anywhere may contain the API key.

What AG2's clients drop before our wrapper sees the response (streamed cached/reasoning token details and streamed
``reasoning_content``; Anthropic cache tokens, thinking and the served model name) is recorded from the provider SDK's
own reply by ``ag2_otel.instrumentation.provider_tap``, and asserted here like the rest.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Iterable

import pytest

from ag2_otel import semconv as k
from tests.helpers import by_name
from tests.openai_stub import (OpenAIStub, Reply, choice, completion, function_call_item, message_item,
                               reasoning_item, response, tool_call)

API_KEY = "sk-real-clients-SECRET-7c1e"
QUESTION = "What is 232 - 32?"


# --- harness ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def traced(instrument):
    return instrument(capture_content=True)


def _anthropic_usable() -> tuple[bool, str]:
    """AG2 0.14's AnthropicClient always sends ``temperature`` (default 1.0); anthropic>=1 removed that parameter from
    ``Messages.create``, so every AG2 Anthropic call raises TypeError there. AG2 itself declares anthropic<1."""
    try:
        import anthropic
        from anthropic.resources.messages import Messages
    except ImportError:
        return False, "the anthropic SDK is not installed"
    if "temperature" not in inspect.signature(Messages.create).parameters:
        return False, (f"anthropic {anthropic.__version__}: Messages.create() has no 'temperature', which AG2's "
                       "AnthropicClient always passes (AG2 declares anthropic<1)")
    return True, ""


_ANTHROPIC_OK, _ANTHROPIC_WHY = _anthropic_usable()
needs_anthropic = pytest.mark.skipif(not _ANTHROPIC_OK, reason=_ANTHROPIC_WHY)


def _has_responses_client() -> bool:
    try:
        import autogen.oai.openai_responses  # noqa: F401  (AG2 >= 0.9.2)
    except ImportError:
        return False
    return True


needs_responses = pytest.mark.skipif(not _has_responses_client(), reason="this AG2 has no OpenAIResponsesClient")


def calculator(a: int, b: int, op: str) -> int:
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def calculator_agents(llm_config: dict):
    from autogen import ConversableAgent, register_function

    assistant = ConversableAgent("assistant", llm_config=llm_config, system_message="You are a calculator.",
                                 human_input_mode="NEVER")
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER")
    register_function(calculator, caller=assistant, executor=user, name="calculator",
                      description="A simple calculator")
    return user, assistant


def run_calculator(llm_config: dict, max_turns: int = 2):
    user, assistant = calculator_agents(llm_config)
    return user.initiate_chat(assistant, message=QUESTION, max_turns=max_turns, silent=True)


def wrapper(llm_config: dict):
    from autogen import OpenAIWrapper

    return OpenAIWrapper(**llm_config)


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]


def out(*parts: dict, finish_reason: str) -> dict[str, Any]:
    return {"role": "assistant", "parts": list(parts), "finish_reason": finish_reason}


def text(content: str) -> dict[str, Any]:
    return {"type": "text", "content": content}


def reasoning(content: str) -> dict[str, Any]:
    return {"type": "reasoning", "content": content}


def call_part(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": arguments}


def part_of(call: dict) -> dict[str, Any]:
    """The expected tool_call part for a stub tool call: arguments parsed when valid JSON, else the raw string."""
    raw = call["function"]["arguments"]
    try:
        arguments = json.loads(raw)
    except ValueError:
        arguments = raw
    return call_part(call["id"], call["function"]["name"], arguments)


def output_messages(span) -> Any:
    assert k.OUTPUT_MESSAGES in span.attributes, f"{span.name} has no {k.OUTPUT_MESSAGES}"
    return json.loads(span.attributes[k.OUTPUT_MESSAGES])


def chat_spans(spans, model: str) -> list:
    return by_name(spans, f"chat {model}")


def assert_response(span, *, response_id: str, model: str, finish_reasons: Iterable[str], input_tokens: int,
                    output_tokens: int) -> None:
    attrs = span.attributes
    assert attrs[k.RESPONSE_ID] == response_id
    assert attrs[k.RESPONSE_MODEL] == model
    assert list(attrs[k.RESPONSE_FINISH_REASONS]) == list(finish_reasons)
    assert attrs[k.USAGE_INPUT_TOKENS] == input_tokens
    assert attrs[k.USAGE_OUTPUT_TOKENS] == output_tokens


def assert_served_completion(span, body: dict) -> None:
    """The chat span's response attributes equal the chat.completion the OpenAI stub served."""
    assert_response(span, response_id=body["id"], model=body["model"],
                    finish_reasons=[c["finish_reason"] for c in body["choices"]],
                    input_tokens=body["usage"]["prompt_tokens"], output_tokens=body["usage"]["completion_tokens"])


def assert_no_api_key(spans) -> None:
    assert spans
    for span in spans:
        dump = json.dumps([span.name, span.status.description or "", dict(span.resource.attributes),
                           dict(span.attributes or {}),
                           [[e.name, dict(e.attributes or {})] for e in span.events]], default=str)
        assert API_KEY not in dump and "SECRET-7c1e" not in dump, span.name


def tool_messages(result) -> list[dict]:
    """The tool responses AG2 produced in a chat, in order."""
    return [r for m in result.chat_history for r in (m.get("tool_responses") or [])]


def assert_tool_spans(spans, result, calls: list[dict]) -> None:
    """One ``execute_tool calculator`` span per tool call the model made, each recording exactly the arguments the
    model sent and the result AG2 produced (the string AG2 put in the tool message)."""
    tools = by_name(spans, "execute_tool calculator")
    responses = {r["tool_call_id"]: r["content"] for r in tool_messages(result)}
    assert len(tools) == len(calls) == len(responses)
    for span, call in zip(tools, calls):
        assert span.attributes[k.TOOL_CALL_ID] == call["id"]
        assert span.attributes[k.TOOL_CALL_ARGUMENTS] == call["function"]["arguments"]
        produced = responses[call["id"]]
        assert isinstance(produced, str)
        assert span.attributes[k.TOOL_CALL_RESULT] == produced


# --- the stubs speak the wire protocol: the SDKs' own stream accumulators rebuild exactly what was served ------------

STUB_BODIES = {
    "text": completion("Paris, the capital.", prompt_tokens=9, completion_tokens=5),
    "parallel_tool_calls": completion(None, tool_calls=[tool_call("calculator", {"a": 1, "b": 2, "op": "+"}, "c1"),
                                                        tool_call("calculator", {"a": 3, "b": 4, "op": "*"}, "c2")]),
    "text_and_reasoning_and_tool_call": completion("Sure.", reasoning_content="Thinking it over.",
                                                   tool_calls=[tool_call("calculator", "not json", "c3")]),
    "refusal": completion(None, refusal="I can't help with that."),
    # (finish_reason "length" would make the SDK's stream helper raise LengthFinishReasonError)
    "n2": completion(choices=[choice("one"), choice("two and three", index=1)]),
    "usage_details": completion("ok", prompt_tokens=300, completion_tokens=40, cached_tokens=256,
                                reasoning_tokens=32),
}


@pytest.mark.parametrize("case", list(STUB_BODIES))
def test_openai_stub_stream_rebuilds_the_completion(case):
    from openai import OpenAI

    body = STUB_BODIES[case]
    with OpenAIStub([Reply(body=body)]) as stub:
        client = OpenAI(api_key=API_KEY, base_url=stub.base_url, max_retries=0, timeout=5)
        with client.chat.completions.stream(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                            n=len(body["choices"]), stream_options={"include_usage": True}) as s:
            final = s.get_final_completion()
    assert (final.id, final.model, final.object) == (body["id"], body["model"], "chat.completion")
    assert final.usage.model_dump(exclude_none=True) == body["usage"]
    assert len(final.choices) == len(body["choices"])
    for got, served in zip(final.choices, body["choices"]):
        message = served["message"]
        assert got.finish_reason == served["finish_reason"]
        assert got.message.content == message["content"]
        assert got.message.refusal == message["refusal"]
        assert getattr(got.message, "reasoning_content", None) == message.get("reasoning_content")
        assert [(c.id, c.function.name, c.function.arguments) for c in got.message.tool_calls or []] == [
            (c["id"], c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls", [])]


def test_anthropic_stub_stream_rebuilds_the_message():
    anthropic = pytest.importorskip("anthropic")  # the SDK alone, without AG2: any anthropic version

    a = _anthropic()
    body = a.message("Hi there", thinking="Hmm.", tool_uses=[a.tool_use("calculator", {"a": 1, "b": [1, 2]}, "t1")],
                     cache_read_input_tokens=5, cache_creation_input_tokens=7)
    with a.AnthropicStub([Reply(body=body)]) as stub:
        client = anthropic.Anthropic(api_key=API_KEY, base_url=stub.base_url, max_retries=0, timeout=5)
        with client.messages.stream(model=ANTHROPIC_MODEL, max_tokens=100,
                                    messages=[{"role": "user", "content": "x"}]) as s:
            final = s.get_final_message()
        plain = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=100,
                                          messages=[{"role": "user", "content": "x"}])
    expected = {key: value for key, value in body.items() if value is not None}
    assert final.model_dump(exclude_none=True) == expected
    assert plain.model_dump(exclude_none=True) == expected  # and the non-streamed answer parses to the same


# --- OpenAI chat completions -------------------------------------------------------------------------------------------

def test_openai_plain_create(traced, span_exporter):
    from openai.types.chat import ChatCompletion

    body = completion("Paris", prompt_tokens=11, completion_tokens=2)
    with OpenAIStub([Reply(body=body)]) as stub:
        returned = wrapper(stub.llm_config(API_KEY)).create(messages=[dict(m) for m in MESSAGES])
        requests = list(stub.requests)
    assert isinstance(returned, ChatCompletion)  # the SDK's own object reached AG2 and came back unchanged
    assert returned.choices[0].message.content == "Paris"
    assert len(requests) == 1 and requests[0].header("authorization") == f"Bearer {API_KEY}"
    spans = span_exporter.get_finished_spans()
    (span,) = chat_spans(spans, "gpt-4o-mini")
    assert output_messages(span) == [out(text("Paris"), finish_reason="stop")]
    assert_served_completion(span, body)
    assert span.attributes[k.PROVIDER_NAME] == "openai"
    assert k.USAGE_CACHE_READ_INPUT_TOKENS not in span.attributes  # the server reported no details: none invented
    assert k.USAGE_REASONING_OUTPUT_TOKENS not in span.attributes
    assert_no_api_key(spans)


def test_openai_usage_details_and_reasoning_content(traced, span_exporter):
    calls = [tool_call("calculator", {"a": 2, "b": 3, "op": "+"}, "call_rc")]
    body = completion("Adding.", reasoning_content="The user wants a sum.", tool_calls=calls, prompt_tokens=120,
                      completion_tokens=30, cached_tokens=64, reasoning_tokens=12)
    with OpenAIStub([Reply(body=body)]) as stub:
        wrapper(stub.llm_config(API_KEY)).create(messages=[dict(m) for m in MESSAGES])
    spans = span_exporter.get_finished_spans()
    (span,) = chat_spans(spans, "gpt-4o-mini")
    assert output_messages(span) == [out(reasoning("The user wants a sum."), text("Adding."), part_of(calls[0]),
                                         finish_reason="tool_calls")]
    assert_served_completion(span, body)
    assert span.attributes[k.USAGE_CACHE_READ_INPUT_TOKENS] == 64
    assert span.attributes[k.USAGE_REASONING_OUTPUT_TOKENS] == 12
    assert_no_api_key(spans)


def test_openai_calculator_chat_single_tool_call(traced, span_exporter):
    calls = [tool_call("calculator", {"a": 232, "b": 32, "op": "-"}, "call_single")]
    first = completion(None, tool_calls=calls, prompt_tokens=90, completion_tokens=18)
    second: dict = {}

    def answer(request):  # the server answers from the tool result AG2 sent back
        tool_message = request.body["messages"][-1]
        assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_single"
        second.update(completion(f"232 - 32 = {tool_message['content']}.", prompt_tokens=130, completion_tokens=9))
        return second

    with OpenAIStub([Reply(body=first), answer]) as stub:
        result = run_calculator(stub.llm_config(API_KEY))
        requests = list(stub.requests)
    assert len(requests) == 2
    assert result.chat_history[-1]["content"] == "232 - 32 = 200."
    spans = span_exporter.get_finished_spans()
    chats = chat_spans(spans, "gpt-4o-mini")
    assert len(chats) == 2
    assert output_messages(chats[0]) == [out(part_of(calls[0]), finish_reason="tool_calls")]
    assert output_messages(chats[1]) == [out(text("232 - 32 = 200."), finish_reason="stop")]
    assert_served_completion(chats[0], first)
    assert_served_completion(chats[1], second)
    assert_tool_spans(spans, result, calls)
    assert by_name(spans, "execute_tool calculator")[0].attributes[k.TOOL_CALL_RESULT] == "200"
    assert_no_api_key(spans)


def test_openai_calculator_chat_parallel_tool_calls(traced, span_exporter):
    calls = [tool_call("calculator", {"a": 232, "b": 32, "op": "-"}, "call_p1"),
             tool_call("calculator", {"a": 6, "b": 7, "op": "*"}, "call_p2")]
    first = completion(None, tool_calls=calls, prompt_tokens=95, completion_tokens=40)
    second = completion("200 and 42.", prompt_tokens=150, completion_tokens=5)
    with OpenAIStub([Reply(body=first), Reply(body=second)]) as stub:
        result = run_calculator(stub.llm_config(API_KEY))
    spans = span_exporter.get_finished_spans()
    chats = chat_spans(spans, "gpt-4o-mini")
    assert len(chats) == 2
    assert output_messages(chats[0]) == [out(*[part_of(c) for c in calls], finish_reason="tool_calls")]
    assert output_messages(chats[1]) == [out(text("200 and 42."), finish_reason="stop")]
    assert_served_completion(chats[0], first)
    assert_tool_spans(spans, result, calls)
    assert [s.attributes[k.TOOL_CALL_RESULT] for s in by_name(spans, "execute_tool calculator")] == ["200", "42"]
    assert_no_api_key(spans)


def test_openai_tool_call_arguments_that_are_not_json_stay_a_string(traced, span_exporter):
    calls = [tool_call("calculator", '{"a": 1, "b":', "call_broken")]
    body = completion(None, tool_calls=calls)
    with OpenAIStub([Reply(body=body)]) as stub:
        wrapper(stub.llm_config(API_KEY)).create(messages=[dict(m) for m in MESSAGES])
    (span,) = chat_spans(span_exporter.get_finished_spans(), "gpt-4o-mini")
    assert output_messages(span) == [out(call_part("call_broken", "calculator", '{"a": 1, "b":'),
                                         finish_reason="tool_calls")]


def test_openai_refusal_is_a_text_part(traced, span_exporter):
    body = completion(None, refusal="I can't help with that.", prompt_tokens=14, completion_tokens=6)
    with OpenAIStub([Reply(body=body)]) as stub:
        returned = wrapper(stub.llm_config(API_KEY)).create(messages=[dict(m) for m in MESSAGES])
    assert returned.choices[0].message.refusal == "I can't help with that."
    spans = span_exporter.get_finished_spans()
    (span,) = chat_spans(spans, "gpt-4o-mini")
    assert output_messages(span) == [out(text("I can't help with that."), finish_reason="stop")]
    assert_served_completion(span, body)


def test_openai_n2_one_output_message_per_choice(traced, span_exporter):
    body = completion(choices=[choice("Paris.", index=0), choice("Paris is the capital", index=1,
                                                                  finish_reason="length")],
                      prompt_tokens=20, completion_tokens=9)
    with OpenAIStub([Reply(body=body)]) as stub:
        wrapper(stub.llm_config(API_KEY)).create(messages=[dict(m) for m in MESSAGES], n=2)
        requests = list(stub.requests)
    assert requests[0].body["n"] == 2
    spans = span_exporter.get_finished_spans()
    (span,) = chat_spans(spans, "gpt-4o-mini")
    assert output_messages(span) == [out(text("Paris."), finish_reason="stop"),
                                     out(text("Paris is the capital"), finish_reason="length")]
    assert_served_completion(span, body)
    assert list(span.attributes[k.RESPONSE_FINISH_REASONS]) == ["stop", "length"]


# --- OpenAI streaming ------------------------------------------------------------------------------------------------

def _assert_streamed(request) -> None:
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}  # AG2 asks for the usage chunk


def test_openai_stream_plain(traced, span_exporter):
    body = completion("Paris, of course.", prompt_tokens=23, completion_tokens=5)
    with OpenAIStub([Reply(body=body)]) as stub:
        returned = wrapper(stub.llm_config(API_KEY, stream=True)).create(messages=[dict(m) for m in MESSAGES])
        requests = list(stub.requests)
    assert len(requests) == 1
    _assert_streamed(requests[0])
    assert returned.choices[0].message.content == "Paris, of course."  # AG2 assembled the chunks
    spans = span_exporter.get_finished_spans()
    (span,) = chat_spans(spans, "gpt-4o-mini")  # one span for the whole stream
    assert output_messages(span) == [out(text("Paris, of course."), finish_reason="stop")]
    assert_served_completion(span, body)
    assert_no_api_key(spans)


def test_openai_stream_calculator_chat_parallel_tool_calls(traced, span_exporter):
    calls = [tool_call("calculator", {"a": 232, "b": 32, "op": "-"}, "call_s1"),
             tool_call("calculator", {"a": 6, "b": 7, "op": "*"}, "call_s2")]
    first = completion(None, tool_calls=calls, prompt_tokens=95, completion_tokens=40)
    second = completion("200 and 42.", prompt_tokens=150, completion_tokens=5)
    with OpenAIStub([Reply(body=first), Reply(body=second)]) as stub:
        result = run_calculator(stub.llm_config(API_KEY, stream=True))
        requests = list(stub.requests)
    assert len(requests) == 2
    for request in requests:
        _assert_streamed(request)
    spans = span_exporter.get_finished_spans()
    chats = chat_spans(spans, "gpt-4o-mini")
    assert len(chats) == 2
    # AG2's stream assembly leaves content "" beside the tool calls: no text part for it
    assert output_messages(chats[0]) == [out(*[part_of(c) for c in calls], finish_reason="tool_calls")]
    assert output_messages(chats[1]) == [out(text("200 and 42."), finish_reason="stop")]
    assert_served_completion(chats[0], first)
    assert_served_completion(chats[1], second)
    assert_tool_spans(spans, result, calls)
    assert_no_api_key(spans)


def test_openai_stream_usage_details(traced, span_exporter):
    """The last chunk carries prompt_tokens_details / completion_tokens_details; AG2's assembled ChatCompletion
    keeps only prompt/completion tokens."""
    body = completion("Paris.", prompt_tokens=300, completion_tokens=40, cached_tokens=256, reasoning_tokens=32)
    with OpenAIStub([Reply(body=body)]) as stub:
        wrapper(stub.llm_config(API_KEY, stream=True)).create(messages=[dict(m) for m in MESSAGES])
    chats = chat_spans(span_exporter.get_finished_spans(), "gpt-4o-mini")
    assert len(chats) == 1  # recorded on the one chat span, never a second one
    assert_served_completion(chats[0], body)
    assert chats[0].attributes.get(k.USAGE_CACHE_READ_INPUT_TOKENS) == 256
    assert chats[0].attributes.get(k.USAGE_REASONING_OUTPUT_TOKENS) == 32


def test_openai_stream_reasoning_content(traced, span_exporter):
    body = completion("Paris.", reasoning_content="Capital of France: Paris.")
    with OpenAIStub([Reply(body=body)]) as stub:
        wrapper(stub.llm_config(API_KEY, stream=True)).create(messages=[dict(m) for m in MESSAGES])
    (span,) = chat_spans(span_exporter.get_finished_spans(), "gpt-4o-mini")
    assert output_messages(span) == [out(reasoning("Capital of France: Paris."), text("Paris."), finish_reason="stop")]


# --- Azure OpenAI ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_azure_calculator_chat(traced, span_exporter, stream):
    calls = [tool_call("calculator", {"a": 232, "b": 32, "op": "-"}, "call_az")]
    first = completion(None, tool_calls=calls, prompt_tokens=88, completion_tokens=17)
    second = completion("It is 200.", prompt_tokens=120, completion_tokens=4)
    with OpenAIStub([Reply(body=first), Reply(body=second)]) as stub:
        result = run_calculator(stub.azure_llm_config(API_KEY, api_version="2024-10-21", stream=stream))
        requests = list(stub.requests)
        port = stub.port
    assert [r.path for r in requests] == ["/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"] * 2
    assert all(r.header("api-key") == API_KEY for r in requests)
    if stream:
        for request in requests:
            _assert_streamed(request)
    spans = span_exporter.get_finished_spans()
    chats = chat_spans(spans, "gpt-4o-mini")
    assert len(chats) == 2
    assert chats[0].attributes[k.PROVIDER_NAME] == "azure.ai.openai"
    assert chats[0].attributes[k.SERVER_ADDRESS] == "127.0.0.1" and chats[0].attributes[k.SERVER_PORT] == port
    assert output_messages(chats[0]) == [out(part_of(calls[0]), finish_reason="tool_calls")]
    assert output_messages(chats[1]) == [out(text("It is 200."), finish_reason="stop")]
    assert_served_completion(chats[0], first)
    assert_served_completion(chats[1], second)
    assert_tool_spans(spans, result, calls)
    assert_no_api_key(spans)


# --- OpenAI Responses API (api_type "responses") -------------------------------------------------------------------

def _assert_responses_span(span, body: dict, parts: list[dict]) -> None:
    (message,) = output_messages(span)
    assert {key: value for key, value in message.items() if key != "finish_reason"} == {"role": "assistant",
                                                                                         "parts": parts}
    assert isinstance(message.get("finish_reason"), str)  # required by the output-message schema
    assert span.attributes[k.RESPONSE_ID] == body["id"]
    assert span.attributes[k.RESPONSE_MODEL] == body["model"]
    assert span.attributes[k.USAGE_INPUT_TOKENS] == body["usage"]["input_tokens"]
    assert span.attributes[k.USAGE_OUTPUT_TOKENS] == body["usage"]["output_tokens"]


@needs_responses
def test_responses_output_items_in_order(traced, span_exporter):
    from openai.types.responses import Response

    call = function_call_item("calculator", {"a": 2, "b": 3, "op": "+"}, "call_resp")
    body = response(items=[reasoning_item("Add two numbers."), message_item("Let me add."), call],
                    input_tokens=77, output_tokens=21, cached_tokens=32, reasoning_tokens=8)
    with OpenAIStub([Reply(body=body)]) as stub:
        returned = wrapper(stub.llm_config(API_KEY, api_type="responses")).create(
            messages=[dict(m) for m in MESSAGES])
        requests = list(stub.requests)
    assert isinstance(returned, Response)
    assert [r.route for r in requests] == ["/v1/responses"]
    spans = span_exporter.get_finished_spans()
    (span,) = chat_spans(spans, "gpt-4o-mini")
    _assert_responses_span(span, body, [reasoning("Add two numbers."), text("Let me add."),
                                        call_part("call_resp", "calculator", {"a": 2, "b": 3, "op": "+"})])
    assert span.attributes[k.USAGE_CACHE_READ_INPUT_TOKENS] == 32
    assert span.attributes[k.USAGE_REASONING_OUTPUT_TOKENS] == 8
    assert_no_api_key(spans)


@needs_responses
def test_responses_calculator_chat(traced, span_exporter):
    call = function_call_item("calculator", {"a": 232, "b": 32, "op": "-"}, "call_rchat")
    first = response(items=[call], input_tokens=60, output_tokens=15)
    second = response("200.", input_tokens=90, output_tokens=3)
    with OpenAIStub([Reply(body=first), Reply(body=second)]) as stub:
        result = run_calculator(stub.llm_config(API_KEY, api_type="responses"))
        requests = list(stub.requests)
    posts = [r for r in requests if r.method == "POST"]
    assert len(posts) == 2 and posts[1].body["previous_response_id"] == first["id"]  # the stateful API really ran
    spans = span_exporter.get_finished_spans()
    chats = chat_spans(spans, "gpt-4o-mini")
    assert len(chats) == 2  # the client's responses.retrieve() look-ups are not model calls
    _assert_responses_span(chats[0], first, [call_part("call_rchat", "calculator", {"a": 232, "b": 32, "op": "-"})])
    _assert_responses_span(chats[1], second, [text("200.")])
    tool_calls = [{"id": "call_rchat", "function": {"name": "calculator", "arguments": call["arguments"]}}]
    assert_tool_spans(spans, result, tool_calls)
    assert_no_api_key(spans)


# --- Anthropic (api_type "anthropic", the anthropic SDK against the Messages-API stub) --------------------------------

def _anthropic():
    from tests import anthropic_stub

    return anthropic_stub


ANTHROPIC_MODEL = "claude-sonnet-4-5"  # the alias in llm_config; the server answers with a dated model name


def _assert_anthropic_span(span, body: dict, finish_reason: str) -> None:
    # AG2's ChatCompletion carries the message id, maps stop_reason (end_turn -> stop, tool_use -> tool_calls) and
    # reports the request's model alias; usage input/output are the message's
    assert span.attributes[k.RESPONSE_ID] == body["id"]
    assert list(span.attributes[k.RESPONSE_FINISH_REASONS]) == [finish_reason]
    assert span.attributes[k.USAGE_INPUT_TOKENS] == body["usage"]["input_tokens"]
    assert span.attributes[k.USAGE_OUTPUT_TOKENS] == body["usage"]["output_tokens"]
    assert span.attributes[k.PROVIDER_NAME] == "anthropic"


@needs_anthropic
def test_anthropic_plain_create(traced, span_exporter):
    a = _anthropic()
    body = a.message("Paris.", input_tokens=31, output_tokens=3)
    with a.AnthropicStub([Reply(body=body)]) as stub:
        returned = wrapper(stub.llm_config(API_KEY)).create(messages=[dict(m) for m in MESSAGES])
        requests = list(stub.requests)
    assert returned.choices[0].message.content == "Paris."
    assert [r.route for r in requests] == ["/v1/messages"]
    assert API_KEY in (requests[0].header("x-api-key"), (requests[0].header("authorization") or "")[len("Bearer "):])
    assert requests[0].body["system"] == "Be brief."
    spans = span_exporter.get_finished_spans()
    (span,) = chat_spans(spans, ANTHROPIC_MODEL)
    assert output_messages(span) == [out(text("Paris."), finish_reason="stop")]
    _assert_anthropic_span(span, body, "stop")
    assert_no_api_key(spans)


@needs_anthropic
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_anthropic_calculator_chat(traced, span_exporter, stream):
    a = _anthropic()
    use = a.tool_use("calculator", {"a": 232, "b": 32, "op": "-"}, "toolu_calc")
    first = a.message("I'll use the calculator.", tool_uses=[use], input_tokens=400, output_tokens=55)
    second = a.message("232 - 32 = 200.", input_tokens=470, output_tokens=12)
    with a.AnthropicStub([Reply(body=first), Reply(body=second)]) as stub:
        result = run_calculator(stub.llm_config(API_KEY, stream=stream))
        requests = list(stub.requests)
    assert len(requests) == 2 and all(r.body.get("stream") is stream for r in requests)
    # the tool result went back to the server as a tool_result block
    assert requests[1].body["messages"][-1]["content"][0] == {"type": "tool_result", "tool_use_id": "toolu_calc",
                                                              "content": "200"}
    spans = span_exporter.get_finished_spans()
    chats = chat_spans(spans, ANTHROPIC_MODEL)
    assert len(chats) == 2
    assert output_messages(chats[0]) == [out(text("I'll use the calculator."),
                                             call_part("toolu_calc", "calculator", {"a": 232, "b": 32, "op": "-"}),
                                             finish_reason="tool_calls")]
    assert output_messages(chats[1]) == [out(text("232 - 32 = 200."), finish_reason="stop")]
    _assert_anthropic_span(chats[0], first, "tool_calls")
    _assert_anthropic_span(chats[1], second, "stop")
    tool_calls = [{"id": "toolu_calc", "function": {"name": "calculator", "arguments": json.dumps(use["input"])}}]
    assert_tool_spans(spans, result, tool_calls)
    assert_no_api_key(spans)


@needs_anthropic
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_anthropic_thinking_is_a_reasoning_part(traced, span_exporter, stream):
    a = _anthropic()
    use = a.tool_use("calculator", {"a": 6, "b": 7, "op": "*"}, "toolu_think")
    body = a.message("Multiplying.", thinking="Six times seven.", tool_uses=[use], input_tokens=50,
                     output_tokens=20)
    with a.AnthropicStub([Reply(body=body)]) as stub:
        returned = wrapper(stub.llm_config(API_KEY, stream=stream)).create(messages=[dict(m) for m in MESSAGES])
    # AG2 folds the thinking block into the message text
    assert returned.choices[0].message.content == "[Thinking]\nSix times seven.\n\nMultiplying."
    (span,) = chat_spans(span_exporter.get_finished_spans(), ANTHROPIC_MODEL)
    assert output_messages(span) == [out(reasoning("Six times seven."), text("Multiplying."),
                                         call_part("toolu_think", "calculator", {"a": 6, "b": 7, "op": "*"}),
                                         finish_reason="tool_calls")]
    _assert_anthropic_span(span, body, "tool_calls")


@needs_anthropic
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_anthropic_cache_tokens(traced, span_exporter, stream):
    a = _anthropic()
    body = a.message("Paris.", input_tokens=12, output_tokens=3, cache_read_input_tokens=2048,
                     cache_creation_input_tokens=512)
    with a.AnthropicStub([Reply(body=body)]) as stub:
        wrapper(stub.llm_config(API_KEY, stream=stream)).create(messages=[dict(m) for m in MESSAGES])
    chats = chat_spans(span_exporter.get_finished_spans(), ANTHROPIC_MODEL)
    assert len(chats) == 1
    assert chats[0].attributes.get(k.USAGE_CACHE_READ_INPUT_TOKENS) == 2048
    assert chats[0].attributes.get(k.USAGE_CACHE_CREATION_INPUT_TOKENS) == 512


@needs_anthropic
def test_anthropic_response_model_is_the_served_one(traced, span_exporter):
    a = _anthropic()
    body = a.message("Paris.", model="claude-sonnet-4-5-20250929")
    with a.AnthropicStub([Reply(body=body)]) as stub:
        wrapper(stub.llm_config(API_KEY)).create(messages=[dict(m) for m in MESSAGES])
    (span,) = chat_spans(span_exporter.get_finished_spans(), ANTHROPIC_MODEL)
    assert span.attributes[k.RESPONSE_MODEL] == "claude-sonnet-4-5-20250929"
