"""Composition with OpenTelemetry's own ``opentelemetry-instrumentation-openai-v2``: it wraps the openai SDK call one
level below AG2's ``OpenAIWrapper.create``, so each model call gets its ``chat`` span (with usage) as a child of ours.
MLflow's totals and our per-agent / per-model breakdown must count each call once (``build_trace_record`` carries
"usage above" down the walk, MLflow's own rule).

Runs only where that package is installed (not in the project's main venv, where it would load under
``opentelemetry-instrument`` in the zero-code tests):

    python -m venv .venv-openai-v2
    .venv-openai-v2/bin/pip install -e '.[dev]' opentelemetry-instrumentation-openai-v2==2.4b0 \\
        opentelemetry-util-genai==1.1b0   # 2.4b0 imports util.genai.instruments, which util-genai 1.2b0+ renamed
    .venv-openai-v2/bin/python -m pytest -q -p no:cacheprovider tests/test_openai_v2_composition.py

Real AG2 OpenAIClient, the real openai SDK over HTTP to tests/openai_stub.py, both instrumentations on one SDK
TracerProvider, the MLflow sink writing a local sqlite store.
"""

from __future__ import annotations

import json

import pytest

openai_v2 = pytest.importorskip("opentelemetry.instrumentation.openai_v2")

import mlflow  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

from ag2_otel import Ag2Instrumentor  # noqa: E402
from ag2_otel import semconv as k  # noqa: E402
from ag2_otel.instrumentation.telemetry import SCOPE  # noqa: E402
from ag2_otel.sinks.mlflow_processor import MlflowSpanProcessor  # noqa: E402
from ag2_otel.usage import get_token_usage  # noqa: E402
from tests.openai_stub import OpenAIStub, Reply, completion, tool_call  # noqa: E402

API_KEY = "sk-openai-v2-composition-SECRET-9f3a"
MODEL = "gpt-4o-mini"

# what the stub serves: two model calls of a calculator chat (the first with usage details)
CALLS = [tool_call("calculator", {"a": 232, "b": 32, "op": "-"}, "call_v2")]
SERVED = [
    completion(None, tool_calls=CALLS, prompt_tokens=90, completion_tokens=18, cached_tokens=64, reasoning_tokens=8),
    completion("232 - 32 = 200.", prompt_tokens=130, completion_tokens=9),
]
SERVED_INPUT = sum(b["usage"]["prompt_tokens"] for b in SERVED)
SERVED_OUTPUT = sum(b["usage"]["completion_tokens"] for b in SERVED)
SERVED_CACHED = 64


@pytest.fixture(scope="module")
def _store_dir(tmp_path_factory):
    """One sqlite store for the module (creating one takes ~30 s on this box); cwd moved so ./mlruns lands in tmp."""
    import os

    root = tmp_path_factory.mktemp("mlflow_openai_v2")
    previous_uri, previous_cwd = mlflow.get_tracking_uri(), os.getcwd()
    os.chdir(root)
    try:
        yield root
    finally:
        mlflow.set_tracking_uri(previous_uri)
        os.chdir(previous_cwd)


@pytest.fixture
def store(_store_dir, request):
    mlflow.set_tracking_uri(f"sqlite:///{_store_dir / 'mlflow.db'}")
    mlflow.set_experiment("openai-v2 " + request.node.callspec.id)  # one experiment per case
    return _store_dir


@pytest.fixture(params=["ag2-otel first", "openai-v2 first"])
def both(request, store):
    """One SDK TracerProvider: an in-memory copy of every span, and the MLflow sink. Both instrumentations on it, in
    either order (the one instrumented last wraps the SDK method outermost)."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    processor = MlflowSpanProcessor(wait_for_write=True)
    provider.add_span_processor(processor)
    ours, theirs = Ag2Instrumentor(), openai_v2.OpenAIInstrumentor()
    order = [ours, theirs] if request.param == "ag2-otel first" else [theirs, ours]
    for instrumentor in order:
        kwargs = {"capture_content": True} if instrumentor is ours else {}
        instrumentor.instrument(tracer_provider=provider, **kwargs)
    try:
        yield provider, exporter
    finally:
        for instrumentor in reversed(order):
            instrumentor.uninstrument()
        provider.shutdown()


def _calculator_chat(llm_config):
    from autogen import ConversableAgent, register_function

    assistant = ConversableAgent("assistant", llm_config=llm_config, system_message="You are a calculator.",
                                 human_input_mode="NEVER")
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER")

    def calculator(a: int, b: int, op: str) -> int:
        return {"+": a + b, "-": a - b}[op]

    register_function(calculator, caller=assistant, executor=user, name="calculator", description="calculator")
    return user.initiate_chat(assistant, message="What is 232 - 32?", max_turns=2, silent=True)


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


def _ours(span) -> bool:
    return span.instrumentation_scope is not None and span.instrumentation_scope.name == SCOPE


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_openai_v2_child_spans_are_not_double_counted(both, stream):
    provider, exporter = both
    with OpenAIStub([Reply(body=b) for b in SERVED]) as stub:
        result = _calculator_chat(stub.llm_config(API_KEY, stream=stream))
        assert len(stub.requests) == 2
    assert result.chat_history[-1]["content"] == "232 - 32 = 200."

    spans = list(exporter.get_finished_spans())
    assert len({s.context.trace_id for s in spans}) == 1
    by_id = {s.context.span_id: s for s in spans}
    chats = [s for s in spans if s.attributes.get(k.OPERATION_NAME) == "chat"]
    mine = sorted((s for s in chats if _ours(s)), key=lambda s: s.start_time)
    theirs = sorted((s for s in chats if not _ours(s)), key=lambda s: s.start_time)
    assert len(mine) == len(theirs) == 2

    # (a) the tree: each openai-v2 span is the child of our chat span for the same call
    for our_span, their_span in zip(mine, theirs):
        assert their_span.kind is SpanKind.CLIENT
        assert their_span.parent is not None and their_span.parent.span_id == our_span.context.span_id
        assert by_id[our_span.parent.span_id].name == "invoke_agent assistant"
    # both report the call's usage: without the "usage above" rule every token would count twice
    for our_span, their_span, served in zip(mine, theirs, SERVED):
        for span in (our_span, their_span):
            assert span.attributes[k.USAGE_INPUT_TOKENS] == served["usage"]["prompt_tokens"]
            assert span.attributes[k.USAGE_OUTPUT_TOKENS] == served["usage"]["completion_tokens"]
    assert mine[0].attributes[k.USAGE_CACHE_READ_INPUT_TOKENS] == SERVED_CACHED  # the tap, also under openai-v2
    assert mine[0].attributes[k.USAGE_REASONING_OUTPUT_TOKENS] == 8

    # (b) MLflow: the trace's totals and our breakdown equal what the stub served, once
    trace_id = mlflow.get_last_active_trace_id()
    trace = mlflow.get_trace(trace_id)
    assert trace is not None
    assert trace.info.token_usage == {"input_tokens": SERVED_INPUT, "output_tokens": SERVED_OUTPUT,
                                      "total_tokens": SERVED_INPUT + SERVED_OUTPUT,
                                      "cache_read_input_tokens": SERVED_CACHED}
    usage = get_token_usage(trace_id)
    assert usage["mlflow_token_usage"] == trace.info.token_usage
    total = usage["total"]
    assert (total["input_tokens"], total["output_tokens"], total["calls"]) == (SERVED_INPUT, SERVED_OUTPUT, 2)
    assert total["cache_read_input_tokens"] == SERVED_CACHED
    assert set(usage["by_agent"]) == {"assistant"}
    assert set(usage["by_model"]) == {MODEL}
    for breakdown in (usage["by_agent"]["assistant"], usage["by_model"][MODEL]):
        assert (breakdown["input_tokens"], breakdown["output_tokens"], breakdown["calls"]) == (
            SERVED_INPUT, SERVED_OUTPUT, 2)

    # both chat spans of each call are in the MLflow trace, the openai-v2 one under ours
    stored = trace.data.spans
    ids = {s.span_id: s for s in stored}
    chat_models = [s for s in stored if s.span_type == "CHAT_MODEL"]
    assert len(chat_models) == 4
    nested = [s for s in chat_models if ids.get(s.parent_id) is not None and ids[s.parent_id].span_type == "CHAT_MODEL"]
    assert len(nested) == 2
    # MLflow's own rule on read: a span with usage hides its children's, so the per-span sum over the top-level
    # CHAT_MODEL spans is the total as well
    top = [s for s in chat_models if s not in nested]
    assert sum(_json(s.get_attribute("mlflow.chat.tokenUsage"))["input_tokens"] for s in top) == SERVED_INPUT
    assert API_KEY not in json.dumps([s.to_dict() for s in stored])
