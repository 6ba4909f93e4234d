"""The MLflow sink on whatever MLflow this venv holds (3.1 → newest, full ``mlflow`` or only ``mlflow-tracing`` /
``mlflow-skinny``): the seed example, sync and async, exact totals read back right after the chat, through each
write path this MLflow takes, and the path itself chosen by feature.

Run it in every cell of the compatibility matrix (``.ci/run``): nothing here is tied to one MLflow release. The write
path is read from the installed MLflow the way the writer process reads it (:func:`store_writer.write_path`), and
checked against what the writer process says it uses:

* ``batched``: ``TracingClient.start_trace(trace_info)`` exists (3.2+): our trace id ``tr-<otel trace id>``, one
  ``log_spans`` where MLflow has it and the store takes it, the span artifact where the stored trace does not say its
  spans are in the tracking store (3.5);
* ``v2``: MLflow 3.1's ``start_trace(experiment_id, ...)``: the store picks the id, the read barrier hands it out.

Backends: MLflow's own default tracking URI (no URI set, a fresh working directory: ``./mlruns`` before 3.7 or so,
``sqlite:///mlflow.db`` after), an explicit sqlite store (both need the full ``mlflow`` distribution, skipped with
the reason otherwise: mlflow-tracing/skinny have no local store) and a real ``mlflow server`` (with
``AG2_OTEL_TEST_MLFLOW_SERVER_PYTHON`` it runs from another interpreter, e.g. the main venv's full MLflow, which a
venv holding only mlflow-tracing needs). Plus the in-process replay (Databricks, ``AG2_OTEL_MLFLOW_WRITER=inline``,
a chat nested in the user's span), which runs on MLflow's own tracer.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import os
import subprocess
import sys
import textwrap
import time
import uuid
from typing import Annotated

import mlflow
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import ag2_otel
from ag2_otel.scripted import ScriptedClient, Step, ToolCall, scripted_llm_config
from ag2_otel.sinks import store_writer

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
COST = 480e-6 + 52 * 2e-6  # ScriptedClient's prices
SPANS = 12  # workflow + 6 agent turns + 3 model calls + 2 tool calls
READY_DEADLINE_S = 60.0  # the writer process imports MLflow before it says which path it takes (seconds here)


def _has_distribution(name: str) -> bool:
    try:
        importlib.metadata.version(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


FULL_MLFLOW = _has_distribution("mlflow")
needs_local_store = pytest.mark.skipif(
    not FULL_MLFLOW, reason="only mlflow-tracing/mlflow-skinny installed: no local store, they write to a server")


def _expected_path() -> str:
    """What this MLflow offers, read here independently of store_writer.write_path."""
    from mlflow.tracing.client import TracingClient

    params = inspect.signature(TracingClient.start_trace).parameters
    return "batched" if "trace_info" in params else "v2"


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


def _chat(mode: str) -> None:
    user_proxy, assistant = calculator_agents()
    if mode == "sync":
        user_proxy.initiate_chat(assistant, message=SEED_QUESTION, max_turns=10)
    else:
        asyncio.run(user_proxy.a_initiate_chat(assistant, message=SEED_QUESTION, max_turns=10))


def _check_seed(trace, provider, mode: str, experiment_id: str) -> None:
    """The seed's snippet, plus what our sink adds, exactly."""
    assert trace is not None, "mlflow.get_trace(mlflow.get_last_active_trace_id()) returned None right after the chat"
    assert trace.info.token_usage == TOTAL
    per_call = [span.get_attribute("mlflow.chat.tokenUsage") for span in trace.data.spans
                if span.get_attribute("mlflow.chat.tokenUsage")]
    assert per_call == PER_CALL
    assert len(trace.data.spans) == SPANS
    root = next(s for s in trace.data.spans if s.parent_id is None)
    assert root.name == ("invoke_workflow initiate_chat" if mode == "sync" else "invoke_workflow a_initiate_chat")
    assert sorted({s.span_type for s in trace.data.spans}) == ["AGENT", "CHAIN", "CHAT_MODEL", "TOOL"]
    tool = next(s for s in trace.data.spans if s.span_type == "TOOL")
    assert tool.inputs == {"a": 232, "b": 32, "operator": "-"}
    assert trace.info.experiment_id == experiment_id  # the experiment the application set, not MLflow's Default

    usage = ag2_otel.get_token_usage(trace.info.trace_id)  # our breakdown from the trace metadata
    assert {k: usage["total"][k] for k in TOTAL} == TOTAL
    assert usage["total"]["calls"] == 3 and usage["total"]["cost"] == pytest.approx(COST)
    assert usage["by_agent"]["assistant"]["total_tokens"] == 532
    assert usage["by_model"]["scripted-model"]["calls"] == 3
    otel_ids = {format(s.context.trace_id, "032x") for s in provider.exporter.get_finished_spans()}
    assert len(otel_ids) == 1 and usage["otel_trace_id"] in otel_ids  # one chat, one trace, findable by OTel id


@pytest.fixture
def provider():
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer_provider.exporter = exporter
    yield tracer_provider
    ag2_otel.autolog(disable=True)


@pytest.fixture(scope="module")
def store_dirs(tmp_path_factory):
    """One directory per local backend for the module: a fresh sqlite store costs 10-30 s of migrations here, so the
    tests share each store and take a fresh experiment each."""
    return {name: tmp_path_factory.mktemp(f"mlflow-{name}") for name in ("default", "sqlite")}


def _previous_uri() -> str | None:
    return mlflow.get_tracking_uri() if (FULL_MLFLOW or mlflow.is_tracking_uri_set()) else None


@pytest.fixture(params=["default", "sqlite", "server"])
def backend(request, store_dirs, monkeypatch):
    """(name, experiment id): a tracking URI made current with a fresh experiment; the previous URI restored."""
    previous = _previous_uri()
    if request.param == "server":
        mlflow.set_tracking_uri(request.getfixturevalue("mlflow_server"))
    else:
        if not FULL_MLFLOW:
            pytest.skip("only mlflow-tracing/mlflow-skinny installed: no local store, they write to a server")
        root = store_dirs[request.param]
        monkeypatch.chdir(root)  # MLflow's default store lands in the working directory
        if request.param == "sqlite":
            mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        else:
            monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
            mlflow.set_tracking_uri(None)  # nothing set: MLflow's own default, whatever this release makes it
            monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    experiment = mlflow.set_experiment(f"versions-{request.param}-{uuid.uuid4().hex[:8]}")
    yield request.param, experiment.experiment_id
    mlflow.set_tracking_uri(previous)


def _store_client():
    processor = ag2_otel.mlflow_processor()
    assert processor is not None and processor._store is not None, "autolog() did not start the writer process"
    return processor._store


def _wait_for_ready(client) -> str | None:
    deadline = time.monotonic() + READY_DEADLINE_S
    while client.write_path is None and client.available and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the child's first message, bounded by the deadline
    return client.write_path


def test_write_path_is_chosen_by_feature(provider, tmp_path, monkeypatch):
    """The writer process reports the path this MLflow's features allow; the same check run here agrees."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing is written; only the path is asked
    ag2_otel.autolog(tracer_provider=provider)
    client = _store_client()
    assert _wait_for_ready(client) == _expected_path()
    assert store_writer.write_path()[0] == client.write_path
    assert client.keeps_ids == (client.write_path == "batched")
    print(f"\nMLflow {mlflow.__version__}: writer process path {client.write_path!r}"
          + (f" ({client.missing} missing)" if client.missing else ""))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_seed_through_the_writer_process(backend, provider, mode):
    name, experiment_id = backend
    ag2_otel.autolog(tracer_provider=provider)
    _chat(mode)

    trace_id = mlflow.get_last_active_trace_id()  # right after the chat: the seed's snippet
    trace = mlflow.get_trace(trace_id)
    _check_seed(trace, provider, mode, experiment_id)

    client = _store_client()
    assert client.stats["traces_stored"] >= 1 and client.stats["traces_failed"] == 0
    otel_id = next(iter({format(s.context.trace_id, "032x") for s in provider.exporter.get_finished_spans()}))
    if client.write_path == "batched":
        assert trace_id == "tr-" + otel_id  # our id: the same trace in MLflow and in an OTel backend
    else:
        assert client.write_path == "v2" and trace_id != "tr-" + otel_id  # the store chose it; handed back to us
    # the by-id reads behind MlflowClient find it too
    from mlflow.tracing.client import TracingClient

    assert TracingClient().get_trace(trace_id).info.token_usage == TOTAL
    print(f"\nMLflow {mlflow.__version__}, {name} ({mlflow.get_tracking_uri()}), {mode}: path {client.write_path}")


def _mlflow_tracer_works() -> str | None:
    """None if MLflow's own tracer stores a trace here, else why not (MLflow 3.1's span processors do not run on
    a current OpenTelemetry SDK: 'MlflowV2SpanProcessor' object has no attribute '_shutdown')."""
    span = mlflow.start_span_no_context("probe")
    span.end()
    mlflow.flush_trace_async_logging()
    try:
        found = mlflow.get_trace(span.trace_id)
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None if found is not None else "MLflow's own tracer stored nothing"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_seed_through_the_in_process_replay(store_dirs, provider, mode, request, monkeypatch):
    """The replay through MLflow's tracer (Databricks, AG2_OTEL_MLFLOW_WRITER=inline, a chat in the user's span):
    trace metadata (our per-agent breakdown) also where start_span_no_context takes no metadata (before 3.10)."""
    previous = _previous_uri()
    root = store_dirs["sqlite"]
    uri = f"sqlite:///{root / 'mlflow.db'}" if FULL_MLFLOW else request.getfixturevalue("mlflow_server")
    monkeypatch.chdir(root)
    mlflow.set_tracking_uri(uri)
    try:
        experiment_id = mlflow.set_experiment(f"inline-{uuid.uuid4().hex[:8]}").experiment_id
        why_not = _mlflow_tracer_works()
        if why_not is not None:
            pytest.skip(f"MLflow {mlflow.__version__}'s own tracer cannot store a trace here ({why_not[:200]}); "
                        "the writer process does not use it")
        monkeypatch.setenv("AG2_OTEL_MLFLOW_WRITER", "inline")
        ag2_otel.autolog(tracer_provider=provider)
        assert ag2_otel.mlflow_processor()._store is None
        _chat(mode)
        trace = mlflow.get_trace(mlflow.get_last_active_trace_id())
        _check_seed(trace, provider, mode, experiment_id)
    finally:
        mlflow.flush_trace_async_logging()
        mlflow.set_tracking_uri(previous)


@needs_local_store
def test_mlflow_imported_only_after_the_chat(tmp_path):
    """An application that imports MLflow only to read: no URI anywhere, so the writer process stores the trace where
    this MLflow's own default puts it (``./mlruns`` or ``sqlite:///mlflow.db``, it differs between releases), and the
    read barrier, installed when MLflow is imported, still hands out the trace right after the chat."""
    script = textwrap.dedent(f"""
        import json, sys
        import ag2_otel
        from autogen import ConversableAgent, register_function
        from ag2_otel.scripted import ScriptedClient, Step, ToolCall, scripted_llm_config
        ag2_otel.autolog()
        assistant = ConversableAgent("assistant", llm_config=scripted_llm_config())
        user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER",
                                is_termination_msg=lambda m: (m.get("content") or "").rstrip().endswith("TERMINATE"))
        def calculator(a: int, b: int, operator: str) -> int:
            return {{"-": a - b, "/": int(a / b)}}[operator]
        register_function(calculator, caller=assistant, executor=user, name="calculator", description="calculator")
        assistant.register_model_client(ScriptedClient, script={SCRIPT!r})
        user.initiate_chat(assistant, message={SEED_QUESTION!r}, max_turns=10)
        assert "mlflow" not in sys.modules, "the chat imported MLflow"
        import mlflow
        trace = mlflow.get_trace(mlflow.get_last_active_trace_id())
        print(json.dumps({{"uri": mlflow.get_tracking_uri(), "usage": trace and trace.info.token_usage,
                          "spans": trace and len(trace.data.spans)}}))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT"))}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["usage"] == TOTAL and result["spans"] == SPANS, result
    print(f"\nMLflow {mlflow.__version__}, nothing imported before the chat: stored at {result['uri']}")


def test_destination_by_tracking_uri(tmp_path, monkeypatch):
    """Which tracking URIs the writer process takes (SQL, servers, file stores, made absolute against our working
    directory) and which stay in-process (Databricks, in-memory sqlite)."""
    from ag2_otel.sinks.mlflow_processor import _process_destination

    monkeypatch.chdir(tmp_path)
    previous = _previous_uri()
    cases = {
        "databricks": None,
        "databricks://profile": None,
        "sqlite:///:memory:": None,
        "sqlite:///rel.db": f"sqlite:///{tmp_path / 'rel.db'}",
        "http://127.0.0.1:5000": "http://127.0.0.1:5000",
        "file:./mlruns": (tmp_path / "mlruns").as_uri(),
        "mlruns": (tmp_path / "mlruns").as_uri(),
        f"file://{tmp_path}/abs": (tmp_path / "abs").as_uri(),
    }
    got = {}
    try:
        for uri in cases:
            mlflow.set_tracking_uri(uri)
            destination = _process_destination()
            got[uri] = destination[0] if destination is not None else None
    finally:
        mlflow.set_tracking_uri(previous)
    assert got == cases
