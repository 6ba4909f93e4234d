#!/usr/bin/env python
"""ag2-otel overhead benchmark: one table, every configuration in the same run.

    python benchmarks/bench.py [--sizes 20,100,1000] [--repeat 3] [--quick] [--json out.json]

Each configuration runs in its own subprocess (AG2's own instrumentation and ``mlflow.ag2.autolog()`` patch
globally and never unpatch; the global tracer provider can be set once), on the same scripted two-agent
conversation (benchmarks/conversation.py: a tool call every other turn, ``max_turns=N``, no early termination).
Per size: one warm-up conversation, then ``--repeat`` timed ones; the median is reported. Timed: the wall time of
``initiate_chat`` only; ms/turn = time / N. For configurations that write MLflow traces, the time from the end of
``initiate_chat`` until ``mlflow.get_trace`` returns the trace with all its spans is measured as well.

Configurations
  none                  AG2 untraced.
  ag2otel-null          ag2-otel (Ag2Instrumentor, content capture SPAN_ONLY = autolog's default) on an SDK
                        TracerProvider with SimpleSpanProcessor + an exporter that discards (counts) the spans.
  ag2otel-mlflow        ``ag2_otel.autolog()`` (MlflowSpanProcessor defaults: the store writer process writes each
                        trace in one batched call; reads through mlflow wait for it), local sqlite store.
  ag2otel-mlflow-inline ``MlflowSpanProcessor(writer="inline", wait_for_write=True)``: the previous default, replaying
                        the trace through MLflow's tracer in the application process and waiting for MLflow's store.
  ag2otel-otlp-rotel    ``ag2_otel.autolog()`` with OTEL_TRACES_EXPORTER=otlp (BatchSpanProcessor + OTLP/gRPC) to a
                        local rotel-agent started with ``--exporter blackhole`` (receives, then discards).
  ag2-own-null          AG2's ``autogen.opentelemetry`` (instrument_llm_wrapper(capture_messages=True) +
                        instrument_agent on both agents), same null exporter as ag2otel-null.
  mlflow-autolog-async  ``mlflow.ag2.autolog()``, MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=true.
  mlflow-autolog-sync   ``mlflow.ag2.autolog()``, MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=false.

Also measured: export throughput into a fresh local MLflow store (MLflow's own batched ``log_spans`` vs
MlflowSpanProcessor, same spans), and peak RSS (ru_maxrss) of a traced vs an untraced conversation of the largest
size. A targets section prints each target of the performance issue with the measured value and PASS/MISS.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

CONFIGS: list[tuple[str, str]] = [
    ("none", "no tracing"),
    ("ag2otel-null", "ag2-otel, null sink"),
    ("ag2otel-mlflow", "ag2-otel, MLflow sink (autolog: writer process)"),
    ("ag2otel-mlflow-inline", "ag2-otel, MLflow sink in-process (old)"),
    ("ag2otel-otlp-rotel", "ag2-otel, OTLP/gRPC to rotel"),
    ("ag2-own-null", "AG2 own otel, null exporter"),
    ("mlflow-autolog-async", "mlflow.ag2.autolog async"),
    ("mlflow-autolog-sync", "mlflow.ag2.autolog sync"),
]
MLFLOW_CONFIGS = {"ag2otel-mlflow", "ag2otel-mlflow-inline", "mlflow-autolog-async", "mlflow-autolog-sync"}
PEERS = [("ag2-own-null", "AG2-own"), ("mlflow-autolog-async", "autolog-async"),
         ("mlflow-autolog-sync", "autolog-sync")]
READABLE_DEADLINE_S = 300.0
MANY_TURNS = 2  # the short conversation of the stored-traces/s section: 2 turns, a tool call, 7 spans


# ==================================================================================================================
# worker side (runs inside one subprocess per configuration)
# ==================================================================================================================

def _silence_stdout() -> None:
    """AG2 prints tool executions even with silent=True: same cost in every configuration, but not on our terminal."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(1, "w", closefd=False)


class _CountingNullExporter:
    """A SpanExporter that discards what it gets (counting spans, remembering when a root span ended)."""

    def __init__(self) -> None:
        self.spans = 0
        self.root_ended_at: float | None = None

    def export(self, spans):  # noqa: ANN001
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.spans += len(spans)
        for span in spans:
            if span.parent is None:
                self.root_ended_at = time.perf_counter()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _marker_processor():
    """A SpanProcessor counting ended spans and noting when a root span ended (added BEFORE our MLflow sink, so the
    time is taken before the sink writes)."""
    from opentelemetry.sdk.trace import SpanProcessor

    class Marker(SpanProcessor):
        def __init__(self) -> None:
            self.spans = 0
            self.root_ended_at: float | None = None

        def on_end(self, span) -> None:  # noqa: ANN001
            self.spans += 1
            if span.parent is None:
                self.root_ended_at = time.perf_counter()

    return Marker()


class _Store:
    """Polls a local sqlite MLflow store for a trace (cheap SQL on MLflow's ``trace_info``/``spans`` tables), then
    confirms with ``mlflow.get_trace`` that the trace is readable with all its spans."""

    def __init__(self, uri: str) -> None:
        assert uri.startswith("sqlite:///"), uri
        self.path = uri[len("sqlite:///"):]
        self._conn: sqlite3.Connection | None = None

    def _count(self, trace_id: str) -> tuple[int, int]:
        if self._conn is None:
            if not os.path.exists(self.path):
                return 0, 0
            self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5, isolation_level=None)
        try:
            row = self._conn.execute(
                "SELECT (SELECT count(*) FROM trace_info WHERE request_id = ?), "
                "(SELECT count(*) FROM spans WHERE trace_id = ?)", (trace_id, trace_id)).fetchone()
            return int(row[0]), int(row[1])
        except sqlite3.OperationalError:  # schema not created yet, or locked by the writer
            return 0, 0

    def wait_readable(self, trace_id: str, expected_spans: int, since: float) -> dict[str, Any]:
        import mlflow

        deadline = time.perf_counter() + READABLE_DEADLINE_S
        while True:
            infos, spans = self._count(trace_id)
            now = time.perf_counter()
            if infos and spans >= expected_spans:
                read_start = time.perf_counter()
                trace = mlflow.get_trace(trace_id, silent=True)
                read_s = time.perf_counter() - read_start
                if trace is not None and len(trace.data.spans) == expected_spans:
                    return {"readable_s": now - since, "get_trace_s": read_s}
            if now > deadline:
                return {"readable_s": None, "get_trace_s": None, "error": f"{spans}/{expected_spans} spans"}
            time.sleep(0.002)


class Runner:
    """One configuration: ``setup()`` once, ``agents()`` per conversation, ``after(result)`` per conversation."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.exporter: Any = None  # counts spans for non-MLflow configs
        self.marker: Any = None
        self.instrument_agent = None
        self.store: _Store | None = None

    def setup(self) -> None:
        name = self.name
        if name == "none":
            return
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        if name in MLFLOW_CONFIGS:
            import mlflow

            self.store = _Store(mlflow.get_tracking_uri())
        if name == "ag2otel-null":
            from ag2_otel import Ag2Instrumentor

            provider = TracerProvider()
            self.exporter = _CountingNullExporter()
            provider.add_span_processor(SimpleSpanProcessor(self.exporter))
            trace.set_tracer_provider(provider)
            Ag2Instrumentor().instrument(tracer_provider=provider, capture_content="SPAN_ONLY")
        elif name == "ag2otel-mlflow":
            import ag2_otel

            provider = TracerProvider()
            self.marker = _marker_processor()
            provider.add_span_processor(self.marker)  # before autolog's MLflow processor
            trace.set_tracer_provider(provider)
            ag2_otel.autolog()  # respects the global SDK provider: adds MlflowSpanProcessor (writer process)
        elif name == "ag2otel-mlflow-inline":
            from ag2_otel import Ag2Instrumentor
            from ag2_otel.sinks.mlflow_processor import MlflowSpanProcessor

            provider = TracerProvider()
            self.marker = _marker_processor()
            provider.add_span_processor(self.marker)
            provider.add_span_processor(MlflowSpanProcessor(writer="inline", wait_for_write=True))
            trace.set_tracer_provider(provider)
            Ag2Instrumentor().instrument(tracer_provider=provider, capture_content="SPAN_ONLY")
        elif name == "ag2otel-otlp-rotel":
            import ag2_otel

            ag2_otel.autolog()  # OTEL_TRACES_EXPORTER=otlp (set by the parent): BatchSpanProcessor + OTLP exporter
            self.marker = _marker_processor()
            trace.get_tracer_provider().add_span_processor(self.marker)
        elif name == "ag2-own-null":
            from autogen.opentelemetry import instrument_agent, instrument_llm_wrapper

            provider = TracerProvider()
            self.exporter = _CountingNullExporter()
            provider.add_span_processor(SimpleSpanProcessor(self.exporter))
            trace.set_tracer_provider(provider)
            instrument_llm_wrapper(tracer_provider=provider, capture_messages=True)
            self.instrument_agent = lambda agent: instrument_agent(agent, tracer_provider=provider)
        elif name in ("mlflow-autolog-async", "mlflow-autolog-sync"):
            import mlflow
            import mlflow.ag2

            mlflow.ag2.autolog()
        else:
            raise SystemExit(f"unknown configuration {name!r}")

    def spans_so_far(self) -> int | None:
        counter = self.exporter or self.marker
        return counter.spans if counter is not None else None

    def root_ended_at(self) -> float | None:
        counter = self.exporter or self.marker
        return counter.root_ended_at if counter is not None else None

    def flush(self) -> float:
        """Drain any background export (not timed into ms/turn; returned for information)."""
        start = time.perf_counter()
        if self.name in ("ag2otel-otlp-rotel", "ag2otel-mlflow"):
            import ag2_otel

            ag2_otel.flush()
        elif self.name in MLFLOW_CONFIGS:
            import mlflow

            mlflow.flush_trace_async_logging()
        return time.perf_counter() - start


def _rss_now_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def worker_main(config: str, sizes: list[int], repeat: int) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import conversation

    _silence_stdout()
    conversation.quiet_ag2()
    runner = Runner(config)
    runner.setup()
    out: dict[str, Any] = {"config": config, "sizes": {}}
    for n in sizes:
        try:
            out["sizes"][str(n)] = _measure_size(config, runner, n, repeat, conversation)
        except Exception as exc:  # noqa: BLE001 - one size failing must not lose the others
            out["sizes"][str(n)] = {"turns": n, "error": f"{type(exc).__name__}: {exc}"[:300]}
            print(f"[worker] {config} at {n} turns failed: {exc}", file=sys.stderr, flush=True)
    out["ru_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return out


def _measure_size(config: str, runner: Runner, n: int, repeat: int, conversation: Any) -> dict[str, Any]:
    # warm-up (also: the expected span count of a conversation of this size)
    gc.collect()
    before = runner.spans_so_far()
    user, assistant = conversation.build(runner.instrument_agent)
    conversation.chat(user, assistant, n)
    runner.flush()
    expected = None
    if runner.store is not None:
        import mlflow

        trace_id = mlflow.get_last_active_trace_id()
        trace = mlflow.get_trace(trace_id, silent=True) if trace_id else None
        expected = len(trace.data.spans) if trace is not None else None
        if expected is None:
            raise RuntimeError(f"{config}: no MLflow trace after the warm-up conversation")
    elif before is not None:
        expected = runner.spans_so_far() - before
    seconds, readable, readable_from_root, get_trace_s, flush_s = [], [], [], [], []
    for _ in range(repeat):
        user, assistant = conversation.build(runner.instrument_agent)
        gc.collect()
        last_trace = None
        if runner.store is not None:
            import mlflow

            last_trace = mlflow.get_last_active_trace_id()
        start = time.perf_counter()
        conversation.chat(user, assistant, n)
        end = time.perf_counter()
        seconds.append(end - start)
        if runner.store is not None:
            import mlflow

            trace_id = mlflow.get_last_active_trace_id()
            if trace_id is None or trace_id == last_trace:
                raise RuntimeError(f"{config}: no new MLflow trace id after the conversation")
            got = runner.store.wait_readable(trace_id, expected, since=end)
            if got.get("error"):
                raise RuntimeError(f"{config}: trace {trace_id} not readable: {got['error']}")
            readable.append(got["readable_s"])
            get_trace_s.append(got["get_trace_s"])
            root_end = runner.root_ended_at()
            if root_end is not None:
                readable_from_root.append(got["readable_s"] + (end - root_end))
        else:
            flush_s.append(runner.flush())

    def med(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    return {
        "turns": n, "repeat": repeat, "seconds": seconds, "median_s": med(seconds),
        "ms_per_turn": med(seconds) * 1000 / n, "spans": expected,
        "readable_ms": (med(readable) * 1000) if readable else None,
        "readable_from_root_end_ms": (med(readable_from_root) * 1000) if readable_from_root else None,
        "get_trace_ms": (med(get_trace_s) * 1000) if get_trace_s else None,
        "flush_after_ms": (med(flush_s) * 1000) if flush_s and config != "none" else None,
    }


def rss_worker(mode: str, turns: int) -> dict[str, Any]:
    """Peak RSS of one process running a small warm-up and one ``turns``-turn conversation."""
    sys.path.insert(0, str(HERE))
    import conversation

    _silence_stdout()
    conversation.quiet_ag2()
    if mode == "traced":
        import ag2_otel

        ag2_otel.autolog()  # ag2-otel + MLflow sink (local sqlite store), the default path
    elif mode == "untraced+mlflow-imported":
        import mlflow  # noqa: F401 - the import alone, for reference
    user, assistant = conversation.build()
    conversation.chat(user, assistant, 5)
    gc.collect()
    rss_before = _rss_now_kb()
    user, assistant = conversation.build()
    conversation.chat(user, assistant, turns)
    writer_peak_kb = None
    if mode == "traced":
        ag2_otel.flush()  # the trace is stored before measuring
        store = getattr(ag2_otel.mlflow_processor(), "_store", None)
        proc = getattr(store, "_proc", None)
        if proc is not None:  # the store writer process: its own memory, reported beside ours
            with open(f"/proc/{proc.pid}/status") as status:
                writer_peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return {"mode": mode, "turns": turns, "rss_before_kb": rss_before, "rss_after_kb": _rss_now_kb(),
            "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "writer_peak_kb": writer_peak_kb}


def throughput_worker(target_spans: int, repeat: int, workdir: Path) -> dict[str, Any]:
    """Export throughput into a fresh local MLflow store: MLflow's own batched ``log_spans`` vs MlflowSpanProcessor.

    The spans: real ag2-otel spans of a conversation sized to about ``target_spans`` spans (content capture on),
    captured in memory. MLflow batched: the spans are OTLP-encoded and converted with ``Span.from_otel_proto`` (what
    MLflow's own OTLP endpoint does), then written in ONE ``TracingClient.log_spans(experiment_id, spans)`` call
    (the call MLflow's exporter makes; MlflowClient has no public span-batch method in 3.17) - that call is timed.
    ag2-otel: the same ReadableSpans are fed to a MlflowSpanProcessor (defaults: the store writer process) on another
    fresh store, in their original start/end order; timed from the first on_start until the trace is readable; then
    the same with ``writer="inline"`` (the previous in-process replay). One extra trace warms each path up (store
    creation, schema, the writer process) before the timed ones.
    """
    sys.path.insert(0, str(HERE))
    import conversation

    _silence_stdout()
    conversation.quiet_ag2()
    import mlflow
    from mlflow.entities import Span
    from mlflow.tracing.client import TracingClient
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ag2_otel import Ag2Instrumentor
    from ag2_otel.sinks.mlflow_processor import MlflowSpanProcessor

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrumentor = Ag2Instrumentor()
    instrumentor.instrument(tracer_provider=provider, capture_content="SPAN_ONLY")
    conversation.chat(*conversation.build(), 10)
    per_turn = len(memory.get_finished_spans()) / 10
    turns = max(2, round((target_spans - 1) / per_turn))
    traces: list[list[Any]] = []
    for _ in range(repeat + 1):
        memory.clear()
        conversation.chat(*conversation.build(), turns)
        traces.append(list(memory.get_finished_spans()))
    instrumentor.uninstrument()
    n_spans = len(traces[0])

    # --- MLflow's own batched log_spans, fresh store A --------------------------------------------------------------
    uri_a = f"sqlite:///{workdir / 'batched.db'}"
    client = TracingClient(uri_a)
    experiment_a = mlflow.MlflowClient(uri_a).create_experiment("batched")
    convert_s, write_s, read_ok = [], [], []
    for index, spans in enumerate(traces):
        t0 = time.perf_counter()
        request = encode_spans(spans)
        mlflow_spans = [Span.from_otel_proto(proto, resource=rs.resource)
                        for rs in request.resource_spans for ss in rs.scope_spans for proto in ss.spans]
        t1 = time.perf_counter()
        client.log_spans(experiment_a, mlflow_spans)
        t2 = time.perf_counter()
        got = mlflow.MlflowClient(uri_a).get_trace(mlflow_spans[0].trace_id)
        if index:
            convert_s.append(t1 - t0)
            write_s.append(t2 - t1)
            read_ok.append(len(got.data.spans) == len(spans))

    # --- ag2-otel MlflowSpanProcessor, fresh store B ---------------------------------------------------------------
    uri_b = f"sqlite:///{workdir / 'ag2otel.db'}"
    mlflow.set_tracking_uri(uri_b)
    mlflow.set_experiment("ag2otel")
    store = _Store(uri_b)
    processor = MlflowSpanProcessor()

    def feed(processor: Any, spans: list[Any]) -> tuple[float, float, bool]:
        """Replay ``spans`` into ``processor`` in their original order; (first on_start -> readable,
        root end -> readable, readable?) in seconds."""
        events = sorted([(s.start_time, 0, i) for i, s in enumerate(spans)] +
                        [(s.end_time, 1, i) for i, s in enumerate(spans)])
        gc.collect()
        root_end_at = None
        t0 = time.perf_counter()
        for _, kind, i in events:
            span = spans[i]
            if kind == 0:
                processor.on_start(span)
            else:
                if span.parent is None:
                    root_end_at = time.perf_counter()
                processor.on_end(span)
        got = store.wait_readable(mlflow.get_last_active_trace_id(), len(spans), since=t0)
        if got.get("error"):
            return float("nan"), float("nan"), False
        return got["readable_s"], got["readable_s"] - (root_end_at - t0), True

    feed_s, root_to_readable_s, ours_ok = [], [], []
    for index, spans in enumerate(traces):
        total, from_root, ok = feed(processor, spans)
        if index:
            feed_s.append(total)
            root_to_readable_s.append(from_root)
            ours_ok.append(ok)
    # the same spans again (new trace ids are not needed: a fresh processor, another fresh store), in-process
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'ag2otel-inline.db'}")
    mlflow.set_experiment("ag2otel-inline")
    store = _Store(mlflow.get_tracking_uri())
    inline = MlflowSpanProcessor(writer="inline", wait_for_write=True)
    inline_s, inline_root_s = [], []
    for index, spans in enumerate(traces):
        total, from_root, ok = feed(inline, spans)
        if index:
            inline_s.append(total)
            inline_root_s.append(from_root)
            ours_ok.append(ok)
    med = statistics.median
    return {
        "turns": turns, "spans": n_spans, "repeat": repeat,
        "batched_write_ms": med(write_s) * 1000, "batched_convert_ms": med(convert_s) * 1000,
        "batched_spans_per_s": n_spans / med(write_s), "batched_readable": all(read_ok),
        "ours_total_ms": med(feed_s) * 1000, "ours_spans_per_s": n_spans / med(feed_s),
        "ours_root_end_to_readable_ms": med(root_to_readable_s) * 1000, "ours_readable": all(ours_ok),
        "inline_total_ms": med(inline_s) * 1000, "inline_spans_per_s": n_spans / med(inline_s),
        "inline_root_end_to_readable_ms": med(inline_root_s) * 1000,
        "processor_stats": processor.stats,
    }


def many_worker(mode: str, chats: int, turns: int) -> dict[str, Any]:
    """Many short conversations, back to back, as fast as one process runs them; how fast traces are STORED.

    ``ag2otel``: ``ag2_otel.autolog()`` (MlflowSpanProcessor, store writer process) into the local sqlite store.
    ``chats`` conversations of ``turns`` turns run one after another; timed from the first chat's start until the
    writer reports every trace stored (``stats["traces_stored"]``, polled every 20 ms, then counted in the store's
    ``trace_info`` table). A sampler thread reads ``traces_stored`` / ``traces_queued`` every 20 ms: the
    **sustained** rate is traces stored per second over the time a backlog existed (the writer never idle), i.e. what
    it holds indefinitely; ``backlog_peak`` is the most traces ever waiting.

    ``mlflow``: MLflow's own tracing writing traces of the same shape (the same span tree, names, inputs/outputs as
    the mapping gives them) with fluent ``mlflow.start_span`` and MLflow's async trace logging, as fast as it goes;
    timed from the first span until ``mlflow.flush_trace_async_logging()`` returns. No AG2 conversation runs there:
    it is the store path alone, so the comparison favours MLflow.
    """
    import threading

    sys.path.insert(0, str(HERE))
    import conversation

    _silence_stdout()
    conversation.quiet_ag2()
    import mlflow

    uri = os.environ["MLFLOW_TRACKING_URI"]
    if mode == "ag2otel":
        import ag2_otel

        ag2_otel.autolog()
        processor = ag2_otel.mlflow_processor()
        conversation.chat(*conversation.build(), turns)  # warm-up: the writer process, the store's schema
        assert processor.flush(120)
        base = processor.stats["traces_stored"]
        samples: list[tuple[float, int, int]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                s = processor.stats
                # traces_queued: the writer's backlog (an older ag2-otel without it: handed over, not yet stored)
                queued = s.get("traces_queued", s["traces_written"] - s["traces_stored"] - s["traces_failed"] - 1)
                samples.append((time.perf_counter(), s["traces_stored"] - base, queued))
                stop.wait(0.02)  # sampling period, not synchronisation

        sampler = threading.Thread(target=sample, daemon=True)
        t0 = time.perf_counter()
        sampler.start()
        for _ in range(chats):
            conversation.chat(*conversation.build(), turns)
        chats_done = time.perf_counter()
        deadline = time.monotonic() + READABLE_DEADLINE_S
        while processor.stats["traces_stored"] - base < chats and time.monotonic() < deadline:
            if processor.stats["traces_failed"]:
                break
            time.sleep(0.02)  # polling the writer's counter against a deadline
        stored_at = time.perf_counter()
        stop.set()
        sampler.join()
        stats = processor.stats
        busy = [(t, n) for t, n, queued in samples if queued > 0]
        sustained = ((busy[-1][1] - busy[0][1]) / (busy[-1][0] - busy[0][0])
                     if len(busy) > 1 and busy[-1][0] > busy[0][0] else None)
        with contextlib.closing(sqlite3.connect(f"file:{uri[len('sqlite:///'):]}?mode=ro", uri=True)) as db:
            in_store = db.execute("SELECT COUNT(*) FROM trace_info").fetchone()[0] - 1  # minus the warm-up
            spans = db.execute("SELECT COUNT(*) FROM spans").fetchone()[0]
        return {"mode": mode, "chats": chats, "turns": turns, "spans_per_trace": round(spans / (in_store + 1), 1),
                "chats_per_s": chats / (chats_done - t0), "stored_per_s": chats / (stored_at - t0),
                "sustained_per_s": sustained, "backlog_peak": stats.get("backlog_peak", max(q for _, _, q in samples)),
                "batches": stats.get("batches"),
                "in_store": in_store, "failed": stats["traces_failed"], "dropped": stats["traces_dropped"]}

    # --- MLflow's own tracing, same trace shape -------------------------------------------------------------------
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ag2_otel import Ag2Instrumentor
    from ag2_otel.mapping.mlflow_trace import build_trace_record

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrumentor = Ag2Instrumentor()
    instrumentor.instrument(tracer_provider=provider, capture_content="SPAN_ONLY")
    conversation.chat(*conversation.build(), turns)
    instrumentor.uninstrument()
    finished = list(memory.get_finished_spans())
    root = next(s for s in finished if s.parent is None)
    record = build_trace_record(finished, root_span_id=root.context.span_id, complete=True, dropped_spans=0)
    children: dict[str | None, list[Any]] = {}
    for rec in record.spans:
        children.setdefault(rec.parent_id, []).append(rec)

    def emit(rec: Any) -> None:
        with mlflow.start_span(rec.name, span_type=rec.span_type, attributes=rec.attributes) as span:
            span.set_inputs(rec.inputs)
            for child in children.get(rec.span_id, ()):
                emit(child)
            span.set_outputs(rec.outputs)

    mlflow.set_experiment("mlflow-own")
    emit(record.root)  # warm-up
    mlflow.flush_trace_async_logging()
    t0 = time.perf_counter()
    for _ in range(chats):
        emit(record.root)
    emitted = time.perf_counter()
    mlflow.flush_trace_async_logging()
    stored_at = time.perf_counter()
    with contextlib.closing(sqlite3.connect(f"file:{uri[len('sqlite:///'):]}?mode=ro", uri=True)) as db:
        in_store = db.execute("SELECT COUNT(*) FROM trace_info").fetchone()[0] - 1
    return {"mode": mode, "chats": chats, "turns": turns, "spans_per_trace": len(record.spans),
            "chats_per_s": chats / (emitted - t0), "stored_per_s": chats / (stored_at - t0), "in_store": in_store}


# ==================================================================================================================
# parent side
# ==================================================================================================================

def find_rotel_agent() -> str | None:
    """As tests/collector.py: next to this interpreter, else inside the installed ``rotel`` package, else PATH."""
    found = shutil.which("rotel-agent", path=os.path.dirname(sys.executable))
    if found:
        return found
    try:
        import rotel

        candidate = Path(rotel.__file__).parent / "rotel-agent"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    except ImportError:
        pass
    return shutil.which("rotel-agent")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def rotel_blackhole(workdir: Path):
    """A rotel-agent receiving OTLP (gRPC + HTTP) and discarding everything (``--exporter blackhole``)."""
    binary = find_rotel_agent()
    if binary is None:
        yield None
        return
    grpc_port, http_port = _free_port(), _free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "rotel.out", "ab")
    process = subprocess.Popen(
        [binary, "start", "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
         "--otlp-http-endpoint", f"127.0.0.1:{http_port}", "--otlp-receiver-metrics-disabled",
         "--otlp-receiver-logs-disabled", "--pid-file", str(workdir / "rotel.pid"),
         "--log-file", str(workdir / "rotel.log"), "--exporter", "blackhole"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    try:
        deadline = time.monotonic() + 15
        while not (_accepts(grpc_port) and _accepts(http_port)):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rotel-agent did not start: {(workdir / 'rotel.out').read_text()[-2000:]}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{grpc_port}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _base_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "AG2_OTEL_", "MLFLOW_"))}  # nothing inherited may change a configuration
    env.update({
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "MLFLOW_MODEL_CATALOG_URI": "",  # offline: no pricing catalog download
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
        "HOME": os.environ.get("HOME", str(workdir)),
    })
    return env


def _run_worker(args: list[str], env: dict[str, str], workdir: Path, timeout: float) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    result_file = workdir / "result.json"
    command = [sys.executable, str(Path(__file__).resolve()), *args, "--result", str(result_file)]
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    (workdir / "stderr.txt").write_text(done.stderr)
    if done.returncode != 0 or not result_file.exists():
        raise RuntimeError(f"worker {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(result_file.read_text())


def _load() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _fmt(value: float | None, spec: str = ".3f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def render(results: dict[str, Any], sizes: list[int], info: dict[str, Any]) -> str:
    runs = results["configs"]
    lines = ["# ag2-otel overhead benchmark", ""]
    lines.append(f"{info['when']} · {info['cpus']} CPU · Python {info['python']} · ag2 {info['ag2']} · "
                 f"mlflow {info['mlflow']} · opentelemetry-sdk {info['otel']} · repeat {info['repeat']} (median)"
                 f"{' · QUICK' if info['quick'] else ''} · load average {info['load_before']} before, "
                 f"{info.get('load_after', '?')} after (other processes on this machine add noise)")
    lines.append("")
    header = ["configuration", "turns", "spans", "ms/turn", "overhead ms/turn", "× no tracing"]
    header += [f"overhead ÷ {label}" for _, label in PEERS]
    header += ["readable after chat (ms)", "readable after root end (ms)"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")

    def row(config: str, n: int) -> dict[str, Any] | None:
        run = runs.get(config)
        r = None if not run or "error" in run else run["sizes"].get(str(n))
        return None if r is None or "error" in r else r

    for config, label in CONFIGS:
        run = runs.get(config)
        if run is None:
            continue
        if "error" in run:
            lines.append(f"| {label} | — | — | failed: {run['error'][:80]} |" + " |" * (len(header) - 4))
            continue
        for n in sizes:
            r, base = row(config, n), row("none", n)
            failed = run["sizes"].get(str(n), {}).get("error")
            if failed:
                lines.append(f"| {label} | {n} | failed: {failed[:160]} |" + " |" * (len(header) - 3))
                continue
            if r is None:
                continue
            overhead = r["ms_per_turn"] - base["ms_per_turn"] if base else None
            cells = [label, str(n), _fmt(r["spans"], "d") if r["spans"] is not None else "—",
                     _fmt(r["ms_per_turn"]), _fmt(overhead if config != "none" else None, "+.3f"),
                     _fmt(r["ms_per_turn"] / base["ms_per_turn"] if base else None, ".2f", "×")]
            for peer, _ in PEERS:
                p = row(peer, n)
                peer_overhead = p["ms_per_turn"] - base["ms_per_turn"] if p and base else None
                ratio = (overhead / peer_overhead if overhead is not None and peer_overhead and peer_overhead > 0
                         and config not in ("none", peer) else None)
                cells.append(_fmt(ratio, ".2f"))
            cells += [_fmt(r.get("readable_ms"), ".1f"), _fmt(r.get("readable_from_root_end_ms"), ".1f")]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Overhead = ms/turn − ms/turn of *no tracing* at the same size (same run). \"overhead ÷ X\" = this "
                 "row's overhead / X's overhead. Readable = `mlflow.get_trace` returns the trace with all its spans "
                 "(polled every 2 ms). OTLP flush after each chat (not in ms/turn): " + ", ".join(
                     f"{n} turns {_fmt(row('ag2otel-otlp-rotel', n) and row('ag2otel-otlp-rotel', n)['flush_after_ms'], '.1f')} ms"
                     for n in sizes) + ".")

    tp = results.get("throughput")
    if tp is not None:
        lines += ["", "## Export into a fresh local MLflow store (sqlite), same spans", ""]
    if tp and "error" not in tp:
        lines.append(f"{tp['spans']} ag2-otel spans ({tp['turns']} turns, content on), median of {tp['repeat']}.")
        lines.append("")
        lines.append("| path | time (ms) | spans/s |")
        lines.append("|---|---:|---:|")
        lines.append(f"| MLflow batched `TracingClient.log_spans` (one call) | {tp['batched_write_ms']:.1f} | "
                     f"{tp['batched_spans_per_s']:,.0f} |")
        lines.append(f"| (MLflow: OTLP encode + `Span.from_otel_proto`, not in the rate) | "
                     f"{tp['batched_convert_ms']:.1f} | — |")
        lines.append(f"| ag2-otel MlflowSpanProcessor: first on_start → readable | {tp['ours_total_ms']:.1f} | "
                     f"{tp['ours_spans_per_s']:,.0f} |")
        lines.append(f"| ag2-otel: root span end → readable | {tp['ours_root_end_to_readable_ms']:.1f} | — |")
        lines.append(f"| ag2-otel in-process writer (old): first on_start → readable | {tp['inline_total_ms']:.1f} | "
                     f"{tp['inline_spans_per_s']:,.0f} |")
        lines.append(f"| ag2-otel in-process writer (old): root span end → readable | "
                     f"{tp['inline_root_end_to_readable_ms']:.1f} | — |")
        if not (tp["batched_readable"] and tp["ours_readable"]):
            lines.append("| WARNING: a trace was not readable with all its spans | | |")
    elif tp is not None:
        lines.append(f"failed: {tp.get('error')}")

    many = results.get("many")
    if many:
        lines += ["", "## Many short conversations into the local sqlite store (one process, back to back)", ""]
        lines.append("| writer | traces | spans/trace | chats/s | stored traces/s (first chat → last stored) | "
                     "sustained store rate (traces/s, while a backlog existed) | backlog peak | store writes |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for mode, label in (("ag2otel", "ag2-otel autolog (writer process, batched)"),
                            ("mlflow", "MLflow's own tracing, same trace shape (fluent spans, async logging)")):
            r = many.get(mode)
            if not r:
                continue
            if "error" in r:
                lines.append(f"| {label} | failed: {r['error'][:120]} | | | | | | |")
                continue
            lines.append(f"| {label} | {r['in_store']}/{r['chats']} | {r['spans_per_trace']} | "
                         f"{_fmt(r['chats_per_s'] if mode == 'ag2otel' else None, '.1f')} | {r['stored_per_s']:.1f} | "
                         f"{_fmt(r.get('sustained_per_s'), '.1f')} | {_fmt(r.get('backlog_peak'), 'd')} | "
                         f"{_fmt(r.get('batches'), 'd')} |")
        lines.append("")
        lines.append("MLflow's row runs no AG2 conversation (only its spans, as fast as they go), so it favours MLflow. "
                     "Sustained = traces stored per second over the time the writer had a backlog (never idle): the "
                     "rate it holds indefinitely; if the backlog never formed, the chats were slower than the writer.")

    rss = results.get("rss", {})
    if rss:
        lines += ["", "## Peak RSS (ru_maxrss) of one process: warm-up + one conversation", ""]
        lines.append("| process | turns | RSS before chat (MB) | RSS after chat (MB) | peak RSS (MB) | writer process "
                     "peak (MB) |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for mode in ("untraced", "untraced+mlflow-imported", "traced"):
            r = rss.get(mode)
            if r and "error" not in r:
                label = {"traced": "traced (ag2_otel.autolog, MLflow sink)"}.get(mode, mode)
                writer = r.get("writer_peak_kb")
                lines.append(f"| {label} | {r['turns']} | {r['rss_before_kb'] / 1024:.1f} | {r['rss_after_kb'] / 1024:.1f} "
                             f"| {r['ru_maxrss_kb'] / 1024:.1f} | {_fmt(writer and writer / 1024, '.1f')} |")
            elif r:
                lines.append(f"| {mode} | failed: {r['error'][:80]} | | | |")

    lines += ["", "## Targets", ""]
    lines.append("| target | measured | result |")
    lines.append("|---|---|---|")
    for target, measured, ok in targets(results, sizes):
        lines.append(f"| {target} | {measured} | {'—' if ok is None else ('PASS' if ok else 'MISS')} |")
    return "\n".join(lines) + "\n"


def targets(results: dict[str, Any], sizes: list[int]) -> list[tuple[str, str, bool | None]]:
    runs = results["configs"]
    mid = 100 if 100 in sizes else sizes[len(sizes) // 2]
    small, large = min(sizes), max(sizes)

    def per_turn(config: str, n: int) -> float | None:
        run = runs.get(config)
        if not run or "error" in run or str(n) not in run["sizes"] or "error" in run["sizes"][str(n)]:
            return None
        return run["sizes"][str(n)]["ms_per_turn"]

    def overhead(config: str, n: int) -> float | None:
        a, b = per_turn(config, n), per_turn("none", n)
        return None if a is None or b is None else a - b

    out: list[tuple[str, str, bool | None]] = []

    def check(target: str, value: float | None, limit: float, fmt: str, unit: str = "") -> None:
        if value is None:
            out.append((target, "not measured", None))
        else:
            out.append((target, f"{value:{fmt}}{unit} (limit {limit:{fmt}}{unit})", value <= limit))

    def at_least(target: str, value: float | None, floor: float, fmt: str, unit: str = "") -> None:
        if value is None:
            out.append((target, "not measured", None))
        else:
            out.append((target, f"{value:{fmt}}{unit} (floor {floor:{fmt}}{unit})", value >= floor))

    check(f"overhead/turn at {mid} turns, null sink ≤ 0.35 ms", overhead("ag2otel-null", mid), 0.35, ".3f", " ms")
    check(f"overhead/turn at {mid} turns, MLflow sink (autolog default: writer process) ≤ 1.0 ms",
          overhead("ag2otel-mlflow", mid), 1.0, ".3f", " ms")
    check("  (info) same, in-process writer (old default) ≤ 1.0 ms", overhead("ag2otel-mlflow-inline", mid), 1.0,
          ".3f", " ms")
    own, mine = overhead("ag2-own-null", mid), overhead("ag2otel-null", mid)
    check(f"null sink overhead ≤ 1/4 of AG2-own (null exporter) at {mid} turns: ratio ≤ 0.25",
          mine / own if own and mine is not None and own > 0 else None, 0.25, ".2f")
    auto, mine = overhead("mlflow-autolog-async", mid), overhead("ag2otel-mlflow", mid)
    check(f"MLflow sink overhead ≤ 1/6 of mlflow.ag2.autolog async at {mid} turns: ratio ≤ 0.167",
          mine / auto if auto and mine is not None and auto > 0 else None, 1 / 6, ".3f")
    mine = overhead("ag2otel-mlflow-inline", mid)
    check("  (info) same with the in-process writer (old default): ratio ≤ 0.167",
          mine / auto if auto and mine is not None and auto > 0 else None, 1 / 6, ".3f")
    for config, label in (("ag2otel-null", "null sink"), ("ag2otel-mlflow", "MLflow sink")):
        a, b = overhead(config, large), overhead(config, small)
        check(f"{label}: overhead/turn at {large} turns ≤ 1.3× that at {small} turns",
              a / b if a is not None and b and b > 0 else None, 1.3, ".2f", "×")
    tp = results.get("throughput") or {}
    if "ours_spans_per_s" in tp:
        check(f"export throughput ≥ 0.8× MLflow batched log_spans ({tp['batched_spans_per_s']:,.0f} spans/s): ours "
              f"{tp['ours_spans_per_s']:,.0f} spans/s, ratio ≥ 0.8 (shown as batched/ours ≤ 1.25)",
              tp["batched_spans_per_s"] / tp["ours_spans_per_s"], 1.25, ".2f", "×")
        check(f"root end → trace readable ≤ 1.2× batched write ({tp['batched_write_ms']:.1f} ms): "
              f"{tp['ours_root_end_to_readable_ms']:.1f} ms", tp["ours_root_end_to_readable_ms"] /
              tp["batched_write_ms"], 1.2, ".2f", "×")
        at_least(f"one {tp['spans']}-span trace: ≥ 1,300 spans/s (first on_start → readable)", tp["ours_spans_per_s"],
                 1300, ",.0f", " spans/s")
    else:
        out.append(("export throughput / readable latency", "not measured", None))
    many = results.get("many") or {}
    ours, theirs = many.get("ag2otel") or {}, many.get("mlflow") or {}
    if "stored_per_s" in ours:
        target = f"short conversations ({ours['spans_per_trace']} spans): sustained store rate ≥ 150 traces/s"
        if ours.get("sustained_per_s") is None:  # the chats were slower than the writer: it kept up with them
            out.append((target, f"no backlog formed: the writer kept up with {ours['chats_per_s']:.1f} chats/s",
                        None))
        else:
            at_least(target, ours["sustained_per_s"], 150, ".1f", " traces/s")
        at_least("  (info) stored traces/s, first chat → last stored ≥ 150", ours["stored_per_s"], 150, ".1f")
        if "stored_per_s" in theirs:
            at_least(f"stored traces/s ≥ 4× MLflow's own tracing ({theirs['stored_per_s']:.1f}/s)",
                     ours["stored_per_s"] / theirs["stored_per_s"], 4.0, ".2f", "×")
    else:
        out.append(("short conversations: stored traces/s", "not measured", None))
    rss = results.get("rss", {})
    t, u = rss.get("traced"), rss.get("untraced")
    if t and u and "error" not in t and "error" not in u:
        check(f"peak RSS traced ≤ 1.5× untraced ({t['turns']} turns): {t['ru_maxrss_kb'] / 1024:.0f} MB vs "
              f"{u['ru_maxrss_kb'] / 1024:.0f} MB", t["ru_maxrss_kb"] / u["ru_maxrss_kb"], 1.5, ".2f", "×")
    else:
        out.append(("peak RSS traced ≤ 1.5× untraced", "not measured", None))
    return out


def parent_main(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([10, 20] if args.quick else [20, 100, 1000])
    repeat = args.repeat or (1 if args.quick else 3)
    target_spans = 120 if args.quick else 500
    configs = [c for c, _ in CONFIGS if not args.only or c in args.only.split(",")]
    if args.many_only:
        configs = []
    many_chats = args.many_chats or (40 if args.quick else 300)
    import importlib.metadata as md

    def version(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "?"

    info = {"when": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "python": sys.version.split()[0],
            "ag2": version("ag2"), "mlflow": version("mlflow"), "otel": version("opentelemetry-sdk"),
            "repeat": repeat, "quick": args.quick, "load_before": _load()}
    results: dict[str, Any] = {"info": info, "sizes": sizes, "configs": {}}
    root = Path(tempfile.mkdtemp(prefix="ag2-otel-bench-"))
    timeout = 7200.0
    try:
        for config in configs:
            workdir = root / config
            workdir.mkdir(parents=True)
            env = _base_env(workdir)
            started = time.monotonic()
            print(f"[bench] {config} sizes={sizes} repeat={repeat} ...", file=sys.stderr, flush=True)
            try:
                if config == "ag2otel-otlp-rotel":
                    with rotel_blackhole(workdir / "rotel") as endpoint:
                        if endpoint is None:
                            raise RuntimeError("rotel-agent not found (pip install rotel)")
                        env.update({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                                    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
                        results["configs"][config] = _run_worker(
                            ["--worker", config, "--sizes", ",".join(map(str, sizes)), "--repeat", str(repeat)],
                            env, workdir, timeout)
                else:
                    if config == "mlflow-autolog-async":
                        env["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "true"
                    elif config == "mlflow-autolog-sync":
                        env["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"
                    results["configs"][config] = _run_worker(
                        ["--worker", config, "--sizes", ",".join(map(str, sizes)), "--repeat", str(repeat)],
                        env, workdir, timeout)
            except Exception as exc:  # noqa: BLE001 - report in the table, keep going
                results["configs"][config] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"[bench] {config} FAILED: {exc}", file=sys.stderr, flush=True)
            print(f"[bench] {config} done in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)

        if not args.only:
            results["many"] = {}
            for mode in ("ag2otel", "mlflow"):
                print(f"[bench] {many_chats} short conversations, {mode} ...", file=sys.stderr, flush=True)
                workdir = root / f"many-{mode}"
                env = _base_env(workdir)
                env["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "true"
                try:
                    results["many"][mode] = _run_worker(
                        ["--many", mode, "--many-chats", str(many_chats), "--turns", str(MANY_TURNS)],
                        env, workdir, timeout)
                except Exception as exc:  # noqa: BLE001
                    results["many"][mode] = {"error": f"{type(exc).__name__}: {exc}"}
                    print(f"[bench] many {mode} FAILED: {exc}", file=sys.stderr, flush=True)
        if not args.only and not args.many_only:
            print(f"[bench] export throughput (~{target_spans} spans) ...", file=sys.stderr, flush=True)
            workdir = root / "throughput"
            try:
                results["throughput"] = _run_worker(
                    ["--throughput", str(target_spans), "--repeat", str(repeat), "--workdir", str(workdir)],
                    _base_env(workdir), workdir, timeout)
            except Exception as exc:  # noqa: BLE001
                results["throughput"] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"[bench] throughput FAILED: {exc}", file=sys.stderr, flush=True)
            results["rss"] = {}
            for mode in ("untraced", "untraced+mlflow-imported", "traced"):
                print(f"[bench] peak RSS {mode} ({max(sizes)} turns) ...", file=sys.stderr, flush=True)
                workdir = root / f"rss-{mode}"
                try:
                    results["rss"][mode] = _run_worker(["--rss", mode, "--turns", str(max(sizes))],
                                                       _base_env(workdir), workdir, timeout)
                except Exception as exc:  # noqa: BLE001
                    results["rss"][mode] = {"error": f"{type(exc).__name__}: {exc}"}
                    print(f"[bench] rss {mode} FAILED: {exc}", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"[bench] kept {root}", file=sys.stderr)

    info["load_after"] = _load()
    print(render(results, sizes, info), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    failed = [c for c, r in results["configs"].items() if "error" in r]
    failed += [f"{c}@{n}" for c, r in results["configs"].items() if "error" not in r
               for n, size in r["sizes"].items() if "error" in size]
    failed += [k for k in ("throughput",) if "error" in (results.get("throughput") or {})]
    failed += [f"many:{m}" for m, r in results.get("many", {}).items() if "error" in r]
    failed += [f"rss:{m}" for m, r in results.get("rss", {}).items() if "error" in r]
    if failed:
        print(f"\n[bench] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0  # a missed target is reported, never a failure: targets are not timed unit tests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", help="comma-separated conversation lengths in turns (default 20,100,1000)")
    parser.add_argument("--repeat", type=int, help="timed conversations per size; the median is reported (default 3)")
    parser.add_argument("--quick", action="store_true", help="CI size: turns 10,20, repeat 1, ~120-span throughput")
    parser.add_argument("--only", help="comma-separated configurations (skips throughput and RSS)")
    parser.add_argument("--json", help="also write all raw results to this file")
    parser.add_argument("--many-chats", type=int,
                        help="short conversations in the stored-traces/s section (default 300, --quick 40)")
    parser.add_argument("--many-only", action="store_true", help="only the short-conversations section")
    parser.add_argument("--keep", action="store_true", help="keep the temporary stores and logs")
    # internal (subprocess) modes
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--throughput", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rss", help=argparse.SUPPRESS)
    parser.add_argument("--many", help=argparse.SUPPRESS)
    parser.add_argument("--turns", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker or args.throughput or args.rss or args.many:
        if args.many:
            out = many_worker(args.many, args.many_chats, args.turns)
        elif args.worker:
            out = worker_main(args.worker, [int(s) for s in args.sizes.split(",")], args.repeat)
        elif args.throughput:
            out = throughput_worker(args.throughput, args.repeat, Path(args.workdir))
        else:
            out = rss_worker(args.rss, args.turns)
        Path(args.result).write_text(json.dumps(out))
        sys.stderr.flush()
        os._exit(0)  # skip atexit flushes of the configuration under test (its numbers are already written)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
