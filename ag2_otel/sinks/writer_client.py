"""Application side of the store writer process (:mod:`ag2_otel.sinks.store_writer`).

``submit`` runs on the thread that ended a conversation and costs a dict insert and a deque append: no MLflow call,
no serialization. A sender thread takes what is queued as one batch (up to ``MAX_BATCH_TRACES`` traces /
``MAX_BATCH_SPANS`` spans; a trace is never split), snapshots the spans into plain tuples and sends the batch over a
socket pair; the child stores it in one write (see store_writer); a reader thread takes the acknowledgements. So the
store's CPU runs in another process, and what stays here is the snapshot and pickling (tens of microseconds per span).
While the child writes one batch, the next conversations queue up and go together: the faster they end, the larger
the batches.

Bounded: the child holds at most ``IN_FLIGHT`` batches, at most ``max_queued`` more traces wait here; past half of
that bound one warning says the store is not keeping up, beyond it new traces are dropped and counted (one warning;
``stats``: ``traces_queued``, ``backlog_peak``, ``traces_stored``, ``traces_dropped``). The child is
started at construction (importing MLflow there takes seconds, better spent while the first conversation runs) and
restarted if it dies, at most ``max_restarts`` times; traces it had received but not stored are counted as failed.
After that, or where a process cannot be started, ``submit`` returns False and the caller writes in-process.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from ag2_otel.sinks.span_snapshot import snapshot
from ag2_otel.sinks.trace_job import JobResult, TraceJob
from ag2_otel.sinks.warn_once import WarnOnce

_logger = logging.getLogger(__name__)
DEBUG_ENV = "AG2_OTEL_DEBUG_WRITER"  # documented in config.ENV_VARS


@dataclass
class WriterStats:
    traces_stored: int = 0
    traces_failed: int = 0  # the child gave up (backend down past retry_timeout, a 4xx) or died holding them
    traces_dropped: int = 0  # refused: max_queued traces were waiting
    restarts: int = 0
    batches: int = 0  # store writes (each: the traces queued when the child was ready for more)
    backlog_peak: int = 0  # most traces ever waiting here at once


_ALIASES = 4096  # trace ids MLflow chose (replay path) remembered for the read barrier, oldest forgotten first
_shared: dict[int, StoreWriterClient] = {}
_shared_lock = threading.Lock()
IN_FLIGHT = 2  # batches handed to the child at once: one being written, the next ready; the rest wait here, bounded
MAX_BATCH_TRACES = 64  # traces in one batch (one store write)
MAX_BATCH_SPANS = 4000  # spans in one batch, unless a single trace has more


def shared_client(max_queued: int = 1000) -> StoreWriterClient:
    """The process's writer for this bound: one child process however many processors use it."""
    with _shared_lock:
        client = _shared.get(max_queued)
        if client is None or client.pid != os.getpid() or not client.available:
            client = _shared[max_queued] = StoreWriterClient(max_queued=max_queued)
        return client


class StoreWriterClient:
    def __init__(self, *, max_queued: int = 1000, max_restarts: int = 3) -> None:
        self.pid = os.getpid()  # a forked child inherits this object but not its threads: it must not use it
        self.read_timeout: float | None = 10.0  # how long MLflow reads wait for a pending write (read_barrier)
        self._max_queued = max(1, int(max_queued))
        self._max_restarts = max_restarts
        self._cv = threading.Condition()
        self._queue: deque[TraceJob] = deque()
        self._pending: dict[str, threading.Event] = {}  # MLflow trace id -> set when stored or given up
        # our trace id -> the id MLflow stored it under, where they differ (the child's replay path, old MLflow)
        self._aliases: OrderedDict[str, str] = OrderedDict()
        # what the child said it can do: "batched" (our ids kept) or "v2" (the store picks ids); None until it says
        self.write_path: str | None = None
        self.missing: str | None = None  # the MLflow feature whose absence made it replay
        self._unsettled: dict[int, str] = {}  # seq -> trace id, until acknowledged, failed or dropped
        self._inflight: dict[int, str] = {}  # sent to the current child, not yet acknowledged
        self._batches_inflight = 0
        self._seq = 0
        self._stats = WriterStats()
        self._resent: set[int] = set()  # seqs sent again to a new child after the old one died taking them
        self._warn_once = WarnOnce(_logger)
        self._closed = False
        self._conn: Connection | None = None
        self._proc: subprocess.Popen | None = None
        self._available = self._start()
        threading.Thread(target=self._send_loop, name="ag2-otel-store-sender", daemon=True).start()

    # --- API ------------------------------------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, int]:
        """WriterStats, plus ``traces_queued``: traces waiting here or being written now (the backlog)."""
        with self._cv:
            return {**asdict(self._stats), "traces_queued": len(self._queue) + len(self._inflight)}

    @property
    def available(self) -> bool:
        return self._available and not self._closed and self.pid == os.getpid()

    def submit(self, job: TraceJob, wait: float | None = None) -> bool:
        """Queue one trace. False: no writer process, write it yourself. ``wait``: seconds to wait for room when the
        queue is full (shutdown), else a full queue drops the trace at once. Past half the bound: one warning."""
        trace_id = job.trace_id
        with self._cv:
            if not self.available:
                return False
            if wait and len(self._queue) >= self._max_queued:  # shutdown: room may come within the exit budget
                self._cv.wait_for(lambda: len(self._queue) < self._max_queued, wait)
            if len(self._queue) >= self._max_queued:
                self._stats.traces_dropped += 1
                self._warn_once("queue", "%d traces are waiting for the MLflow store writer "
                                "(AG2_OTEL_MAX_TRACES); dropping new traces (counted in stats)", self._max_queued)
                return True
            self._seq += 1
            job.seq = self._seq
            self._unsettled[self._seq] = trace_id
            self._pending[trace_id] = threading.Event()
            self._queue.append(job)
            backlog = len(self._queue)
            if backlog > self._stats.backlog_peak:
                self._stats.backlog_peak = backlog
            self._cv.notify_all()
        if backlog * 2 > self._max_queued >= 2:
            self._warn_once("backlog", "%d traces are waiting for the MLflow store writer, over half of "
                            "AG2_OTEL_MAX_TRACES=%d: conversations end faster than the store takes them; past the "
                            "bound new traces are dropped (see mlflow_processor().stats)", backlog, self._max_queued)
        return True

    def warm(self, destination: tuple) -> None:
        """Let the child build the store for ``destination`` while the application runs its first conversation."""
        conn = self._conn
        if conn is not None:
            try:
                conn.send(("warm", destination))
            except Exception:  # noqa: BLE001
                pass

    def wait_for(self, trace_id: str, timeout: float | None) -> bool:
        """Block until ``trace_id`` is stored or given up (True), or ``timeout`` passes (False)."""
        event = self._pending.get(trace_id)
        return True if event is None else event.wait(timeout)

    def is_pending(self, trace_id: str) -> bool:
        return trace_id in self._pending

    @property
    def keeps_ids(self) -> bool:
        """True once the child said it stores traces under the ids we gave them (the batched path)."""
        return self.write_path == "batched"

    def resolve(self, trace_id: str) -> str:
        """The id ``trace_id`` is stored under (differs only on the child's replay path)."""
        return self._aliases.get(trace_id, trace_id)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every trace submitted so far is stored or given up. False on timeout."""
        with self._cv:
            target = self._seq
            return self._cv.wait_for(lambda: not any(s <= target for s in self._unsettled), timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush (bounded), then close the pipe: the child finishes what it received and exits on its own."""
        done = self.flush(timeout)
        with self._cv:
            self._closed = True
            self._cv.notify_all()
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        return done

    # --- child process --------------------------------------------------------------------------------------------
    def _start(self) -> bool:
        if os.name != "posix":
            return False
        try:
            mine, theirs = socket.socketpair()
            env = dict(os.environ)
            # The child must import this package whatever sys.path tricks brought it into the application.
            package_root = str(Path(__file__).resolve().parents[2])
            env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
            proc = subprocess.Popen(
                [sys.executable, "-m", "ag2_otel.sinks.store_writer", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                # its errors come back as acknowledgements and are logged here, once; AG2_OTEL_DEBUG_WRITER=1 shows
                # its own debug log on our stderr
                stderr=None if os.environ.get(DEBUG_ENV) else subprocess.DEVNULL, env=env, close_fds=True,
            )
            theirs.close()
            conn = Connection(os.dup(mine.fileno()))
            mine.close()
        except Exception as exc:  # noqa: BLE001
            self._warn_once("start", "could not start the MLflow store writer process (%s); writing "
                            "in-process instead", type(exc).__name__)
            return False
        self._proc, self._conn = proc, conn
        threading.Thread(target=self._read_loop, args=(conn,), name="ag2-otel-store-reader", daemon=True).start()
        return True

    def _read_loop(self, conn: Connection) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "done":
                results: list[JobResult] = message[1]
                with self._cv:
                    self._batches_inflight = max(0, self._batches_inflight - 1)
                    for r in results:
                        if r.stored_id and r.stored_id != r.trace_id and r.error is None:
                            self._aliases[r.trace_id] = r.stored_id
                    while len(self._aliases) > _ALIASES:
                        self._aliases.popitem(last=False)
                    self._cv.notify_all()
                for r in results:
                    self._settle(r.seq, r.trace_id, r.error)
            elif message[0] == "ready" and len(message) > 1 and isinstance(message[1], dict):
                self.write_path, self.missing = message[1].get("write_path"), message[1].get("missing")
                if self.write_path is None:  # an MLflow it cannot write to: the caller writes in-process from now
                    self._available = False
                    self._warn_once("unsupported", "the MLflow store writer cannot write with this MLflow "
                                    "(no %s); writing in-process instead", self.missing)
        self._on_child_exit(conn)

    def _on_child_exit(self, conn: Connection) -> None:
        with self._cv:
            if self._conn is not conn:
                return  # closed by us
            self._conn = None
            lost = list(self._inflight.items())
            self._inflight.clear()
            self._batches_inflight = 0
        for seq, trace_id in lost:
            self._settle(seq, trace_id, "WriterProcessExited")

    def _ensure_child(self) -> Connection | None:
        with self._cv:
            if self._conn is not None or self._closed:
                return self._conn
            if self._stats.restarts >= self._max_restarts:
                self._available = False
                return None
            self._stats.restarts += 1
        self._warn_once("restart", "the MLflow store writer process exited; restarting it (at most %d "
                        "times; counted in stats)", self._max_restarts)
        if not self._start():
            self._available = False
        return self._conn

    def _send_loop(self) -> None:
        while True:
            with self._cv:
                # A slow or unreachable backend stops the child, so traces pile up HERE, where they are counted.
                self._cv.wait_for(lambda: self._closed or (self._queue and self._batches_inflight < IN_FLIGHT))
                if not self._queue:
                    return
                batch = self._take_batch()
                self._cv.notify_all()  # room in the queue (a shutdown submit may be waiting for it)
            conn = self._ensure_child()
            if conn is None:
                for job in batch:
                    self._settle(job.seq, job.trace_id, "WriterUnavailable")
                continue
            ready = []
            for job in batch:
                if not job.snapshotted:
                    try:
                        job.spans = snapshot(job.spans)
                    except Exception as exc:  # noqa: BLE001 - a span we cannot snapshot: this trace only
                        self._settle(job.seq, job.trace_id, type(exc).__name__)
                        continue
                    job.snapshotted = True
                ready.append(job)
            if ready:
                self._send(conn, ready)

    def _take_batch(self) -> list[TraceJob]:
        """Under the lock: what is queued, oldest first, up to MAX_BATCH_TRACES traces / MAX_BATCH_SPANS spans."""
        batch = [self._queue.popleft()]
        spans = len(batch[0].spans)
        while self._queue and len(batch) < MAX_BATCH_TRACES and spans + len(self._queue[0].spans) <= MAX_BATCH_SPANS:
            job = self._queue.popleft()
            batch.append(job)
            spans += len(job.spans)
        return batch

    def _send(self, conn: Connection, batch: list[TraceJob]) -> None:
        with self._cv:
            current = self._conn is conn
            if current:
                for job in batch:
                    self._inflight[job.seq] = job.trace_id
                self._batches_inflight += 1
                self._stats.batches += 1
        try:
            if not current:
                raise BrokenPipeError("the writer process exited since it was checked")
            conn.send(("traces", batch))
        except (OSError, ValueError):  # the child died before taking it: a new child gets it, once
            with self._cv:
                for job in batch:
                    self._inflight.pop(job.seq, None)
                if current:
                    self._batches_inflight = max(0, self._batches_inflight - 1)
                retry = [job for job in batch if job.seq in self._unsettled and job.seq not in self._resent]
                again = {job.seq for job in retry}
            self._on_child_exit(conn)  # settles what the dead child held (the reader may have done it already)
            with self._cv:
                for job in reversed(retry):
                    self._resent.add(job.seq)
                    self._queue.appendleft(job)
                self._cv.notify_all()
            for job in batch:
                if job.seq not in again:
                    self._settle(job.seq, job.trace_id, "WriterProcessExited")
        except Exception as exc:  # noqa: BLE001 - an attribute value that does not pickle: find which, send the rest
            with self._cv:
                for job in batch:
                    self._inflight.pop(job.seq, None)
                self._batches_inflight = max(0, self._batches_inflight - 1)
            if len(batch) == 1:
                self._settle(batch[0].seq, batch[0].trace_id, type(exc).__name__)
            else:
                for job in batch:
                    self._send(conn, [job])

    def _settle(self, seq: int, trace_id: str, error: str | None) -> None:
        with self._cv:
            if self._unsettled.pop(seq, None) is None:
                return
            self._inflight.pop(seq, None)
            self._resent.discard(seq)
            if error is None:
                self._stats.traces_stored += 1
            else:
                self._stats.traces_failed += 1
            event = self._pending.pop(trace_id, None)
            self._cv.notify_all()
        if event is not None:
            event.set()
        if error is not None:
            self._warn_once("error:" + error, "the MLflow store writer could not store a trace (%s); "
                            "further failures are only counted", error)
