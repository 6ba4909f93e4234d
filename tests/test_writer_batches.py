"""The store writer takes what is queued as one batch, and the backlog is visible (stats, one warning past half the
bound), against a real local sqlite store and the real writer process.

The store is held locked (a real ``BEGIN EXCLUSIVE`` from this test) so the writer cannot finish its first trace:
that trace and the next are in flight (``IN_FLIGHT`` batches), the rest queue up in the application; once the lock
is released they are stored, the queued ones in ONE store write, each with its own spans, tags and metadata.
"""

from __future__ import annotations

import logging
import sqlite3
import time

import mlflow
import pytest
from mlflow import MlflowClient
from opentelemetry.sdk.trace import TracerProvider

from ag2_otel.sinks.mlflow_processor import MlflowSpanProcessor
from ag2_otel.sinks.writer_client import IN_FLIGHT

BOUND = 9  # max_traces: a bound no other test uses, so this test has its own writer process
QUEUED = 6  # traces that wait in the application while the store is locked: more than half of BOUND
CHILDREN = 3


def _wait(condition, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # polling a condition against a deadline
    return True


def _trace(tracer, index: int) -> str:
    with tracer.start_as_current_span(f"invoke_workflow batch-{index}", attributes={"gen_ai.operation.name":
                                                                                  "invoke_workflow"}) as root:
        for child in range(CHILDREN):
            with tracer.start_as_current_span(f"execute_tool step-{index}-{child}",
                                              attributes={"gen_ai.operation.name": "execute_tool",
                                                          "gen_ai.tool.name": f"step{child}"}):
                pass
    return "tr-" + format(root.get_span_context().trace_id, "032x")


@pytest.mark.timeout(600)
def test_queued_traces_go_in_one_store_write_and_the_backlog_is_visible(tmp_path, caplog, monkeypatch):
    for leftover in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(leftover, raising=False)
    path = tmp_path / "mlflow.db"
    uri = f"sqlite:///{path}"
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", client.create_experiment("batches"))  # the schema exists now
    provider = TracerProvider()
    processor = MlflowSpanProcessor(max_traces=BOUND, write_timeout=1.0)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test_writer_batches")
    caplog.set_level(logging.WARNING, logger="ag2_otel")
    lock = None
    try:
        ids = [_trace(tracer, 0)]
        assert processor.flush(timeout=120)  # the writer process is up and has written to this store
        base = processor.stats
        assert base["traces_stored"] >= 1 and base["traces_queued"] == 0

        lock = sqlite3.connect(path, timeout=0, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        for index in range(1, 1 + IN_FLIGHT):  # one batch each: the writer is stuck on the first
            ids.append(_trace(tracer, index))
            assert _wait(lambda i=index: processor.stats["batches"] == base["batches"] + i), processor.stats
        for index in range(1 + IN_FLIGHT, 1 + IN_FLIGHT + QUEUED):
            ids.append(_trace(tracer, index))
        stats = processor.stats
        assert stats["traces_queued"] == IN_FLIGHT + QUEUED, stats
        assert stats["backlog_peak"] == QUEUED and stats["traces_dropped"] == 0, stats
        backlog = [r.getMessage() for r in caplog.records if "over half of AG2_OTEL_MAX_TRACES" in r.getMessage()]
        assert len(backlog) == 1 and f"AG2_OTEL_MAX_TRACES={BOUND}" in backlog[0], backlog
        assert not processor.flush(timeout=0.5)  # nothing gets through while the store is locked

        lock.rollback()
        lock.close()
        lock = None
        assert processor.flush(timeout=180)
        stats = processor.stats
        assert stats["traces_stored"] - base["traces_stored"] == IN_FLIGHT + QUEUED, stats
        assert stats["traces_failed"] == 0 and stats["traces_queued"] == 0, stats
        # the QUEUED traces went together: one store write for all of them
        assert stats["batches"] - base["batches"] == IN_FLIGHT + 1, stats

        for index, trace_id in enumerate(ids):
            trace = client.get_trace(trace_id)
            names = sorted(span.name for span in trace.data.spans)
            assert names == sorted([f"invoke_workflow batch-{index}"] +
                                   [f"execute_tool step-{index}-{c}" for c in range(CHILDREN)]), (index, names)
            assert trace.info.tags["mlflow.traceName"] == f"invoke_workflow batch-{index}"
            assert trace.info.tags["mlflow.source.type"] == "LOCAL"  # trace-level data rides on the root span
            # one log_spans made the trace (MLflow 3.17): no start_trace, whose metadata would be there
            assert "mlflow.trace_schema.version" not in trace.info.trace_metadata, trace.info.trace_metadata
            assert "ag2_otel.usage.total" in trace.info.tags
            assert trace.info.state == "OK"
    finally:
        if lock is not None:
            lock.close()
        processor.shutdown()
        mlflow.set_tracking_uri(previous_uri)
