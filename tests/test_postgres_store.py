"""The production store, for real: a real ``mlflow server --backend-store-uri postgresql://...`` on a PostgreSQL
server the suite starts itself (tests/postgres.py), written to three ways:

- the direct sink (``ag2_otel.autolog()`` in an application process, the calculator chat over HTTP through AG2's
  OpenAIClient): the trace as the sqlite tests know it, and its rows really in PostgreSQL;
- the collector route (MLflow sink off, OTLP/HTTP to a real rotel collector forwarding to the server's /v1/traces);
- 4 application processes x 25 conversations at once (5 threads each), each conversation with its own token
  numbers, into an experiment none of them has yet (the 4 writers find or create it at once): every trace stored
  exactly once (MLflow's search and PostgreSQL's own row counts), exact totals.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import uuid

import pytest
from mlflow import MlflowClient

from ag2_otel.mapping import mlflow_trace as m
from tests.collector import RotelCollector, wait_until
from tests.test_zero_code_mlflow import CHAT, SPANS, TOTALS, assert_sqlite_trace, clean_env, run_app

APP = "import ag2_otel\nag2_otel.autolog()\n" + textwrap.dedent(CHAT)
DELIVERY_DEADLINE_S = 90.0


def _experiment(url: str) -> tuple[str, str]:
    name = f"pg-{uuid.uuid4().hex[:10]}"
    return name, MlflowClient(tracking_uri=url).create_experiment(name)


def _traces(url: str, experiment_id: str) -> list:
    client = MlflowClient(tracking_uri=url)
    return [client.get_trace(t.info.trace_id)
            for t in client.search_traces(locations=[experiment_id], max_results=500)]


def _complete(url: str, experiment_id: str) -> list | None:
    """The experiment's traces once there is one and it has all its spans."""
    traces = _traces(url, experiment_id)
    return traces if traces and len(traces[0].data.spans) >= SPANS else None


def test_direct_sink_writes_the_trace_into_postgres(mlflow_postgres_server, tmp_path):
    url, postgres, database = mlflow_postgres_server
    name, experiment_id = _experiment(url)
    (tmp_path / "app.py").write_text(APP)
    run = run_app([sys.executable, "app.py"], clean_env(tmp_path, MLFLOW_TRACKING_URI=url,
                                                        MLFLOW_EXPERIMENT_NAME=name), tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "ag2_otel:" not in run.stderr, run.stderr[-4000:]

    # the writer process finishes what it received after the application exits: wait for the whole trace
    (trace,) = wait_until(lambda: _complete(url, experiment_id), DELIVERY_DEADLINE_S, "the trace in PostgreSQL",
                          poll_s=0.25)
    assert_sqlite_trace(trace)  # the direct sink's trace, span types, per-call and total usage
    trace_id = trace.info.trace_id
    # the rows are PostgreSQL's: the trace once, its 12 spans once each
    assert postgres.query(database, f"SELECT count(*) FROM trace_info WHERE request_id = '{trace_id}'") == "1"
    assert postgres.query(database, f"SELECT count(*), count(DISTINCT span_id) FROM spans "
                                    f"WHERE trace_id = '{trace_id}'") == f"{SPANS}|{SPANS}"


def test_collector_route_into_postgres(mlflow_postgres_server, tmp_path):
    url, postgres, database = mlflow_postgres_server
    _, experiment_id = _experiment(url)
    collector = RotelCollector(tmp_path / "rotel", f"{url}/v1/traces",
                               headers={"x-mlflow-experiment-id": experiment_id}).start()
    try:
        (tmp_path / "app.py").write_text(APP)
        run = run_app([sys.executable, "app.py"], clean_env(
            tmp_path, AG2_OTEL_MLFLOW="false", OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_SERVICE_NAME="pg-collector-route"), tmp_path)
        assert run.returncode == 0, run.stderr[-4000:]

        (trace,) = wait_until(lambda: _complete(url, experiment_id), DELIVERY_DEADLINE_S,
                              "the OTLP trace in PostgreSQL", poll_s=0.25)
    finally:
        collector.stop()
    assert len(trace.data.spans) == SPANS
    assert trace.info.token_usage == TOTALS
    assert not (tmp_path / "mlflow.db").exists()  # the sink was off: nothing took the direct route
    assert postgres.query(database, "SELECT count(*) FROM trace_info "
                                    f"WHERE experiment_id = {int(experiment_id)}") == "1"
    assert postgres.query(database, f"SELECT count(*) FROM spans WHERE trace_id = '{trace.info.trace_id}'") \
        == str(SPANS)


# --- 4 processes x 25 conversations ---------------------------------------------------------------------------------
PROCESSES = 4
CHATS = 25
THREADS = 5  # per process
TURNS = 4  # assistant replies per conversation; a tool call on turns 0 and 2
MARKER = re.compile(r"P(\d)C(\d{2})(?!\d)")
SPANS_PER_CHAT = 1 + TURNS + TURNS + (TURNS - 1) + TURNS // 2  # workflow, assistant turns + model calls, user turns, tools

LOAD_APP = textwrap.dedent('''
    import json, sys
    from concurrent.futures import ThreadPoolExecutor

    import ag2_otel
    from autogen import ConversableAgent, register_function
    from ag2_otel.scripted import Step, ToolCall
    from tests.scripted_llm import scripted_llm_config
    from tests.test_postgres_store import CHATS, THREADS, TURNS, marker, usage

    process = int(sys.argv[1])
    ag2_otel.autolog()

    def chat(index):
        tag = marker(process, index)
        script = [Step(tool_calls=[ToolCall("lookup", {"key": tag, "turn": t})], prompt_tokens=usage(process, index, t)[0],
                       completion_tokens=usage(process, index, t)[1]) if t % 2 == 0 else
                  Step(text=f"[{tag}] answer {t}", prompt_tokens=usage(process, index, t)[0],
                       completion_tokens=usage(process, index, t)[1]) for t in range(TURNS)]
        assistant = ConversableAgent(f"asst-{tag}", llm_config=scripted_llm_config(script, repeat_last=False),
                                     human_input_mode="NEVER", is_termination_msg=lambda m: False)
        user = ConversableAgent(f"user-{tag}", llm_config=False, human_input_mode="NEVER",
                                default_auto_reply=f"go on {tag}", is_termination_msg=lambda m: False)

        def lookup(key: str, turn: int) -> str:
            return f"looked up {key} at turn {turn}"

        register_function(lookup, caller=assistant, executor=user, name="lookup", description="Look a key up.")
        return len(user.initiate_chat(assistant, message=f"start {tag}", max_turns=TURNS, silent=True).chat_history)

    with ThreadPoolExecutor(THREADS) as pool:
        lengths = list(pool.map(chat, range(CHATS)))
    flushed = ag2_otel.flush(timeout=180)
    print("RESULT " + json.dumps({"lengths": lengths, "flushed": flushed,
                                  "stats": ag2_otel.mlflow_processor().stats}), flush=True)
''')


def marker(process: int, index: int) -> str:
    return f"P{process}C{index:02d}"


def usage(process: int, index: int, turn: int) -> tuple[int, int]:
    """(prompt, completion) tokens: distinct for every process, conversation and turn."""
    return 1000 + 300 * process + 11 * index + turn, 5 + 7 * process + index + 2 * turn


def expected_usage(process: int, index: int) -> dict[str, int]:
    prompt = sum(usage(process, index, t)[0] for t in range(TURNS))
    completion = sum(usage(process, index, t)[1] for t in range(TURNS))
    return {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion}


# SLOW: 3-4 min on the loaded 2-core box
@pytest.mark.timeout(900)  # 400 model calls over HTTP in 4 processes on a loaded 2-core machine
def test_four_processes_25_chats_each_every_trace_once_exact_totals_slow(mlflow_postgres_server, tmp_path):
    url, postgres, database = mlflow_postgres_server
    name = f"pg-load-{uuid.uuid4().hex[:10]}"  # not created here: the 4 writers find or create it at once
    (tmp_path / "load_app.py").write_text(LOAD_APP)
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=url, MLFLOW_EXPERIMENT_NAME=name)
    procs = [subprocess.Popen([sys.executable, "load_app.py", str(p)], cwd=tmp_path, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for p in range(PROCESSES)]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=800)
        assert proc.returncode == 0, stderr[-4000:]
        assert "ag2_otel:" not in stderr, stderr[-4000:]
        line = next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))
        results.append(json.loads(line[len("RESULT "):]))
    for result in results:
        assert result["flushed"] and result["lengths"] == [2 * TURNS] * CHATS, result
        stats = result["stats"]
        assert stats["write_errors"] == stats["dropped_traces"] == stats["dropped_spans"] == 0, stats

    experiment_id = MlflowClient(tracking_uri=url).get_experiment_by_name(name).experiment_id
    traces = _traces(url, experiment_id)
    assert len(traces) == PROCESSES * CHATS
    seen: set[str] = set()
    for trace in traces:
        root = next(s for s in trace.data.spans if s.parent_id is None)
        (found,) = set(MARKER.findall(json.dumps([root.name, root.attributes, root.inputs, root.outputs],
                                                 default=str)))  # the root names its participants: one conversation
        process, index = int(found[0]), int(found[1])
        tag = marker(process, index)
        assert tag not in seen, f"two traces for conversation {tag}"
        seen.add(tag)
        assert trace.info.token_usage == expected_usage(process, index), tag
        assert len(trace.data.spans) == SPANS_PER_CHAT, tag
        assert trace.info.state == "OK" and m.TAG_INCOMPLETE not in trace.info.tags
    assert seen == {marker(p, i) for p in range(PROCESSES) for i in range(CHATS)}
    # PostgreSQL's own count: one row per conversation, every span once
    assert postgres.query(database, f"SELECT count(*) FROM trace_info WHERE experiment_id = {int(experiment_id)}") \
        == str(PROCESSES * CHATS)
    assert postgres.query(database, "SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans WHERE trace_id IN "
                                    f"(SELECT request_id FROM trace_info WHERE experiment_id = {int(experiment_id)})") \
        == f"{PROCESSES * CHATS * SPANS_PER_CHAT}|{PROCESSES * CHATS * SPANS_PER_CHAT}"
