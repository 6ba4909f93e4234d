"""Load (issue #5, part 3): many concurrent conversations, and one very long one, through ``ag2_otel.autolog()`` into
a real MLflow sqlite store, checked only through public behaviour (autolog, flush, the processor's stats, MLflow's
search/get API).

(a) 50 conversations at once (25 threads and 25 asyncio tasks in one event loop, released together), 20 turns each
    with a tool call every other turn: exactly 50 complete MLflow traces, each holding only its own conversation's
    spans, with token totals equal to the scripted usage.
(b) one 600-turn conversation in a subprocess beside an untraced one: peak RSS growth of the traced run stays
    within a budget derived from its span count, and the whole trace (under the per-trace span cap) is in MLflow.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import pytest
from opentelemetry.sdk.trace import TracerProvider

import ag2_otel
from ag2_otel.scripted import Step, ToolCall
from tests.scripted_llm import scripted_llm_config

REPO = Path(__file__).resolve().parents[1]

# --- (a) 50 concurrent conversations ------------------------------------------------------------------------------
THREADS = 25
TASKS = 25
TURNS = 20  # initiate_chat(max_turns=20): 20 assistant replies, 19 user replies in between
NO_LIMIT = 10**9  # AG2's max_consecutive_auto_reply (default 100) must never end a chat early
MARKER = re.compile(r"MK(\d{2})(?!\d)")  # every agent name, message and tool argument of chat i carries MK{i:02d}

# per conversation: 1 workflow + 20 assistant turns (each with its model call) + 19 user turns, of which the 10
# after a tool-call reply execute the tool (the assistant asks for a tool on turns 0, 2, ..., 18)
SPANS_PER_CHAT = 1 + TURNS + TURNS + (TURNS - 1) + TURNS // 2


def marker(index: int) -> str:
    return f"MK{index:02d}"


def usage(index: int, turn: int) -> tuple[int, int]:
    """(prompt, completion) tokens of chat ``index``'s model call ``turn``: distinct for every chat and turn."""
    return 1000 + 37 * index + turn, 10 + index + 3 * turn


def expected_usage(index: int) -> dict[str, int]:
    prompt = sum(usage(index, t)[0] for t in range(TURNS))
    completion = sum(usage(index, t)[1] for t in range(TURNS))
    return {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion}


def make_chat(index: int):
    from autogen import ConversableAgent, register_function

    tag = marker(index)
    script = []
    for turn in range(TURNS):
        prompt, completion = usage(index, turn)
        if turn % 2 == 0:
            script.append(Step(tool_calls=[ToolCall("lookup", {"key": tag, "turn": turn})],
                               prompt_tokens=prompt, completion_tokens=completion))
        else:
            script.append(Step(text=f"[{tag}] answer {turn}", prompt_tokens=prompt, completion_tokens=completion))
    assistant = ConversableAgent(f"asst-{tag}", llm_config=scripted_llm_config(script, repeat_last=False),
                                 human_input_mode="NEVER", system_message=f"You help conversation {tag}.",
                                 max_consecutive_auto_reply=NO_LIMIT, is_termination_msg=lambda m: False)
    user = ConversableAgent(f"user-{tag}", llm_config=False, human_input_mode="NEVER",
                            max_consecutive_auto_reply=NO_LIMIT, default_auto_reply=f"go on {tag}",
                            is_termination_msg=lambda m: False)

    def lookup(key: str, turn: int) -> str:
        return f"looked up {key} at turn {turn}"

    register_function(lookup, caller=assistant, executor=user, name="lookup", description="Look a key up.")
    return user, assistant


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow_load')}/mlflow.db"


@pytest.fixture
def store(sqlite_uri):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(sqlite_uri)
    experiment = mlflow.set_experiment(f"load-{uuid.uuid4().hex[:8]}")
    yield experiment
    mlflow.set_tracking_uri(previous)


@pytest.fixture
def provider():
    yield TracerProvider()  # a fresh provider: the global one can be set only once per process
    ag2_otel.autolog(disable=True)


def _markers(span) -> set[int]:
    """Every conversation marker anywhere in the span: name, attributes, inputs, outputs."""
    text = json.dumps([span.name, span.attributes, span.inputs, span.outputs], default=str)
    return {int(m) for m in MARKER.findall(text)}


# SLOW: about a minute idle; 1,000 model calls over HTTP, ~3 min on a loaded 2-core machine
@pytest.mark.timeout(900)
def test_50_concurrent_conversations_one_exact_trace_each_slow(store, provider):
    ag2_otel.autolog(tracer_provider=provider)
    chats = {i: make_chat(i) for i in range(THREADS + TASKS)}  # built up front: the start is the chats only
    go = threading.Event()
    started = time.monotonic()

    def in_thread(index: int):
        assert go.wait(60)
        user, assistant = chats[index]
        return user.initiate_chat(assistant, message=f"start {marker(index)}", max_turns=TURNS, silent=True)

    async def in_task(index: int):
        user, assistant = chats[index]
        return await user.a_initiate_chat(assistant, message=f"start {marker(index)}", max_turns=TURNS,
                                          silent=True)

    async def all_tasks():
        tasks = [asyncio.ensure_future(in_task(THREADS + i)) for i in range(TASKS)]
        go.set()  # threads and tasks released together: the tasks run as soon as this coroutine yields
        return await asyncio.gather(*tasks)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [pool.submit(in_thread, i) for i in range(THREADS)]
        task_results = asyncio.run(all_tasks())
        thread_results = [f.result(timeout=600) for f in futures]
    chats_done = time.monotonic()
    assert ag2_otel.flush(timeout=120)
    flushed = time.monotonic()

    results = thread_results + list(task_results)
    assert all(len(r.chat_history) == 2 * TURNS for r in results), [len(r.chat_history) for r in results]

    traces = mlflow.search_traces(locations=[store.experiment_id], return_type="list", max_results=500)
    assert len(traces) == THREADS + TASKS
    seen: dict[int, str] = {}
    for trace in traces:
        spans = trace.data.spans
        root = next(s for s in spans if s.parent_id is None)
        (index,) = _markers(root)  # the root names its participants: one conversation
        assert index not in seen, f"two traces for conversation {index}"
        seen[index] = trace.info.trace_id
        entry = "initiate_chat" if index < THREADS else "a_initiate_chat"
        assert root.name == f"invoke_workflow {entry}"
        assert trace.info.state == "OK"
        assert "ag2_otel.incomplete" not in trace.info.tags
        assert "ag2_otel.dropped_spans" not in trace.info.tags
        assert len(spans) == SPANS_PER_CHAT, (index, sorted(s.name for s in spans))
        # no span of another conversation here, and every span says which conversation it belongs to
        for span in spans:
            assert _markers(span) == {index}, (index, span.name, _markers(span))
        names = [s.name for s in sorted(spans, key=lambda s: s.start_time_ns)]
        assert names.count(f"invoke_agent asst-{marker(index)}") == TURNS
        assert names.count(f"invoke_agent user-{marker(index)}") == TURNS - 1
        assert names.count("chat scripted-model") == TURNS
        assert names.count("execute_tool lookup") == TURNS // 2
        assert all(s.status.status_code == "OK" for s in spans)
        assert trace.info.token_usage == expected_usage(index)
    assert sorted(seen) == list(range(THREADS + TASKS))

    stats = ag2_otel.mlflow_processor().stats
    assert stats["dropped_traces"] == stats["dropped_spans"] == stats["late_spans"] == 0, stats
    assert stats["write_errors"] == 0 and stats["incomplete_traces_written"] == 0, stats
    print(f"\n[load] 50 chats x {TURNS} turns ({50 * SPANS_PER_CHAT} spans): chats {chats_done - started:.1f} s, "
          f"flush {flushed - chats_done:.1f} s; stats {stats}")


# --- (b) one 600-turn conversation: bounded memory ------------------------------------------------------------
LONG_TURNS = 600  # over HTTP every request carries the whole history (AG2 + SDK work grows as n²); 2,000 took >20 min
PER_SPAN_BUDGET = 12 * 1024  # bytes of peak RSS per buffered span, see test_long_conversation_bounded_memory

LONG_APP = textwrap.dedent('''
    import json, os, sys, time
    traced = sys.argv[1] == "traced"
    turns = int(sys.argv[2])
    import mlflow, ag2_otel
    from autogen import ConversableAgent, register_function
    from ag2_otel.scripted import Step, ToolCall
    from tests.scripted_llm import scripted_llm_config

    for name in ("autogen", "autogen.oai.client"):
        import logging; logging.getLogger(name).setLevel(logging.ERROR)

    def rss_kb(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])

    def build(n):
        script = [Step(tool_calls=[ToolCall("add", {"a": t, "b": 1})], prompt_tokens=100 + t % 7, completion_tokens=3)
                  if t % 2 == 0 else
                  Step(text=f"The result is {t}. Anything else I can add up for you?", prompt_tokens=90 + t % 5,
                       completion_tokens=11) for t in range(n)]
        assistant = ConversableAgent("assistant", llm_config=scripted_llm_config(script, repeat_last=False),
                                     human_input_mode="NEVER", max_consecutive_auto_reply=10**9,
                                     is_termination_msg=lambda m: False)
        user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER", max_consecutive_auto_reply=10**9,
                                default_auto_reply="Thanks. Next one, please.", is_termination_msg=lambda m: False)
        def add(a: int, b: int) -> int:
            return a + b
        register_function(add, caller=assistant, executor=user, name="add", description="Add two integers.")
        return user, assistant

    if traced:
        ag2_otel.autolog()
    user, assistant = build(5)  # warm-up: imports, caches, the writer started
    user.initiate_chat(assistant, message="Please add 1 and 1.", max_turns=5, silent=True)
    if traced:
        assert ag2_otel.flush(60)
    before = rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    user, assistant = build(turns)
    started = time.monotonic()
    result = user.initiate_chat(assistant, message="Please add 1 and 1.", max_turns=turns, silent=True)
    chat_s = time.monotonic() - started
    out = {"mode": sys.argv[1], "messages": len(result.chat_history), "chat_s": chat_s, "rss_before_kb": before}
    if traced:
        started = time.monotonic()
        out["flushed"] = ag2_otel.flush(300)
        out["flush_s"] = time.monotonic() - started
        out["trace_id"] = mlflow.get_last_active_trace_id()
        out["stats"] = ag2_otel.mlflow_processor().stats
    out["peak_kb"] = rss_kb("VmHWM")  # after the flush: the hand-off to the writer counts too
    print("RESULT " + json.dumps(out), flush=True)
''')


def _expected_long_usage(turns: int) -> dict[str, int]:
    prompt = sum(100 + t % 7 if t % 2 == 0 else 90 + t % 5 for t in range(turns))
    completion = sum(3 if t % 2 == 0 else 11 for t in range(turns))
    return {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion}


def _run_long(mode: str, tmp_path: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MLFLOW_", "AG2_OTEL_"))}
    env.update({
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_MODEL_CATALOG_URI": "",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # no bounded wait for the store at each conversation's end (autolog uses this as its write timeout too):
        # the app flushes explicitly and times it
        "AG2_OTEL_EXIT_FLUSH_TIMEOUT": "0",
    })
    script = tmp_path / "long_app.py"
    script.write_text(LONG_APP)
    return subprocess.Popen([sys.executable, str(script), mode, str(LONG_TURNS)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen, timeout: float) -> dict:
    stdout, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, stderr[-4000:]
    line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, (stdout[-2000:], stderr[-4000:])
    return json.loads(line[len("RESULT "):])


# SLOW: about a minute (two 600-turn conversations over HTTP in subprocesses, one of them traced and written)
@pytest.mark.timeout(1500)  # two 600-turn chats over HTTP at once on a 2-core machine
def test_long_conversation_bounded_memory_slow(tmp_path):
    """Budget: peak RSS growth of the traced run minus the untraced run's, per span the trace holds, under
    PER_SPAN_BUDGET (12 KiB). A span's memory is bounded by the caps: its content attributes hold at most
    AG2_OTEL_MAX_MESSAGES (20) short messages for a model call and one message for an agent turn, each under
    AG2_OTEL_MAX_CONTENT_CHARS; the SDK span object and its attributes are ~2-4 KiB. Per-turn content growing with
    the history (recording the whole conversation per model call) would add ~600 x 600 x 60 B ~ 22 MB here, ~10 KiB
    per span on top of the ~6 KiB a span costs today: over the budget."""
    traced_dir, untraced_dir = tmp_path / "traced", tmp_path / "untraced"
    traced_dir.mkdir(), untraced_dir.mkdir()
    traced = _run_long("traced", traced_dir)
    untraced = _run_long("untraced", untraced_dir)  # concurrently: it only needs to finish, not to be timed
    u = _result(untraced, 1200)
    t = _result(traced, 1200)
    assert u["messages"] == t["messages"] == 2 * LONG_TURNS

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{traced_dir / 'mlflow.db'}")
    trace = client.get_trace(t["trace_id"])
    spans = trace.data.spans
    names = [s.name for s in spans]
    expected = {
        "invoke_workflow initiate_chat": 1,
        "invoke_agent assistant": LONG_TURNS,
        "chat scripted-model": LONG_TURNS,
        "invoke_agent user": LONG_TURNS - 1,
        "execute_tool add": LONG_TURNS // 2,
    }
    assert {n: names.count(n) for n in expected} == expected
    assert len(spans) == sum(expected.values())  # under the per-trace cap (10,000): the whole trace, no drops
    assert "ag2_otel.dropped_spans" not in trace.info.tags and "ag2_otel.incomplete" not in trace.info.tags
    assert trace.info.token_usage == _expected_long_usage(LONG_TURNS)
    assert t["flushed"] and t["stats"]["dropped_spans"] == 0 and t["stats"]["write_errors"] == 0, t

    growth_traced = (t["peak_kb"] - t["rss_before_kb"]) * 1024
    growth_untraced = (u["peak_kb"] - u["rss_before_kb"]) * 1024
    overhead = growth_traced - growth_untraced
    budget = len(spans) * PER_SPAN_BUDGET
    print(f"\n[memory] {LONG_TURNS} turns, {len(spans)} spans: peak RSS growth traced {growth_traced / 2**20:.1f} MB, "
          f"untraced {growth_untraced / 2**20:.1f} MB, overhead {overhead / 2**20:.1f} MB "
          f"({overhead / len(spans):.0f} B/span; budget {budget / 2**20:.0f} MB); chat traced {t['chat_s']:.1f} s, "
          f"untraced {u['chat_s']:.1f} s, flush {t['flush_s']:.1f} s; stats {t['stats']}")
    assert overhead < budget
