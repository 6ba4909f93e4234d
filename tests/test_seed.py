"""The seed: MLflow's "Tracing AG2" calculator example with ``ag2_otel.autolog()`` in place of
``mlflow.ag2.autolog()``, sync and async, the totals read back with MLflow's public API right after the chat.

This is the test every cell of the compatibility matrix runs (``.ci/run``, ``scripts/compat_grid.py``): AG2 classic
0.9 → 0.14 under each distribution name × MLflow 3.1 → newest, full ``mlflow`` or only ``mlflow-tracing`` /
``mlflow-skinny``. So it uses only what every supported release has: the scripted model client (real usage numbers
through AG2's own ``OpenAIWrapper``), ``mlflow.get_last_active_trace_id``, ``mlflow.get_trace``,
``TraceInfo.token_usage``, span attributes.

Backends: ``local`` (the embedded sqlite store; needs the full ``mlflow`` distribution, skipped with the reason where
only mlflow-tracing/skinny is installed, which have no store) and ``server`` (a real ``mlflow server``; with
``AG2_OTEL_TEST_MLFLOW_SERVER_PYTHON`` it runs from another interpreter, e.g. the main venv's full MLflow).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import uuid
from typing import Annotated

import mlflow
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import ag2_otel
from ag2_otel.scripted import ScriptedClient, Step, ToolCall, scripted_llm_config

SEED_QUESTION = "What is (44232 + 13312 / (232 - 32)) * 5?"
SCRIPT = [
    Step(tool_calls=[ToolCall("calculator", {"a": 232, "b": 32, "operator": "-"}, id="call-1")],
         prompt_tokens=120, completion_tokens=21),
    Step(tool_calls=[ToolCall("calculator", {"a": 13312, "b": 200, "operator": "/"}, id="call-2")],
         prompt_tokens=160, completion_tokens=22),
    Step(text="The result is 44298. TERMINATE", prompt_tokens=200, completion_tokens=9),
]
TOTAL = {"input_tokens": 480, "output_tokens": 52, "total_tokens": 532}
PER_CALL = [
    {"input_tokens": 120, "output_tokens": 21, "total_tokens": 141},
    {"input_tokens": 160, "output_tokens": 22, "total_tokens": 182},
    {"input_tokens": 200, "output_tokens": 9, "total_tokens": 209},
]
SPANS = 12  # workflow + 6 agent turns + 3 model calls + 2 tool calls


def _full_mlflow() -> bool:
    try:
        importlib.metadata.version("mlflow")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def calculator_agents():
    """The example's two agents and its calculator tool, on the scripted model."""
    from autogen import ConversableAgent, register_function

    assistant = ConversableAgent(
        "assistant",
        system_message="You are a helpful AI assistant. You can help with simple calculations. Reply TERMINATE when done.",
        llm_config=scripted_llm_config(),
    )
    user_proxy = ConversableAgent(
        "user", llm_config=False, human_input_mode="NEVER",
        is_termination_msg=lambda m: (m.get("content") or "").rstrip().endswith("TERMINATE"),
    )

    def calculator(a: int, b: int, operator: Annotated[str, "operator"]) -> int:
        return {"+": a + b, "-": a - b, "*": a * b, "/": int(a / b) if b else 0}[operator]

    register_function(calculator, caller=assistant, executor=user_proxy, name="calculator",
                      description="A simple calculator")
    assistant.register_model_client(ScriptedClient, script=list(SCRIPT))  # after register_function (it rebuilds)
    return user_proxy, assistant


@pytest.fixture(params=["local", "server"])
def tracking(request, tmp_path):
    """The tracking URI for this run, a fresh experiment; the previous URI restored after."""
    if request.param == "local":
        if not _full_mlflow():
            pytest.skip("only mlflow-tracing/mlflow-skinny installed: no local store, they write to a server")
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    else:
        uri = request.getfixturevalue("mlflow_server")
    # mlflow-tracing's get_tracking_uri() with no URI set imports its file store, which needs sqlparse (not among
    # mlflow-tracing's dependencies): a user of it sets the server's URI first, and so do we
    previous = mlflow.get_tracking_uri() if _full_mlflow() else None
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(f"seed-{uuid.uuid4().hex[:8]}")
    yield uri
    if previous is not None:
        mlflow.set_tracking_uri(previous)


@pytest.fixture
def provider():
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer_provider.exporter = exporter
    yield tracer_provider
    ag2_otel.autolog(disable=True)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_seed(tracking, provider, mode):
    ag2_otel.autolog(tracer_provider=provider)
    user_proxy, assistant = calculator_agents()
    if mode == "sync":
        user_proxy.initiate_chat(assistant, message=SEED_QUESTION, max_turns=10)
    else:
        asyncio.run(user_proxy.a_initiate_chat(assistant, message=SEED_QUESTION, max_turns=10))

    # the seed's snippet, right after the chat
    trace = mlflow.get_trace(mlflow.get_last_active_trace_id())
    assert trace is not None, "mlflow.get_trace(mlflow.get_last_active_trace_id()) returned None right after the chat"
    assert trace.info.token_usage == TOTAL
    per_call = [span.get_attribute("mlflow.chat.tokenUsage") for span in trace.data.spans
                if span.get_attribute("mlflow.chat.tokenUsage")]
    assert per_call == PER_CALL

    assert len(trace.data.spans) == SPANS
    root = next(s for s in trace.data.spans if s.parent_id is None)
    assert root.name == ("invoke_workflow initiate_chat" if mode == "sync" else "invoke_workflow a_initiate_chat")
    assert sorted({s.span_type for s in trace.data.spans}) == ["AGENT", "CHAIN", "CHAT_MODEL", "TOOL"]
    assert len({s.context.trace_id for s in provider.exporter.get_finished_spans()}) == 1  # one chat, one trace
