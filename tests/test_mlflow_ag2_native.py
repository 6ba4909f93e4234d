"""AG2's own ``autogen.opentelemetry`` spans -> MlflowSpanProcessor -> a correct MLflow trace with exact totals.

AG2's module patches ``OpenAIWrapper.create`` globally and never unpatches, so the chat runs in a subprocess; this
process then reads the store the subprocess wrote.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from mlflow import MlflowClient

from ag2_otel.mapping import mlflow_trace as m
from ag2_otel.usage import get_token_usage

STEPS = [(11, 4), (20, 6)]  # (prompt, completion) tokens of the two scripted model calls

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["MLFLOW_MODEL_CATALOG_URI"] = ""  # offline box: no pricing catalog download
    import mlflow
    from opentelemetry.sdk.trace import TracerProvider
    from autogen import ConversableAgent, register_function
    from autogen.opentelemetry import instrument_agent, instrument_llm_wrapper
    from ag2_otel.scripted import Step, ToolCall
    from tests.scripted_llm import scripted_llm_config
    from ag2_otel.sinks.mlflow_processor import MlflowSpanProcessor

    mlflow.set_tracking_uri(sys.argv[1])
    provider = TracerProvider()
    provider.add_span_processor(MlflowSpanProcessor())

    def add(a: int, b: int) -> int:
        return a + b

    steps = json.loads(sys.argv[2])
    assistant = ConversableAgent("assistant", llm_config=scripted_llm_config([
        Step(tool_calls=[ToolCall("add", {"a": 1, "b": 2})], prompt_tokens=steps[0][0], completion_tokens=steps[0][1]),
        Step(text="3 TERMINATE", prompt_tokens=steps[1][0], completion_tokens=steps[1][1]),
    ]))
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER",
                            is_termination_msg=lambda msg: "TERMINATE" in (msg.get("content") or ""))
    register_function(add, caller=assistant, executor=user, description="Add two integers.")
    instrument_llm_wrapper(tracer_provider=provider, capture_messages=True)
    instrument_agent(assistant, tracer_provider=provider)
    instrument_agent(user, tracer_provider=provider)
    result = user.initiate_chat(assistant, message="add 1 and 2", max_turns=3)

    # the seed snippet, right after the conversation returns
    trace_id = mlflow.get_last_active_trace_id()
    trace = mlflow.get_trace(trace_id)
    print(json.dumps({"trace_id": trace_id, "token_usage": trace.info.token_usage,
                      "chat_id": str(result.chat_id),
                      "span_usage": [s.get_attribute("mlflow.chat.tokenUsage") for s in trace.data.spans]}))
    provider.shutdown()
    """
)


def test_ag2_native_instrumentation_to_mlflow(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = tmp_path / "run_chat.py"
    script.write_text(SCRIPT)
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(script), uri, json.dumps(STEPS)], cwd=tmp_path, capture_output=True, text=True,
        timeout=240, env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    expected = {"input_tokens": sum(s[0] for s in STEPS), "output_tokens": sum(s[1] for s in STEPS),
                "total_tokens": sum(sum(s) for s in STEPS)}
    assert out["token_usage"] == expected  # read in the subprocess right after the chat returned

    trace = MlflowClient(tracking_uri=uri).get_trace(out["trace_id"])  # and from the store, in this process
    assert trace.info.token_usage == expected
    spans = trace.data.spans
    by_id = {s.span_id: s for s in spans}
    root = next(s for s in spans if s.parent_id is None)
    assert root.name == "conversation user" and root.span_type == m.CHAIN
    assert root.get_attribute(m.MLFLOW_CHAT_USAGE) is None  # AG2's roll-up kept out of the aggregation
    assert root.get_attribute("gen_ai.usage.input_tokens") == expected["input_tokens"]  # original kept
    chats = [s for s in spans if s.span_type == m.CHAT_MODEL]
    assert [s.get_attribute(m.MLFLOW_CHAT_USAGE) for s in chats] == [
        {"input_tokens": i, "output_tokens": o, "total_tokens": i + o} for i, o in STEPS]
    assert all(s.get_attribute(m.MLFLOW_LLM_MODEL) == "scripted-model" for s in chats)
    assert all(by_id[s.parent_id].span_type == m.AGENT and by_id[s.parent_id].name == "invoke_agent assistant"
               for s in chats)
    tools = [s for s in spans if s.span_type == m.TOOL]
    assert [t.name for t in tools] == ["execute_tool add"]
    assert tools[0].inputs == {"a": 1, "b": 2} and tools[0].outputs == "3"  # the string the tool span recorded
    assert {s.span_type for s in spans} <= {m.CHAIN, m.AGENT, m.CHAT_MODEL, m.TOOL}
    assert trace.info.trace_metadata[m.MLFLOW_TRACE_SESSION] == out["chat_id"]
    usage = get_token_usage(out["trace_id"], tracking_uri=uri)  # per-agent / per-model, via the public API
    assert usage["by_agent"]["assistant"]["total_tokens"] == expected["total_tokens"]
    assert usage["by_agent"]["assistant"]["calls"] == len(STEPS)
    assert usage["by_model"]["scripted-model"]["input_tokens"] == expected["input_tokens"]
