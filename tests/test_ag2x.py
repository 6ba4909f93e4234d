"""AG2 1.x (``import ag2``) through ``ag2_otel.autolog()``: AG2's own TelemetryMiddleware on every agent, exact MLflow
traces read back from the real local sqlite store. AG2 1.2's OpenAIConfig drives the real openai SDK over HTTP to the
local OpenAI-compatible server (tests/scripted_llm.py).

Runs in a venv with ``ag2[openai,tracing]`` 1.x (CI: .venv-ag2x); skipped elsewhere.
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("ag2.middleware.builtin.telemetry",
                    reason="AG2 1.x with its tracing extra is not installed (pip install 'ag2[openai,tracing]==1.2.1')")

import mlflow  # noqa: E402

import ag2_otel  # noqa: E402
from ag2_otel.mapping.mlflow_trace import build_trace_record  # noqa: E402
from ag2_otel.scripted import Step, ToolCall  # noqa: E402
from tests import ag2x_helpers as h  # noqa: E402


@pytest.fixture(scope="module")
def _store_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ag2x-store")  # one sqlite store per module: creating one takes seconds


@pytest.fixture
def store(_store_dir):
    previous = h.use_local_store(_store_dir)  # a fresh experiment per test
    yield
    mlflow.set_tracking_uri(previous)


@pytest.fixture
def provider():
    yield h.memory_provider()
    ag2_otel.autolog(disable=True)


def _names(provider) -> list[str]:
    return sorted(s.name for s in provider.exporter.get_finished_spans())


def _one_trace_id(provider) -> int:
    ids = {s.context.trace_id for s in provider.exporter.get_finished_spans()}
    assert len(ids) == 1, ids
    return ids.pop()


def _assert_calculator_trace(trace, *, root="invoke_agent assistant"):
    assert trace.info.token_usage == h.TOTAL
    assert h.token_usages(trace) == h.PER_CALL
    by_type = {}
    for span in trace.data.spans:
        by_type.setdefault(span.span_type, []).append(span.name)
    assert by_type["AGENT"] == [root]
    assert sorted(by_type["TOOL"]) == ["execute_tool calculator"] * 2
    assert by_type["CHAT_MODEL"] == ["chat scripted-model"] * 3
    assert by_type["LLM"] == ["record_usage model_call"] * 3  # AG2's accounting records: typed, never counted
    assert set(by_type) == {"AGENT", "TOOL", "CHAT_MODEL", "LLM"}
    assert trace.info.request_preview == h.QUESTION
    assert trace.info.response_preview == h.ANSWER
    usage = ag2_otel.get_token_usage(trace.info.trace_id)  # tags (one log_spans) or metadata (start_trace)
    total = usage["total"]
    assert total["reasoning_output_tokens"] == 3 and total["calls"] == 3  # 1.x's thinking_tokens key
    by_agent = usage["by_agent"]
    assert {agent: usage["total_tokens"] for agent, usage in by_agent.items()} == {root.split(" ", 1)[1]: 532}


def test_ask_calculator_exact_totals_agent_created_before_autolog(store, provider):
    agent = h.calculator_agent()  # built before autolog(): traced all the same
    ag2_otel.autolog(tracer_provider=provider)
    reply = asyncio.run(agent.ask(h.QUESTION))
    assert reply.body == h.ANSWER

    trace = mlflow.get_trace(mlflow.get_last_active_trace_id())
    _assert_calculator_trace(trace)
    assert trace.info.trace_metadata["mlflow.trace.session"] == str(reply.context.stream.id)
    assert trace.info.trace_id == f"tr-{_one_trace_id(provider):032x}"
    root = next(s for s in trace.data.spans if s.parent_id is None)
    assert root.inputs == {"messages": [{"role": "user", "content": h.QUESTION}]}  # MLflow's chat shape
    assert root.outputs == {"messages": [{"role": "assistant", "content": h.ANSWER}]}


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "streamed"])
def test_run_calculator_exact_totals(store, provider, streaming):
    ag2_otel.autolog(tracer_provider=provider)
    agent = h.calculator_agent(streaming=streaming)  # built after autolog()

    async def main():
        async with agent.run(h.QUESTION) as handle:
            return await handle.result()

    reply = asyncio.run(main())
    assert reply.body == h.ANSWER
    _assert_calculator_trace(h.mlflow_trace_of(_one_trace_id(provider)))


def test_follow_up_ask_is_its_own_trace_in_the_same_session(store, provider):
    ag2_otel.autolog(tracer_provider=provider)
    agent = h.calculator_agent([*h.SCRIPT, Step(text="44298 again.", prompt_tokens=300, completion_tokens=4)])

    async def main():
        first = await agent.ask(h.QUESTION)
        return first, await first.ask("Once more?")

    first, second = asyncio.run(main())
    traces = sorted({s.context.trace_id for s in provider.exporter.get_finished_spans()},
                    key=lambda t: min(s.start_time for s in provider.exporter.get_finished_spans()
                                      if s.context.trace_id == t))
    assert len(traces) == 2
    follow_up = h.mlflow_trace_of(traces[1])
    assert follow_up.info.token_usage == {"input_tokens": 300, "output_tokens": 4, "total_tokens": 304}
    assert follow_up.info.request_preview == "Once more?"  # the turn's own message, not the history before it
    sessions = {h.mlflow_trace_of(t).info.trace_metadata["mlflow.trace.session"] for t in traces}
    assert sessions == {str(first.context.stream.id)}


SUBTASK_SCRIPT = [
    Step(tool_calls=[ToolCall("run_subtask", {"task": "Compute 232 - 32"}, id="call-s")],
         prompt_tokens=100, completion_tokens=10),
    Step(tool_calls=[ToolCall("calculator", {"a": 232, "b": 32, "operator": "-"}, id="call-w")],
         prompt_tokens=40, completion_tokens=6),  # the worker's calls
    Step(text="200", prompt_tokens=50, completion_tokens=2),
    Step(text="It is 200.", prompt_tokens=130, completion_tokens=8),
]
SUBTASK_TOTAL = {"input_tokens": 320, "output_tokens": 26, "total_tokens": 346}


def test_subtask_spend_counted_once(store, provider):
    from ag2.agent import TaskConfig

    ag2_otel.autolog(tracer_provider=provider)
    agent = h.calculator_agent(SUBTASK_SCRIPT, tasks=TaskConfig())
    reply = asyncio.run(agent.ask("What is 232 - 32? Use a sub-task."))
    assert reply.body == "It is 200."
    usage = asyncio.run(reply.usage())
    assert (usage.total.prompt_tokens, usage.total.completion_tokens) == (320, 26)  # what AG2 itself accounts

    trace = h.mlflow_trace_of(_one_trace_id(provider))  # the worker's turn is in the parent's trace
    assert trace.info.token_usage == SUBTASK_TOTAL
    names = [s.name for s in trace.data.spans]
    worker = next(n for n in names if n.startswith("invoke_agent subtask-"))
    assert names.count("record_usage subtask") == 1 and names.count("chat scripted-model") == 4
    by_agent = ag2_otel.get_token_usage(trace.info.trace_id)["by_agent"]
    assert by_agent["assistant"]["total_tokens"] == 248 and by_agent[worker.split(" ", 1)[1]]["total_tokens"] == 98


def test_subtask_rollup_counted_when_the_worker_is_not_traced(provider):
    """The issue's case: TelemetryMiddleware attached by hand to the parent only. The worker's spend reaches the
    trace only as a ``record_usage subtask`` span: counted (it was lost: 58/28 stored vs 95/32 served)."""
    from ag2.agent import TaskConfig
    from ag2.middleware import TelemetryMiddleware

    agent = h.calculator_agent(SUBTASK_SCRIPT, tasks=TaskConfig(),
                               middleware=[TelemetryMiddleware(tracer_provider=provider, agent_name="assistant")])
    asyncio.run(agent.ask("What is 232 - 32? Use a sub-task."))
    spans = provider.exporter.get_finished_spans()
    assert not any(s.name.startswith("invoke_agent subtask-") for s in spans)
    record = build_trace_record(spans)
    assert record.usage.to_mlflow() == SUBTASK_TOTAL
    rollup = next(r for r in record.spans if r.name == "record_usage subtask")
    assert rollup.span_type == "LLM" and rollup.usage.total_tokens == 98


def test_agent_as_tool_is_one_trace_counted_once(store, provider):
    from ag2 import Agent

    ag2_otel.autolog(tracer_provider=provider)
    worker = Agent("worker", "You compute.", config=h.openai_config([Step(text="200", prompt_tokens=30,
                                                                          completion_tokens=3)]))
    lead = Agent("lead", "You delegate.", tools=[worker.as_tool(description="Ask the worker")],
                 config=h.openai_config([
                     Step(tool_calls=[ToolCall("task_worker", {"objective": "232 - 32?"}, id="call-d")],
                          prompt_tokens=70, completion_tokens=7),
                     Step(text="The worker says 200.", prompt_tokens=90, completion_tokens=6)]))
    assert lead.tools[0].name == "task_worker"  # what the script calls (AG2 1.2's name for it)
    reply = asyncio.run(lead.ask("Delegate 232 - 32."))
    assert reply.body == "The worker says 200."
    trace = h.mlflow_trace_of(_one_trace_id(provider))
    assert trace.info.token_usage == {"input_tokens": 190, "output_tokens": 16, "total_tokens": 206}
    agents = sorted(s.name for s in trace.data.spans if s.span_type == "AGENT")
    assert agents == ["invoke_agent lead", "invoke_agent worker"]


def test_failing_tool_is_an_error_span_and_the_chat_goes_on(store, provider):
    from ag2 import Agent

    def divide(a: int, b: int) -> float:
        """Divide a by b"""
        return a / b

    ag2_otel.autolog(tracer_provider=provider)
    agent = Agent("assistant", h.INSTRUCTIONS, tools=[divide], config=h.openai_config([
        Step(tool_calls=[ToolCall("divide", {"a": 1, "b": 0}, id="call-x")], prompt_tokens=50, completion_tokens=5),
        Step(text="Division by zero is undefined.", prompt_tokens=80, completion_tokens=7)]))
    reply = asyncio.run(agent.ask("What is 1 / 0?"))
    assert reply.body == "Division by zero is undefined."
    trace = h.mlflow_trace_of(_one_trace_id(provider))
    assert trace.info.token_usage == {"input_tokens": 130, "output_tokens": 12, "total_tokens": 142}
    tool = next(s for s in trace.data.spans if s.span_type == "TOOL")
    assert tool.status.status_code.value == "ERROR" and "division by zero" in tool.status.description
    assert trace.info.response_preview == "Division by zero is undefined."


def test_concurrent_asks_never_share_a_trace(store, provider):
    ag2_otel.autolog(tracer_provider=provider)
    agents = [h.calculator_agent(name=f"assistant{i}") for i in range(4)]

    async def main():
        return await asyncio.gather(*(agent.ask(h.QUESTION) for agent in agents))

    replies = asyncio.run(main())
    assert [r.body for r in replies] == [h.ANSWER] * 4
    trace_ids = {s.context.trace_id for s in provider.exporter.get_finished_spans()}
    assert len(trace_ids) == 4
    roots = set()
    for trace_id in trace_ids:
        trace = h.mlflow_trace_of(trace_id)
        root = next(s.name for s in trace.data.spans if s.parent_id is None)
        _assert_calculator_trace(trace, root=root)
        roots.add(root)
    assert roots == {f"invoke_agent assistant{i}" for i in range(4)}


def test_never_twice_on_one_agent_and_disable_detaches(store, provider):
    from ag2.agent import Agent
    from ag2.middleware import TelemetryMiddleware

    original = vars(Agent)["_turn_scope"]
    ag2_otel.autolog(tracer_provider=provider)
    ag2_otel.autolog(tracer_provider=provider)  # twice: still one middleware per turn
    own = h.calculator_agent(middleware=[TelemetryMiddleware(tracer_provider=provider, agent_name="mine")])
    asyncio.run(own.ask(h.QUESTION))
    per_call = h.calculator_agent()
    asyncio.run(per_call.ask(h.QUESTION, middleware=[TelemetryMiddleware(tracer_provider=provider,
                                                                         agent_name="per-call")]))
    from ag2 import Plugin

    plugin = Plugin(middleware=[TelemetryMiddleware(tracer_provider=provider, agent_name="plugin")])
    asyncio.run(h.calculator_agent().ask(h.QUESTION, plugins=[plugin]))
    plain = h.calculator_agent()
    asyncio.run(plain.ask(h.QUESTION))
    agent_spans = [n for n in _names(provider) if n.startswith("invoke_agent")]
    assert agent_spans == ["invoke_agent assistant", "invoke_agent mine", "invoke_agent per-call",
                           "invoke_agent plugin"]
    assert _names(provider).count("chat scripted-model") == 12

    ag2_otel.autolog(disable=True)
    assert vars(Agent)["_turn_scope"] is original
    provider.exporter.clear()
    asyncio.run(h.calculator_agent().ask(h.QUESTION))
    assert provider.exporter.get_finished_spans() == ()


def test_content_switch_and_redaction(store, provider):
    ag2_otel.autolog(tracer_provider=provider, capture_content=False)
    asyncio.run(h.calculator_agent().ask(h.QUESTION))
    content_keys = {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.call.arguments",
                    "gen_ai.tool.call.result"}
    spans = provider.exporter.get_finished_spans()
    assert spans and not any(content_keys & set(s.attributes) for s in spans)

    provider.exporter.clear()

    def redact(key, text):
        return None if key == "gen_ai.tool.call.arguments" else text.replace("44232", "<n>")

    ag2_otel.autolog(tracer_provider=provider, redact=redact)
    asyncio.run(h.calculator_agent().ask(h.QUESTION))
    spans = provider.exporter.get_finished_spans()
    recorded = " ".join(str(v) for s in spans for v in s.attributes.values())
    assert "<n>" in recorded and "44232" not in recorded
    tools = [s for s in spans if s.name == "execute_tool calculator"]
    assert tools and all("gen_ai.tool.call.arguments" not in s.attributes for s in tools)
    assert all(s.attributes.get("gen_ai.tool.call.result") for s in tools)  # other content still recorded


def test_instrumentor_alone_content_off_by_default(provider):
    from ag2_otel import Ag2Instrumentor

    instrumentor = Ag2Instrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        asyncio.run(h.calculator_agent().ask(h.QUESTION))
    finally:
        instrumentor.uninstrument()
    spans = provider.exporter.get_finished_spans()
    assert [s.name for s in spans if s.name.startswith("invoke_agent")] == ["invoke_agent assistant"]
    assert not any("gen_ai.input.messages" in s.attributes for s in spans)


def test_opentelemetry_instrument_dependency_check_passes_for_ag2x():
    """opentelemetry-instrument reads `instruments-any` from our distribution's metadata: ag2 1.x satisfies it."""
    from importlib.metadata import distribution, version

    from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

    from ag2_otel import package

    assert package.ag2x_version() == version("ag2")
    assert get_dist_dependency_conflicts(distribution("ag2-otel")) is None


def test_demo_ag2x_offline(tmp_path):
    """``ag2-otel demo --ag2x``: the 1.x calculator on the in-process transport, into ./mlflow.db, exact totals."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AG2_OTEL_", "MLFLOW_"))}  # no store
    env.update(MLFLOW_MODEL_CATALOG_URI="", MLFLOW_DISABLE_TELEMETRY="true")  # of an earlier test (set_tracking_uri)
    done = subprocess.run([sys.executable, "-m", "ag2_otel.cli", "demo", "--ag2x"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MLflow token_usage: {'input_tokens': 1120, 'output_tokens': 120, 'total_tokens': 1240, " \
           "'cache_read_input_tokens': 128}" in done.stdout
    assert done.stdout.count("execute_tool calculator (TOOL)") == 4 and "record_usage model_call (LLM)" in done.stdout
    assert (tmp_path / "mlflow.db").exists()


def test_hub_traceparent_joins_the_callers_trace(store, provider):
    """A network hub hands a turn the envelope span's W3C traceparent (context.dependencies, as AG2's network handler
    does): the remote agent's turn is part of the caller's trace, its root's parent is the remote span."""
    from ag2._telemetry_consts import TRACEPARENT_DEP_KEY

    trace_id, span_id = 0x0AF7651916CD43DD8448EB211C80319C, 0x00F067AA0BA902B7
    ag2_otel.autolog(tracer_provider=provider)
    reply = asyncio.run(h.calculator_agent().ask(
        h.QUESTION, dependencies={TRACEPARENT_DEP_KEY: f"00-{trace_id:032x}-{span_id:016x}-01"}))
    assert reply.body == h.ANSWER
    assert _one_trace_id(provider) == trace_id
    root = next(s for s in provider.exporter.get_finished_spans() if s.name == "invoke_agent assistant")
    assert root.parent.span_id == span_id and root.parent.is_remote
    # in MLflow this process's part is its own trace (a root with a remote parent gets a fresh MLflow id: another
    # process may write the same OTel trace), tagged with the OTel trace id it belongs to
    trace = mlflow.get_trace(mlflow.get_last_active_trace_id())
    assert trace.info.tags["ag2_otel.otel_trace_id"] == f"{trace_id:032x}"
    _assert_calculator_trace(trace)


ZERO_CODE_APP = """
import asyncio
from ag2 import Agent
from ag2_otel.demo import AG2X_QUESTION, AG2X_SCRIPT, scripted_openai_config

def calculator(a: int, b: int, operator: str) -> int:
    '''A simple calculator'''
    return {"+": a + b, "-": a - b, "*": a * b, "/": int(a / b)}[operator]

agent = Agent("assistant", "You calculate.", config=scripted_openai_config(list(AG2X_SCRIPT)), tools=[calculator])
print("BODY", asyncio.run(agent.ask(AG2X_QUESTION)).body)
"""


def test_opentelemetry_instrument_traces_an_unmodified_ag2x_script(tmp_path):
    """Zero code: ``opentelemetry-instrument python app.py`` loads Ag2Instrumentor (its dependency check passes on
    ag2 1.x) and the unmodified 1.x program is traced; content off by default."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.test_zero_code import _console_spans

    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    if not instrument.exists():
        pytest.skip("opentelemetry-instrument not installed next to python (opentelemetry-distro, the test extra)")
    (tmp_path / "app.py").write_text(ZERO_CODE_APP)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "MLFLOW_"))}
    env.update(OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none",
               PYTHONPATH=os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]),
                                                       env.get("PYTHONPATH")) if p))
    done = subprocess.run([str(instrument), sys.executable, "app.py"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "BODY (44232 + 13312 / (232 - 32)) * 5 = 221490." in done.stdout
    names = sorted(s["name"] for s in _console_spans(done.stdout))
    assert names.count("invoke_agent assistant") == 1 and names.count("chat gpt-4o-mini") == 5
    assert names.count("execute_tool calculator") == 4, names
    assert not any("gen_ai.input.messages" in s["attributes"] for s in _console_spans(done.stdout))
