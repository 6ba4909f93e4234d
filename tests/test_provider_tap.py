"""The provider tap (ag2_otel/instrumentation/provider_tap.py): usage details AG2's clients drop, read from the SDK
call AG2 makes inside our ``chat`` span, recorded on that span (never a second one), only where AG2's response lacks
them. Real AG2 client classes, the real ``openai`` / ``anthropic`` SDKs, HTTP to the local wire stubs.
"""

from __future__ import annotations

import inspect
import json

import pytest
import wrapt

from ag2_otel import semconv as k
from ag2_otel.instrumentation import provider_tap
from tests.helpers import by_name
from tests.openai_stub import OpenAIStub, Reply, completion, tool_call

API_KEY = "sk-provider-tap-SECRET-41d2"
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]


def _wrapper(llm_config):
    from autogen import OpenAIWrapper

    return OpenAIWrapper(**llm_config)


def _chats(span_exporter, model=MODEL):
    return by_name(span_exporter.get_finished_spans(), f"chat {model}")


def _usage(span) -> dict:
    keys = (k.USAGE_INPUT_TOKENS, k.USAGE_OUTPUT_TOKENS, k.USAGE_CACHE_READ_INPUT_TOKENS,
            k.USAGE_CACHE_CREATION_INPUT_TOKENS, k.USAGE_REASONING_OUTPUT_TOKENS)
    return {key.split("gen_ai.usage.")[1]: span.attributes[key] for key in keys if key in span.attributes}


# --- OpenAI: stream=True ---------------------------------------------------------------------------------------------

def test_openai_stream_records_cached_and_reasoning_tokens(instrument, span_exporter):
    instrument(capture_content=True)
    body = completion("Paris.", prompt_tokens=300, completion_tokens=40, cached_tokens=256, reasoning_tokens=32)
    with OpenAIStub([Reply(body=body)]) as stub:
        returned = _wrapper(stub.llm_config(API_KEY, stream=True)).create(messages=[dict(m) for m in MESSAGES])
        (request,) = stub.requests
    assert request.body["stream"] is True and request.body["stream_options"] == {"include_usage": True}
    # what AG2 assembled from the chunks is untouched: its own usage keeps prompt/completion tokens only
    assert returned.choices[0].message.content == "Paris."
    assert (returned.usage.prompt_tokens, returned.usage.completion_tokens) == (300, 40)
    assert returned.usage.prompt_tokens_details is None and returned.usage.completion_tokens_details is None

    (span,) = _chats(span_exporter)  # one chat span: the tap adds to it, it never opens one
    assert _usage(span) == {"input_tokens": 300, "output_tokens": 40, "cache_read.input_tokens": 256,
                            "reasoning.output_tokens": 32}
    assert span.attributes[k.RESPONSE_ID] == body["id"]


def test_openai_stream_without_details_adds_nothing(instrument, span_exporter):
    instrument()
    with OpenAIStub([Reply(body=completion("Paris.", prompt_tokens=30, completion_tokens=4))]) as stub:
        _wrapper(stub.llm_config(API_KEY, stream=True)).create(messages=[dict(m) for m in MESSAGES])
    (span,) = _chats(span_exporter)
    assert _usage(span) == {"input_tokens": 30, "output_tokens": 4}


def test_openai_streamed_calculator_chat(instrument, span_exporter):
    """Tool calls streamed as deltas: AG2 assembles and runs them exactly as untraced; each model call's span gets its
    own call's details (the second call reports none: nothing carried over from the first)."""
    from autogen import ConversableAgent, register_function

    instrument(capture_content=True)
    calls = [tool_call("calculator", {"a": 232, "b": 32, "op": "-"}, "call_s1")]
    first = completion(None, tool_calls=calls, prompt_tokens=90, completion_tokens=18, cached_tokens=64,
                       reasoning_tokens=8)
    second = completion("232 - 32 = 200.", prompt_tokens=130, completion_tokens=9)
    with OpenAIStub([Reply(body=first), Reply(body=second)]) as stub:
        assistant = ConversableAgent("assistant", llm_config=stub.llm_config(API_KEY, stream=True),
                                     system_message="You are a calculator.", human_input_mode="NEVER")
        user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER")

        def calculator(a: int, b: int, op: str) -> int:
            return {"+": a + b, "-": a - b}[op]

        register_function(calculator, caller=assistant, executor=user, name="calculator", description="calculator")
        result = user.initiate_chat(assistant, message="What is 232 - 32?", max_turns=2, silent=True)
        requests = list(stub.requests)

    assert [m.get("content") for m in result.chat_history][-2:] == ["200", "232 - 32 = 200."]
    assert requests[1].body["messages"][-1] == {"tool_call_id": "call_s1", "role": "tool", "content": "200"}
    first_span, second_span = _chats(span_exporter)
    assert _usage(first_span) == {"input_tokens": 90, "output_tokens": 18, "cache_read.input_tokens": 64,
                                  "reasoning.output_tokens": 8}
    assert _usage(second_span) == {"input_tokens": 130, "output_tokens": 9}
    (tool,) = by_name(span_exporter.get_finished_spans(), "execute_tool calculator")
    assert json.loads(tool.attributes[k.TOOL_CALL_ARGUMENTS]) == {"a": 232, "b": 32, "op": "-"}


def test_openai_plain_response_keeps_its_own_details(instrument, span_exporter):
    """Without streaming AG2 returns the SDK's ChatCompletion itself: its details are recorded from it, once."""
    instrument()
    body = completion("Paris.", prompt_tokens=300, completion_tokens=40, cached_tokens=128, reasoning_tokens=16)
    with OpenAIStub([Reply(body=body)]) as stub:
        _wrapper(stub.llm_config(API_KEY)).create(messages=[dict(m) for m in MESSAGES])
    (span,) = _chats(span_exporter)
    assert _usage(span) == {"input_tokens": 300, "output_tokens": 40, "cache_read.input_tokens": 128,
                            "reasoning.output_tokens": 16}


def test_sdk_stream_outside_our_chat_span_is_not_touched(instrument, span_exporter):
    """A direct SDK call (no chat span of ours around it) gets the SDK's own Stream object, not a proxy."""
    import openai

    instrument()
    with OpenAIStub([Reply(body=completion("Paris."))]) as stub:
        client = openai.OpenAI(api_key=API_KEY, base_url=stub.base_url, max_retries=0)
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        assert type(stream) is openai.Stream and not isinstance(stream, wrapt.ObjectProxy)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Paris."
    assert span_exporter.get_finished_spans() == ()


def test_tapped_stream_is_the_sdk_stream_to_its_reader(instrument, span_exporter):
    """Inside our chat span the stream AG2 reads is a transparent proxy: same class, same chunks (iter, next, with)."""
    import openai
    from openai.types.chat import ChatCompletionChunk

    instrument()
    seen = {}

    body = completion("Paris is the capital.", prompt_tokens=11, completion_tokens=5, cached_tokens=3)
    with OpenAIStub([Reply(body=body)] * 3) as stub:
        client = openai.OpenAI(api_key=API_KEY, base_url=stub.base_url, max_retries=0)
        tap = provider_tap.Tap()
        token = provider_tap.CURRENT.set(tap)  # what llm_wrapper does while its span is open
        try:
            stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True,
                                                    stream_options={"include_usage": True})
            seen["class"] = stream.__class__
            seen["iter"] = [c.model_dump() for c in stream]
            with client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True,
                                                stream_options={"include_usage": True}) as managed:
                seen["with"] = [c.model_dump() for c in managed]
            stepped = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True,
                                                     stream_options={"include_usage": True})
            seen["next"] = []
            while True:
                try:
                    seen["next"].append(next(stepped).model_dump())
                except StopIteration:
                    break
        finally:
            provider_tap.CURRENT.reset(token)
        bare = openai.OpenAI(api_key=API_KEY, base_url=stub.base_url, max_retries=0)
        untapped = [c.model_dump() for c in bare.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True})]

    assert seen["class"] is openai.Stream
    assert seen["iter"] == seen["with"] == seen["next"] == untapped
    assert all(ChatCompletionChunk.model_validate(c) for c in untapped)
    assert tap.usage == {"input": 11, "output": 5, "cache_read": 3}  # the last call's (each call starts afresh)


def test_a_failing_tap_never_reaches_ag2(tracer_provider, span_exporter, monkeypatch, caplog):
    """A usage reader that raises is logged once and swallowed: AG2 gets every chunk and its response as untraced."""
    from ag2_otel import Ag2Instrumentor
    from ag2_otel.instrumentation import telemetry

    monkeypatch.setattr(telemetry, "_logged", set())  # log_once: once per process; count this test's own

    def broken(_chunk):
        raise RuntimeError("tap bug")

    monkeypatch.setattr(provider_tap, "TAPS", tuple(
        provider_tap.SdkCall(c.module, c.attribute, c.response, broken) for c in provider_tap.TAPS))
    body = completion("Paris, of course.", prompt_tokens=20, completion_tokens=5, cached_tokens=9)
    instrumentor = Ag2Instrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        with OpenAIStub([Reply(body=body)]) as stub:
            returned = _wrapper(stub.llm_config(API_KEY, stream=True)).create(messages=[dict(m) for m in MESSAGES])
    finally:
        instrumentor.uninstrument()
    assert returned.choices[0].message.content == "Paris, of course."
    (span,) = _chats(span_exporter)
    assert _usage(span) == {"input_tokens": 20, "output_tokens": 5}  # AG2's numbers, no details
    assert sum("provider tap" in r.getMessage() for r in caplog.records) == 1


def test_an_sdk_error_passes_through_unchanged(instrument, span_exporter):
    import openai

    instrument()
    with OpenAIStub([Reply(status=500, body={"error": {"message": "boom", "type": "server_error"}})]) as stub:
        with pytest.raises(openai.InternalServerError):
            _wrapper(stub.llm_config(API_KEY, stream=True)).create(messages=[dict(m) for m in MESSAGES])
    (span,) = _chats(span_exporter)
    assert span.attributes[k.ERROR_TYPE] == "InternalServerError"
    assert k.USAGE_CACHE_READ_INPUT_TOKENS not in span.attributes


# --- fill(): only what the response lacks ----------------------------------------------------------------------------

def _tap(**usage):
    tap = provider_tap.Tap()
    tap.new_call().update(usage)
    return tap


def test_fill_never_overrides_or_doubles_the_response():
    attrs = {k.USAGE_INPUT_TOKENS: 300, k.USAGE_OUTPUT_TOKENS: 40, k.USAGE_CACHE_READ_INPUT_TOKENS: 128}
    provider_tap.fill(attrs, _tap(input=300, output=40, cache_read=999, reasoning=7))
    assert attrs == {k.USAGE_INPUT_TOKENS: 300, k.USAGE_OUTPUT_TOKENS: 40, k.USAGE_CACHE_READ_INPUT_TOKENS: 128,
                     k.USAGE_REASONING_OUTPUT_TOKENS: 7}


def test_fill_anthropic_input_counts_the_cache_once():
    attrs = {k.USAGE_INPUT_TOKENS: 12, k.USAGE_OUTPUT_TOKENS: 3}
    tap = _tap(input=12, output=3, cache_read=2048, cache_creation=512, input_excludes_cache=True)
    provider_tap.fill(attrs, tap)
    assert attrs[k.USAGE_INPUT_TOKENS] == 12 + 2048 + 512
    provider_tap.fill(attrs, tap)  # a second fill (or a response that already counts the cache) adds nothing
    assert attrs[k.USAGE_INPUT_TOKENS] == 12 + 2048 + 512


def test_fill_usage_only_when_the_response_has_none():
    attrs: dict = {}
    provider_tap.fill(attrs, _tap(input=5, output=2))
    assert attrs == {k.USAGE_INPUT_TOKENS: 5, k.USAGE_OUTPUT_TOKENS: 2}
    attrs = {}
    provider_tap.fill(attrs, provider_tap.Tap())  # no SDK call seen (AG2's cache answered): nothing
    provider_tap.fill(attrs, None)
    assert attrs == {}


def test_fill_served_model_replaces_only_the_request_alias():
    attrs = {k.RESPONSE_MODEL: "claude-sonnet-4-5"}
    provider_tap.fill(attrs, _tap(model="claude-sonnet-4-5-20250929"), "claude-sonnet-4-5")
    assert attrs[k.RESPONSE_MODEL] == "claude-sonnet-4-5-20250929"
    attrs = {k.RESPONSE_MODEL: "gpt-4o-2024-08-06"}
    provider_tap.fill(attrs, _tap(model="other"), "gpt-4o")
    assert attrs[k.RESPONSE_MODEL] == "gpt-4o-2024-08-06"


# --- Anthropic: AnthropicClient drops the cache tokens (plain and streamed) -----------------------------------------------

def _anthropic_usable() -> tuple[bool, str]:
    """AG2 0.14's AnthropicClient always passes ``temperature``, which anthropic>=1's Messages.create no longer takes
    (AG2 declares anthropic<1): there every AG2 Anthropic call raises TypeError before any request."""
    try:
        import anthropic
        from anthropic.resources.messages import Messages
    except ImportError:
        return False, "the anthropic SDK is not installed"
    if "temperature" not in inspect.signature(Messages.create).parameters:
        return False, f"anthropic {anthropic.__version__}: AG2's AnthropicClient cannot call it (AG2 needs anthropic<1)"
    return True, ""


_ANTHROPIC_OK, _ANTHROPIC_WHY = _anthropic_usable()
needs_anthropic = pytest.mark.skipif(not _ANTHROPIC_OK, reason=_ANTHROPIC_WHY)
ANTHROPIC_ALIAS = "claude-sonnet-4-5"
ANTHROPIC_SERVED = "claude-sonnet-4-5-20250929"


@needs_anthropic
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_anthropic_cache_tokens_and_served_model(instrument, span_exporter, stream):
    from tests.anthropic_stub import AnthropicStub, message

    instrument(capture_content=True)
    body = message("Paris.", model=ANTHROPIC_SERVED, input_tokens=12, output_tokens=3, cache_read_input_tokens=2048,
                   cache_creation_input_tokens=512)
    with AnthropicStub([Reply(body=body)]) as stub:
        returned = _wrapper(stub.llm_config(API_KEY, model=ANTHROPIC_ALIAS, stream=stream)).create(
            messages=[dict(m) for m in MESSAGES])
        (request,) = stub.requests
    assert request.body.get("stream", False) is stream
    # AG2's own ChatCompletion is untouched: the uncached input count, the alias
    assert (returned.usage.prompt_tokens, returned.usage.completion_tokens) == (12, 3)
    assert returned.model == ANTHROPIC_ALIAS

    (span,) = _chats(span_exporter, ANTHROPIC_ALIAS)
    # the conventions (and MLflow's Anthropic autolog) count cache reads and writes in the input tokens
    assert _usage(span) == {"input_tokens": 12 + 2048 + 512, "output_tokens": 3,
                            "cache_read.input_tokens": 2048, "cache_creation.input_tokens": 512}
    assert span.attributes[k.RESPONSE_MODEL] == ANTHROPIC_SERVED
    assert span.attributes[k.RESPONSE_ID] == body["id"]


@needs_anthropic
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_anthropic_without_cache_keeps_ag2s_numbers(instrument, span_exporter, stream):
    from tests.anthropic_stub import AnthropicStub, message

    instrument()
    body = message("Paris.", model=ANTHROPIC_SERVED, input_tokens=31, output_tokens=4)
    with AnthropicStub([Reply(body=body)]) as stub:
        _wrapper(stub.llm_config(API_KEY, model=ANTHROPIC_ALIAS, stream=stream)).create(
            messages=[dict(m) for m in MESSAGES])
    (span,) = _chats(span_exporter, ANTHROPIC_ALIAS)
    assert _usage(span) == {"input_tokens": 31, "output_tokens": 4}


def test_anthropic_usage_readers_on_sdk_objects():
    """The readers on the anthropic SDK's own types (these run whatever AG2 version: no AG2 client involved)."""
    anthropic_types = pytest.importorskip("anthropic.types")
    start = anthropic_types.RawMessageStartEvent.model_validate({"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": ANTHROPIC_SERVED, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 2048,
                  "cache_creation_input_tokens": 512}}})
    delta = anthropic_types.RawMessageDeltaEvent.model_validate({
        "type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 3}})
    record: dict = {}
    for event in (start, delta):
        provider_tap._note(record, provider_tap.anthropic_event(event))
    assert record == {"input": 12, "output": 3, "cache_read": 2048, "cache_creation": 512,
                      "input_excludes_cache": True, "model": ANTHROPIC_SERVED}


# --- install / uninstall --------------------------------------------------------------------------------------------------

def test_install_skips_a_missing_sdk(monkeypatch):
    monkeypatch.setattr(provider_tap, "TAPS", (
        provider_tap.SdkCall("no_such_sdk.resources", "Thing.create", None, None),
        provider_tap.SdkCall("openai.resources.chat.completions", "Completions.no_such_method", None, None)))
    assert provider_tap.install() == []
    provider_tap.uninstall()


def test_uninstall_restores_the_sdk_methods(tracer_provider):
    from anthropic.resources.messages import Messages
    from openai.resources.chat.completions import Completions

    from ag2_otel import Ag2Instrumentor

    before = (vars(Completions)["create"], vars(Messages)["create"], vars(Messages)["parse"])
    instrumentor = Ag2Instrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        assert vars(Completions)["create"] is not before[0] and vars(Messages)["create"] is not before[1]
    finally:
        instrumentor.uninstrument()
    assert (vars(Completions)["create"], vars(Messages)["create"], vars(Messages)["parse"]) == before


def test_another_wrapper_on_top_survives_uninstrument(instrument, span_exporter, tracer_provider):
    """Another instrumentation wraps the same SDK method after us (as opentelemetry-instrumentation-openai-v2 does):
    uninstrument leaves its wrapper in place (ours inside it is switched off), instrument switches ours back on
    without stacking a second one."""
    from openai.resources.chat.completions import Completions

    from ag2_otel import Ag2Instrumentor

    original = vars(Completions)["create"]
    calls = []

    def theirs(wrapped, instance, args, kwargs):
        calls.append(kwargs.get("model"))
        return wrapped(*args, **kwargs)

    instrumentor = instrument()
    ours = vars(Completions)["create"]
    wrapt.wrap_function_wrapper(Completions, "create", theirs)
    try:
        on_top = vars(Completions)["create"]
        instrumentor.uninstrument()
        assert vars(Completions)["create"] is on_top  # their wrapper kept
        instrumentor.instrument(tracer_provider=tracer_provider)
        assert vars(Completions)["create"] is on_top and on_top.__wrapped__ is ours  # no second layer of ours
        body = completion("Paris.", prompt_tokens=10, completion_tokens=2, cached_tokens=4)
        with OpenAIStub([Reply(body=body)]) as stub:
            _wrapper(stub.llm_config(API_KEY, stream=True)).create(messages=[dict(m) for m in MESSAGES])
        assert calls == [MODEL]
        (span,) = _chats(span_exporter)
        assert span.attributes[k.USAGE_CACHE_READ_INPUT_TOKENS] == 4  # ours, inside theirs, is on again
    finally:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        setattr(Completions, "create", original)  # take theirs (and ours inside it) out
        provider_tap._installed.clear()
