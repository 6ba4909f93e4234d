"""Shutdown (issue #5, part 2): what reaches MLflow when an AG2 app exits, normally or not, mid-chat.

Every case runs a small app (``APP``) in a subprocess with ``MLFLOW_TRACKING_URI=sqlite:///<tmp>/mlflow.db`` and the
scripted model, then reads the store. The chat: ``assistant`` asks for the ``work`` tool twice, then terminates;
the second ``work`` call (or the user's second reply function call) is where things go wrong.

- ``main`` mode: the chat runs on the main thread; ``sys.exit(3)``, ``KeyboardInterrupt`` or a ``RuntimeError``
  escapes ``initiate_chat``. The exception unwinds through every open span, so the trace is complete (its root
  ended) with the unwound spans in ERROR; exit code and traceback are the app's own.
- ``open`` mode: a first chat completes, a second runs in a daemon thread and is blocked inside the tool when the
  main thread exits (the same three ways): the workflow, the user's turn and the tool span are still open at
  exit. Expected (README: "A trace whose root never ended (crash, interrupt) is written at shutdown, tagged
  ``ag2_otel.incomplete=true``"): every finished span is written, the open ones too, ended with ERROR.

The exit flush is bounded by ``AG2_OTEL_EXIT_FLUSH_TIMEOUT``: with the MLflow backend unreachable (a closed port;
MLflow's own HTTP retries would take minutes) the process still exits within that timeout plus a margin.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 240.0
TAG_INCOMPLETE = "ag2_otel.incomplete"

APP = textwrap.dedent('''
    import sys, threading, time

    SCENARIO, MODE = sys.argv[1], sys.argv[2]  # normal|sysexit|kbint|error, main|open

    def mark(what):
        print(f"MARK {what} {time.time():.6f}", flush=True)

    import ag2_otel
    ag2_otel.autolog()
    from autogen import ConversableAgent, register_function
    from ag2_otel.scripted import Step, ToolCall
    from tests.scripted_llm import scripted_llm_config

    blocked = threading.Event()

    def make(tag, trigger):
        calls, replies = [0], [0]

        def work(x: int) -> int:
            calls[0] += 1
            if trigger and calls[0] == 2:
                if MODE == "open":
                    blocked.set()
                    threading.Event().wait()  # never returns: this chat's open spans are open at exit
                mark("failing")
                if SCENARIO == "sysexit":
                    sys.exit(3)
                if SCENARIO == "kbint":
                    raise KeyboardInterrupt
            return x * 2

        def flaky_reply(recipient, messages=None, sender=None, config=None):
            replies[0] += 1
            if trigger and MODE == "main" and SCENARIO == "error" and replies[0] == 2:
                mark("failing")
                raise RuntimeError("boom in user code")
            return False, None

        assistant = ConversableAgent(f"assistant{tag}", llm_config=scripted_llm_config([
            Step(tool_calls=[ToolCall("work", {"x": 1})], prompt_tokens=100, completion_tokens=10),
            Step(tool_calls=[ToolCall("work", {"x": 2})], prompt_tokens=200, completion_tokens=20),
            Step(text="done TERMINATE", prompt_tokens=300, completion_tokens=30)]), human_input_mode="NEVER")
        user = ConversableAgent(f"user{tag}", llm_config=False, human_input_mode="NEVER",
                                is_termination_msg=lambda m: (m.get("content") or "").endswith("TERMINATE"))
        register_function(work, caller=assistant, executor=user, name="work", description="doubles x")
        user.register_reply([ConversableAgent, None], flaky_reply, position=0)
        return user, assistant

    def chat(tag, trigger):
        user, assistant = make(tag, trigger)
        user.initiate_chat(assistant, message=f"go {tag}", max_turns=10, silent=True)

    if MODE == "main":
        chat("", trigger=SCENARIO != "normal")
        mark("exiting")
    else:
        chat("-done", trigger=False)
        threading.Thread(target=chat, args=("-open", True), daemon=True).start()
        assert blocked.wait(120)
        mark("exiting")
        if SCENARIO == "sysexit":
            sys.exit(3)
        if SCENARIO == "kbint":
            raise KeyboardInterrupt
        raise RuntimeError("boom in user code")
''')

ERROR_MESSAGE = {"sysexit": "SystemExit: 3", "kbint": "KeyboardInterrupt: ", "error": "RuntimeError: boom in user code"}
LAST_TRACEBACK_LINE = {"kbint": "KeyboardInterrupt", "error": "RuntimeError: boom in user code"}


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    started: float  # time.time() just before Popen
    ended: float  # time.time() right after the process was reaped
    marks: dict[str, float]
    db: Path | None

    @property
    def after(self) -> dict[str, float]:
        """Seconds from each mark to the process's exit."""
        return {name: self.ended - at for name, at in self.marks.items()}


def _env(uri: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MLFLOW_", "AG2_OTEL_"))}
    env.update({
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_MODEL_CATALOG_URI": "",  # offline: the store would download a price catalog
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def run_app(script: Path, workdir: Path, scenario: str, mode: str, *, uri: str | None = None,
            db: Path | None = None, **extra_env: str) -> Run:
    """Run APP to its end. Output goes to files, not pipes: a process it leaves behind holding them cannot delay
    (or hide) the app's own exit, which is what is timed."""
    workdir.mkdir(parents=True, exist_ok=True)
    out, err = workdir / "stdout.txt", workdir / "stderr.txt"
    env = _env(uri or f"sqlite:///{db}", **extra_env)
    with out.open("w") as stdout, err.open("w") as stderr:
        started = time.time()
        proc = subprocess.Popen([sys.executable, str(script), scenario, mode], cwd=workdir, env=env,
                                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
        try:
            proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{scenario}/{mode} did not exit within {RUN_TIMEOUT_S}s: {err.read_text()[-3000:]}")
        ended = time.time()
    stdout_text = out.read_text()
    marks = {}
    for line in stdout_text.splitlines():
        if line.startswith("MARK "):
            _, name, at = line.split()
            marks[name] = float(at)
    return Run(proc.returncode, stdout_text, err.read_text(), started, ended, marks, db)


def traceback_frames(stderr: str, *, drop_ours: bool) -> list[str]:
    """The ``File "...", line N, in f`` lines of the tracebacks in stderr; ``drop_ours`` leaves out the frames of
    our wrappers (a traced call passes through them)."""
    frames = [ln.strip() for ln in stderr.splitlines() if ln.startswith('  File "')]
    if drop_ours:
        frames = [f for f in frames if "/ag2_otel/" not in f and "/wrapt/" not in f]
    return frames


def extra_stderr_lines(stderr: str) -> list[str]:
    """stderr without AG2's own INFO lines and without traceback blocks (header, frames, source lines, carets and
    the final exception line): what is left was added by someone else than the app and AG2."""
    left, in_traceback = [], False
    for line in stderr.splitlines():
        if line.startswith("[autogen.") or not line.strip():
            continue
        if line.startswith("Traceback (most recent call last):"):
            in_traceback = True
            continue
        if in_traceback:
            if line.startswith(" "):
                continue
            in_traceback = False  # the exception line closes the block
            continue
        left.append(line)
    return left


def assert_at_most_one_line_of_ours(stderr: str) -> None:
    """Beside the app's and AG2's own output: at most one line, and it is ag2-otel's (a warning)."""
    extra = extra_stderr_lines(stderr)
    assert len(extra) <= 1 and all(ln.startswith(("ag2_otel", "ag2-otel")) for ln in extra), extra


def read_traces(db: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    return [client.get_trace(t.info.trace_id) for t in client.search_traces(locations=["0"])]


def by_root(traces, name_suffix: str):
    """The trace whose workflow's participants include ``user{name_suffix}``."""
    found = [t for t in traces if any(s.name == f"invoke_agent user{name_suffix}" for s in t.data.spans)
             or f"user{name_suffix}" in str(next(s for s in t.data.spans if s.parent_id is None).attributes)]
    assert len(found) == 1, [[s.name for s in t.data.spans] for t in traces]
    return found[0]


def span_statuses(trace) -> list[tuple[str, str]]:
    spans = sorted(trace.data.spans, key=lambda s: s.start_time_ns)
    return [(s.name, getattr(s.status.status_code, "value", s.status.status_code)) for s in spans]


def exception_types(span) -> list[str]:
    return [e.attributes.get("exception.type", "") for e in span.events if e.name == "exception"]


# the complete chat: 3 model calls, 2 tool calls
COMPLETE = [("invoke_workflow initiate_chat", "OK"),
            ("invoke_agent assistant{t}", "OK"), ("chat scripted-model", "OK"),
            ("invoke_agent user{t}", "OK"), ("execute_tool work", "OK"),
            ("invoke_agent assistant{t}", "OK"), ("chat scripted-model", "OK"),
            ("invoke_agent user{t}", "OK"), ("execute_tool work", "OK"),
            ("invoke_agent assistant{t}", "OK"), ("chat scripted-model", "OK"),
            ("invoke_agent user{t}", "OK")]
# up to the second tool call; the workflow, the user's turn and the tool are the spans that never end normally
CUT_AT_TOOL = [("invoke_workflow initiate_chat", "ERROR"),
               ("invoke_agent assistant{t}", "OK"), ("chat scripted-model", "OK"),
               ("invoke_agent user{t}", "OK"), ("execute_tool work", "OK"),
               ("invoke_agent assistant{t}", "OK"), ("chat scripted-model", "OK"),
               ("invoke_agent user{t}", "ERROR"), ("execute_tool work", "ERROR")]
CUT_AT_REPLY = CUT_AT_TOOL[:-1]  # the reply function fails before the user's turn reaches the tool
USAGE_TWO_CALLS = {"input_tokens": 300, "output_tokens": 30, "total_tokens": 330}
USAGE_COMPLETE = {"input_tokens": 600, "output_tokens": 60, "total_tokens": 660}


def _expect(rows, tag: str = ""):
    return [(name.format(t=tag), status) for name, status in rows]


@pytest.fixture(scope="module")
def template_db(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store, created once (MLflow's migrations take ~10 s) and copied for every run."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


SCENARIOS = [("normal", "main"), ("sysexit", "main"), ("kbint", "main"), ("error", "main"),
             ("sysexit", "open"), ("kbint", "open"), ("error", "open")]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: connections are refused


UNREACHABLE_TIMEOUTS = (0.0, 4.0)  # AG2_OTEL_EXIT_FLUSH_TIMEOUT values tried with the backend unreachable


@pytest.fixture(scope="module")
def runs(tmp_path_factory, template_db) -> dict[tuple, Run]:
    """Every scenario traced, and the failing main-mode scenarios with a traceback also untraced
    (OTEL_SDK_DISABLED=true: autolog() does nothing) as the reference for exit code and traceback. All at once: each
    run mostly imports, and one batch keeps the module near two minutes on a loaded 2-core machine."""
    root = tmp_path_factory.mktemp("shutdown")
    script = root / "app.py"  # one path for every run: tracebacks compare equal
    script.write_text(APP)

    def one(key):
        scenario, mode, variant = key
        workdir = root / f"{scenario}-{mode}-{variant}"
        workdir.mkdir()
        db = workdir / "mlflow.db"
        shutil.copy(template_db, db)
        extra = {} if variant == "traced" else {"OTEL_SDK_DISABLED": "true"}
        return key, run_app(script, workdir, scenario, mode, db=db, **extra)

    keys = [(s, m, "traced") for s, m in SCENARIOS] + [(s, "main", "untraced") for s in ("kbint", "error")]
    with ThreadPoolExecutor(len(keys)) as pool:
        return dict(pool.map(one, keys))


UNTRACED_EXIT_CODE = {"sysexit": 3, "error": 1}  # kbint: what the untraced run says (130 or -SIGINT)


def _assert_exit_like_untraced(runs, scenario: str, mode: str) -> Run:
    traced = runs[(scenario, mode, "traced")]
    untraced = runs.get((scenario, "main", "untraced"))
    expected = untraced.returncode if untraced is not None else UNTRACED_EXIT_CODE[scenario]
    if scenario in UNTRACED_EXIT_CODE:
        assert expected == UNTRACED_EXIT_CODE[scenario]
    assert traced.returncode == expected, (traced.returncode, expected, traced.stderr[-3000:])
    if scenario in LAST_TRACEBACK_LINE:
        last = [ln for ln in traced.stderr.splitlines() if ln.startswith(LAST_TRACEBACK_LINE[scenario])]
        assert last == [LAST_TRACEBACK_LINE[scenario]], last  # the app's exception line, once, unchanged
    else:
        assert "Traceback" not in traced.stderr, traced.stderr[-3000:]
    assert_at_most_one_line_of_ours(traced.stderr)
    return traced


def test_normal_exit_writes_the_complete_trace(runs):
    run = runs[("normal", "main", "traced")]
    assert run.returncode == 0, run.stderr[-3000:]
    assert_at_most_one_line_of_ours(run.stderr)
    (trace,) = read_traces(run.db)
    assert span_statuses(trace) == _expect(COMPLETE)
    assert trace.info.state == "OK" and TAG_INCOMPLETE not in trace.info.tags
    assert trace.info.token_usage == USAGE_COMPLETE


@pytest.mark.parametrize("scenario", ["sysexit", "kbint", "error"])
def test_exit_mid_chat_on_the_main_thread(runs, scenario):
    """The exception unwinds through every span: the trace is complete, its unwound spans in ERROR with the
    exception recorded; the process exits exactly as it does untraced."""
    run = _assert_exit_like_untraced(runs, scenario, "main")
    untraced = runs.get((scenario, "main", "untraced"))
    if untraced is not None:  # the same traceback as untraced, our wrappers' pass-through frames aside
        assert traceback_frames(run.stderr, drop_ours=True) == traceback_frames(untraced.stderr, drop_ours=False)
        assert traceback_frames(untraced.stderr, drop_ours=False)[-1].endswith(
            "in flaky_reply" if scenario == "error" else "in work")
    (trace,) = read_traces(run.db)
    expected = _expect(CUT_AT_REPLY if scenario == "error" else CUT_AT_TOOL)
    assert span_statuses(trace) == expected
    assert trace.info.state == "ERROR"
    assert TAG_INCOMPLETE not in trace.info.tags  # the root did end
    for span in trace.data.spans:
        if span.status.status_code == "ERROR":
            assert span.status.description.startswith(ERROR_MESSAGE[scenario]), span.status.description
            assert len(exception_types(span)) == 1 and exception_types(span)[0].endswith(
                ERROR_MESSAGE[scenario].split(":")[0]), exception_types(span)
    assert trace.info.token_usage == USAGE_TWO_CALLS


@pytest.mark.parametrize("scenario", ["sysexit", "kbint", "error"])
def test_exit_while_a_chat_is_open_in_another_thread(runs, scenario):
    """At exit a chat is blocked in a daemon thread inside its second tool call: the finished chat is complete, the
    open one is written at exit, tagged incomplete, with every span it has: the finished ones as they ended, the
    three still open (workflow, the user's turn, the tool) ended with ERROR."""
    run = _assert_exit_like_untraced(runs, scenario, "open")
    traces = read_traces(run.db)
    assert len(traces) == 2, [span_statuses(t) for t in traces]
    done, open_ = by_root(traces, "-done"), by_root(traces, "-open")
    assert span_statuses(done) == _expect(COMPLETE, "-done")
    assert TAG_INCOMPLETE not in done.info.tags and done.info.token_usage == USAGE_COMPLETE

    assert open_.info.tags.get(TAG_INCOMPLETE) == "true"
    assert open_.info.token_usage == USAGE_TWO_CALLS
    assert span_statuses(open_) == _expect(CUT_AT_TOOL, "-open")
    assert open_.info.state == "ERROR"


EXIT_MARGIN_S = 12.0  # interpreter teardown of AG2 + MLflow measured at 1.5-3 s here, on a loaded 2-core machine


def test_exit_flush_is_bounded_when_mlflow_is_unreachable(runs, tmp_path):
    """MLFLOW_TRACKING_URI points at a closed port (MLflow's client retries for minutes: a plain
    mlflow.flush_trace_async_logging() took 247 s here); one trace completed before exit and one is open at exit.
    The process must exit within AG2_OTEL_EXIT_FLUSH_TIMEOUT + a margin after sys.exit, with its own exit code.
    Run after the batch (``runs``), not in it: with ten other runs starting at once the teardown alone is slower."""
    script = tmp_path / "app.py"
    script.write_text(APP)
    uri = f"http://127.0.0.1:{_closed_port()}"

    def one(timeout):
        return timeout, run_app(script, tmp_path / f"t{timeout:g}", "sysexit", "open", uri=uri,
                                AG2_OTEL_EXIT_FLUSH_TIMEOUT=f"{timeout:g}")

    with ThreadPoolExecutor(len(UNREACHABLE_TIMEOUTS)) as pool:
        results = dict(pool.map(one, UNREACHABLE_TIMEOUTS))
    report = []
    for timeout, run in sorted(results.items()):
        assert run.returncode == 3, run.stderr[-3000:]
        assert "exiting" in run.marks, run.stdout[-2000:]
        exit_s, total_s = run.after["exiting"], run.ended - run.started
        report.append(f"timeout={timeout:g}s: exit {exit_s:.1f}s after sys.exit, total {total_s:.1f}s")
        assert exit_s < timeout + EXIT_MARGIN_S, report
        assert total_s < 200, report  # generous: imports and two chats on a loaded machine
        assert_at_most_one_line_of_ours(run.stderr)
    print("\n[exit flush, MLflow unreachable] " + "; ".join(report))
