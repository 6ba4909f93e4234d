"""The only module that writes to MLflow: replays a finished :class:`TraceRecord` through MLflow's public tracing API.

Why a replay: ``mlflow.start_span_no_context`` takes an explicit parent and start time, and the public
``MlflowClient.end_span`` an explicit end time, so a finished OTel tree can be rebuilt parent-first with its original
timestamps. Everything after that is MLflow's own machinery: tracking URI and experiment resolution (local sqlite,
a server, Databricks), trace-level token usage aggregated from ``mlflow.chat.tokenUsage``, ``get_last_active_trace_id``
(set when the replayed root ends on this thread), and the store write, which MLflow does on its own background
thread (``MLFLOW_ENABLE_ASYNC_TRACE_LOGGING``, on by default) after a batch span processor.

Spans are ended with the public ``MlflowClient.end_span`` (``LiveSpan.end`` carries ``:meta private:``). Building an
``MlflowClient`` builds the tracking store of the current URI, which MLflow's exporter needs for the same write anyway
(stores are cached per URI), so it is built at the first write and kept: ``end_span`` itself only touches MLflow's
in-memory trace manager, whatever the URI is later. ``mlflow-tracing`` has no ``MlflowClient``: there ``LiveSpan.end``
(what ``end_span`` calls) ends them.

Older MLflow, by feature (read once from the installed MLflow, never from its version string):
``start_span_no_context`` without a ``metadata`` parameter (MLflow < 3.10 or so) gets the trace metadata put on the
root's in-memory trace, as MLflow itself does there for ``tags`` (``InMemoryTraceManager``; without it the trace is
written without our metadata, MLflow's own token total still aggregated from the spans).
Not used: ``Span.from_otel_proto``, ``LiveSpan.from_immutable_span``, ``MlflowClient._log_trace`` (internal).
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import threading
from collections import OrderedDict
from typing import Any

import mlflow
from mlflow.entities import SpanEvent, SpanStatus, SpanStatusCode

from ag2_otel.mapping.mlflow_trace import TraceRecord, Usage, build_trace_record, usage_metadata
from ag2_otel.sinks.trace_job import TraceJob

_logger = logging.getLogger(__name__)

_NESTED_MEMORY = 256  # MLflow traces (user spans) whose accumulated usage we remember, oldest forgotten first


def _parameters(function: Any) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return frozenset()


_NO_CONTEXT_PARAMS = _parameters(mlflow.start_span_no_context)
TAKES_METADATA = "metadata" in _NO_CONTEXT_PARAMS  # start_span_no_context(metadata=...), newer MLflow only


def _set_trace_metadata(trace_id: str, metadata: dict[str, str]) -> None:
    """Metadata on a live trace where ``start_span_no_context`` takes none: MLflow's in-memory trace, as MLflow does
    for ``tags`` in that function; it goes to the store with the trace when the root ends."""
    try:
        from mlflow.tracing.trace_manager import InMemoryTraceManager

        with InMemoryTraceManager.get_instance().get_trace(trace_id) as trace:
            if trace is None:
                return
            info = trace.info
            target = getattr(info, "trace_metadata", None)
            if not isinstance(target, dict):
                target = getattr(info, "request_metadata", None)
            if isinstance(target, dict):
                target.update(metadata)
    except Exception:  # noqa: BLE001 - metadata is a bonus here; the trace itself must still be written
        _logger.debug("ag2_otel: could not set trace metadata on this MLflow", exc_info=True)


def active_mlflow_parent(otel_parent_span_id: str | None) -> Any | None:
    """The user's active MLflow span to replay under, if it is our root's parent.

    Called on the thread that starts our local root. Nest when the root's OTel parent IS the active MLflow span
    (same OTel context: ``MLFLOW_TRACE_PROPAGATE_TO_OTEL_CONTEXT=true`` or the global provider mode), or when the root
    has no OTel parent at all while an MLflow span is active (MLflow's default isolated context hides its span from
    OTel, yet ``with mlflow.start_span(): chat()`` clearly asks for one trace). Any other parent -> a separate trace.
    """
    span = mlflow.get_current_active_span()
    if span is None:
        return None
    if otel_parent_span_id is None or span.span_id == otel_parent_span_id:
        return span
    return None


class MlflowWriter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: Any = None
        # MLflow trace id -> (total, by_agent, by_model) for traces we nested into: several conversations under one
        # user span share one MLflow trace, and trace metadata is a dict that the last writer would overwrite.
        self._nested: OrderedDict[str, tuple[Usage, dict[str, Usage], dict[str, Usage]]] = OrderedDict()

    def _end_span(self, span: Any, **kwargs: Any) -> None:
        if self._client is None:
            client_class = getattr(mlflow, "MlflowClient", None)  # mlflow-tracing has none
            self._client = client_class() if client_class is not None else False
        if self._client is False:
            span.end(**kwargs)
        else:
            self._client.end_span(span.trace_id, span.span_id, **kwargs)

    def write(self, record: TraceRecord, parent: Any | None = None) -> str | None:
        """Replay ``record`` (under ``parent``, a live MLflow span, when given). Returns the MLflow trace id."""
        if parent is None and mlflow.get_current_active_span() is not None:
            # start_span_no_context(parent_span=None) still parents on MLflow's *current* span (it starts from the
            # current context), so a trace meant to be separate would silently nest. Replay in an empty context.
            return contextvars.Context().run(self._replay, record, None)
        return self._replay(record, parent)

    def _replay(self, record: TraceRecord, parent: Any | None) -> str | None:
        tags, metadata = dict(record.tags), dict(record.metadata)
        live: dict[str, Any] = {}
        ended: set[str] = set()
        try:
            if parent is not None:
                metadata.update(self._merge_nested(parent.trace_id, record))
            for rec in record.spans:  # parent-first
                top = rec.parent_id is None
                extra = {"metadata": metadata} if top and TAKES_METADATA else {}
                live[rec.span_id] = span = mlflow.start_span_no_context(
                    rec.name,
                    span_type=rec.span_type,
                    parent_span=parent if top else live[rec.parent_id],
                    inputs=rec.inputs,
                    attributes=rec.attributes,
                    tags=tags if top else None,
                    start_time_ns=rec.start_time_ns,
                    **extra,
                )
                if top and not TAKES_METADATA and metadata:
                    _set_trace_metadata(span.trace_id, metadata)
            for rec in reversed(record.spans):  # children before parents: the root ends last
                span = live[rec.span_id]
                for event in rec.events:
                    span.add_event(SpanEvent(event.name, event.timestamp_ns, event.attributes))
                status = SpanStatus(SpanStatusCode.ERROR, rec.status_message) if rec.status == "ERROR" else "OK"
                self._end_span(span, outputs=rec.outputs, status=status, end_time_ns=rec.end_time_ns)
                ended.add(rec.span_id)
            return live[record.root.span_id].trace_id
        finally:
            # A failure half way must not leave an open trace in MLflow's in-memory manager.
            for span_id, span in reversed(list(live.items())):
                if span_id not in ended:
                    try:
                        self._end_span(span, status="ERROR")
                    except Exception:  # noqa: BLE001 - best effort cleanup, the caller logs the original error
                        pass

    def _merge_nested(self, mlflow_trace_id: str, record: TraceRecord) -> dict[str, str]:
        with self._lock:
            total, by_agent, by_model = self._nested.pop(mlflow_trace_id, None) or (Usage(), {}, {})
            total.add(record.usage)
            for mine, theirs in ((by_agent, record.usage_by_agent), (by_model, record.usage_by_model)):
                for key, usage in theirs.items():
                    mine.setdefault(key, Usage()).add(usage)
            self._nested[mlflow_trace_id] = (total, by_agent, by_model)
            while len(self._nested) > _NESTED_MEMORY:
                self._nested.popitem(last=False)
        return usage_metadata(total, by_agent, by_model)

    @staticmethod
    def flush(timeout: float | None = None) -> bool:
        """Wait until MLflow's background writer has stored everything queued so far. False on timeout.

        ``mlflow.flush_trace_async_logging`` has no timeout of its own, so it runs on a helper thread we join.
        """
        done = threading.Event()

        def run() -> None:
            try:
                mlflow.flush_trace_async_logging()
            except Exception:  # noqa: BLE001
                _logger.warning("ag2_otel: flushing MLflow's trace writer failed", exc_info=True)
            finally:
                done.set()

        threading.Thread(target=run, name="ag2-otel-mlflow-flush", daemon=True).start()
        return done.wait(timeout)


class InlineReads:
    """The read barrier's view of the in-process replay (``read_barrier.register``): MLflow stores a replayed trace
    on its own background writer (``MLFLOW_ENABLE_ASYNC_TRACE_LOGGING``), so ``mlflow.get_trace`` right after the
    chat could find it half written ("span data is corrupted" from a server). Reads of a trace we replayed, and
    searches while one is unflushed, first flush MLflow's writer, bounded by ``read_timeout``."""

    _MEMORY = 1024

    def __init__(self, read_timeout: float | None) -> None:
        self.read_timeout = read_timeout
        self._lock = threading.Lock()
        self._unflushed: OrderedDict[str, None] = OrderedDict()

    def replayed(self, trace_id: str | None) -> None:
        if not trace_id:
            return
        with self._lock:
            self._unflushed[trace_id] = None
            while len(self._unflushed) > self._MEMORY:
                self._unflushed.popitem(last=False)

    def is_pending(self, trace_id: str) -> bool:
        return trace_id in self._unflushed

    def wait_for(self, trace_id: str, timeout: float | None) -> bool:
        return self.flush(timeout)

    def flush(self, timeout: float | None = None) -> bool:
        with self._lock:
            if not self._unflushed:
                return True
            done = list(self._unflushed)
        ok = MlflowWriter.flush(timeout)
        if ok:
            with self._lock:
                for trace_id in done:
                    self._unflushed.pop(trace_id, None)
        return ok


class InlineExecutor:
    """The in-process executor of a :class:`TraceJob`, beside the writer process's
    (:class:`~ag2_otel.sinks.writer_client.StoreWriterClient`): the same ``submit`` / ``wait_for`` / ``flush``, but
    ``submit`` maps and replays the trace now, on the calling thread (under ``parent``, a live MLflow span, when
    given), and MLflow's own writer stores it. Reads of a replayed trace wait for that writer (:class:`InlineReads`)."""

    def __init__(self, read_timeout: float | None) -> None:
        from ag2_otel.sinks import read_barrier

        self._writer = MlflowWriter()
        self.reads = InlineReads(read_timeout)
        read_barrier.register(self.reads)

    def submit(self, job: TraceJob, parent: Any | None = None) -> TraceRecord | None:
        """Replay ``job``; the record written, or None when there was nothing to write."""
        record = build_trace_record(job.spans, root_span_id=job.root_span_id, complete=job.complete,
                                    dropped_spans=job.dropped)
        if record is None:
            return None
        written = self._writer.write(record, parent=parent)
        if parent is None:  # a trace of its own, stored by MLflow's async writer: reads wait for it
            self.reads.replayed(written)
        return record

    def wait_for(self, trace_id: str, timeout: float | None) -> bool:
        return self._writer.flush(timeout)  # MLflow's writer has no per-trace wait: all it holds

    def flush(self, timeout: float | None = None) -> bool:
        return self._writer.flush(timeout)
