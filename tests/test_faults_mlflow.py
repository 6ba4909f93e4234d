"""The MLflow sink under backend faults, with a real ``mlflow server`` that is down at start, then up, then killed
(SIGKILL, workers included) and started again on the same port and sqlite file.

Asserted: the agents never wait for the backend (each chat's wall time stays far below the retry window) and never
see an exception; traces finished while the server is down are buffered (bounded: the writer process holds
``IN_FLIGHT`` traces, the queue ``max_traces`` more), delivered complete once it is back, and the ones beyond the
bound are dropped, counted in ``stats["traces_dropped"]`` and warned about once.
"""

from __future__ import annotations

import logging
import time

import mlflow
import pytest
from mlflow import MlflowClient

from ag2_otel.sinks.mlflow_processor import MlflowSpanProcessor
from ag2_otel.sinks.writer_client import IN_FLIGHT
from tests.test_instrumentation_basic import CALCULATOR_SCRIPT, make_calculator_agents
from tests.servers import MlflowServer

CALCULATOR_SPANS = 12
QUEUED = 3  # max_traces: the bound under test
DELIVERY_DEADLINE_S = 180.0


def _chat(trace_ids: list[str], wall: list[float]) -> None:
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    start = time.perf_counter()
    user.initiate_chat(assistant, message="What is (44232 + 13312 / (232 - 32)) * 5?", max_turns=6)
    wall.append(time.perf_counter() - start)
    trace_ids.append(mlflow.get_last_active_trace_id())


def _stored(client: MlflowClient, trace_id: str) -> bool:
    try:
        trace = client.get_trace(trace_id)
    except Exception:  # noqa: BLE001 - not there yet
        return False
    return len(trace.data.spans) == CALCULATOR_SPANS and trace.info.token_usage["total_tokens"] == 532


@pytest.mark.timeout(600)
def test_server_down_at_start_then_killed_and_restarted(tmp_path, instrument, tracer_provider, caplog, monkeypatch):
    for leftover in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):  # set_experiment in other tests sets these
        monkeypatch.delenv(leftover, raising=False)
    server = MlflowServer(tmp_path / "server")  # a port, a sqlite file; not started yet
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(server.url)
    processor = MlflowSpanProcessor(max_traces=QUEUED, retry_timeout=DELIVERY_DEADLINE_S * 2, write_timeout=0.5)
    tracer_provider.add_span_processor(processor)
    instrument(capture_content=True)
    caplog.set_level(logging.WARNING, logger="ag2_otel")
    try:
        # --- down at start: IN_FLIGHT + QUEUED traces are kept, the rest dropped and counted ---------------------
        kept, dropped, wall = [], [], []
        accepted = IN_FLIGHT + QUEUED
        for _ in range(accepted + 2):
            _chat(kept, wall)
        dropped = kept[accepted:]
        kept = kept[:accepted]
        assert max(wall) < 5.0, wall  # the retry window is minutes: the chats never waited for the backend
        stats = processor.stats
        assert stats["traces_written"] == accepted + 2
        assert stats["traces_dropped"] == 2 and stats["traces_stored"] == 0
        drop_warnings = [r for r in caplog.records if "dropping new traces" in r.getMessage()]
        assert len(drop_warnings) == 1

        server.start()
        up = time.perf_counter()
        assert processor.flush(timeout=DELIVERY_DEADLINE_S)
        print(f"\n[down at start] {len(kept) + len(dropped)} chats, max wall {max(wall) * 1000:.0f} ms; "
              f"{len(kept)} buffered, {len(dropped)} dropped; stored {time.perf_counter() - up:.2f} s after the "
              f"server answered")
        client = MlflowClient(tracking_uri=server.url)
        assert all(_stored(client, trace_id) for trace_id in kept)
        assert not any(_stored(client, trace_id) for trace_id in dropped)
        assert processor.stats["traces_stored"] == accepted

        # --- killed mid-run, restarted on the same port and store: the traces in between arrive ---------------
        server.kill()
        during, wall = [], []
        for _ in range(2):
            _chat(during, wall)
        assert max(wall) < 5.0, wall
        assert not processor.flush(timeout=1.0)  # still waiting for the backend, not given up
        server.start()
        up = time.perf_counter()
        assert processor.flush(timeout=DELIVERY_DEADLINE_S)
        print(f"[killed, restarted] {len(during)} chats while down, max wall {max(wall) * 1000:.0f} ms; stored "
              f"{time.perf_counter() - up:.2f} s after the server answered again; stats {processor.stats}")
        assert all(_stored(client, trace_id) for trace_id in during)
        stats = processor.stats
        assert stats["traces_stored"] == accepted + 2
        assert stats["traces_failed"] == 0 and stats["write_errors"] == 0
    finally:
        server.stop()
        mlflow.set_tracking_uri(previous_uri)


def test_writer_process_killed_is_restarted(tmp_path, instrument, tracer_provider, monkeypatch):
    """The store writer process dies (SIGKILL): the next trace starts a new one and is stored; nothing raises."""
    import os
    import signal

    for leftover in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(leftover, raising=False)
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # a bound no other test uses: this test's own writer process, which it may kill
    processor = MlflowSpanProcessor(max_traces=977)
    tracer_provider.add_span_processor(processor)
    instrument(capture_content=True)
    try:
        first, wall = [], []
        _chat(first, wall)
        assert processor.flush(timeout=120)
        child = processor._store._proc  # the process under test; no public handle on purpose
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=20)
        after = []
        _chat(after, wall)
        assert processor.flush(timeout=120)
        client = MlflowClient(tracking_uri=mlflow.get_tracking_uri())
        assert _stored(client, first[0]) and _stored(client, after[0])
        stats = processor.stats
        assert stats["restarts"] == 1 and stats["traces_stored"] == 2 and stats["traces_failed"] == 0
        assert processor._store._proc.pid != child.pid
    finally:
        mlflow.set_tracking_uri(previous_uri)
