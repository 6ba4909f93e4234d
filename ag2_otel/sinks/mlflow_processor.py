"""``MlflowSpanProcessor``: an OTel span processor that turns each finished local trace into one MLflow trace.

Add it to any ``TracerProvider``::

    provider.add_span_processor(MlflowSpanProcessor())

``on_start`` records which local root a span belongs to (a dict insert); ``on_end`` appends the finished span to that
root's buffer. When a LOCAL root ends (a span whose parent is absent, remote, or not a span this processor saw start),
the buffered spans become one :class:`~ag2_otel.sinks.trace_job.TraceJob` for one of two executors with the same
interface (``submit`` / ``wait_for`` / ``flush``): the store writer process (``writer="process"``, the default; see
``writer_client.py`` and ``store_writer.py``), which maps them (:func:`build_trace_record`) and stores them with
the other traces queued meanwhile in one batched write, off this process's GIL; or the in-process replay
(``mlflow_writer.InlineExecutor``). ``read_barrier.py`` makes ``mlflow.get_last_active_trace_id()``
return it and MLflow reads in this process wait for it. ``writer="inline"`` (and, whatever the setting, Databricks
and a trace nested under the user's active MLflow span) replays the mapped trace through MLflow's public
tracing API on the thread that ended the root instead. ``wait_for_write=True`` makes the root's end wait (bounded by
``write_timeout``) until the trace is stored.

Never raises into the application: errors are counted, logged once (type only; details at DEBUG), and swallowed.

:meth:`MlflowSpanProcessor.add_finished` is the same assembly for callers that only ever see FINISHED spans, in batches
and possibly out of order (``MlflowSpanExporter``, behind the SDK's BatchSpanProcessor): with no ``on_start``, spans
are buffered per OTel trace id, and a trace is written when its local root (no parent, or a remote one) arrives,
with every buffered span of that trace id that descends from it; same caps, counters and shutdown guarantee.
"""

from __future__ import annotations

import getpass
import logging
import os
import sys
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from ag2_otel.mapping.mlflow_wire import mlflow_trace_id
from ag2_otel.sinks.trace_job import TraceJob
from ag2_otel.sinks.warn_once import WarnOnce

_logger = logging.getLogger(__name__)

_DROPPED = -1  # owner of spans whose trace was refused (span ids are positive)
_RECENT = 1024  # finished-span path: trace ids remembered after their trace was written or refused
_local = threading.local()  # .replaying: set while we replay into MLflow, so its spans never come back to us


@dataclass
class ProcessorStats:
    traces_written: int = 0
    incomplete_traces_written: int = 0
    dropped_traces: int = 0  # refused because max_traces were buffered
    dropped_spans: int = 0  # over max_spans_per_trace, or belonging to a dropped trace
    late_spans: int = 0  # ended after their local root was written
    write_errors: int = 0
    write_timeouts: int = 0


class _Buffer:
    __slots__ = ("root", "spans", "open", "dropped", "mlflow_parent", "trace_id", "links")

    def __init__(self, root: Span | None, trace_id: int | None = None) -> None:
        self.root = root  # the live root, kept so an unfinished trace can still be written at shutdown
        self.spans: list[ReadableSpan] = []
        self.open: dict[int, Span] = {}  # started, not ended: written (as unfinished) if the process exits first
        self.dropped = 0
        self.mlflow_parent: Any = None
        self.trace_id = root.context.trace_id if root is not None else trace_id
        # finished-span path only: span id -> parent span id of every span seen, kept (ints) or dropped over the cap
        self.links: dict[int, int | None] = {}


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _is_local_root(span: ReadableSpan) -> bool:
    return span.parent is None or span.parent.is_remote


def _foreign(span: ReadableSpan) -> bool:
    """MLflow's own spans (when MLflow shares the global provider) and our replay must not be buffered."""
    if getattr(_local, "replaying", False):
        return True
    scope = span.instrumentation_scope
    return scope is not None and scope.name.startswith("mlflow")


class MlflowSpanProcessor(SpanProcessor):
    def __init__(
        self,
        *,
        max_traces: int = 1000,
        max_spans_per_trace: int = 10_000,
        wait_for_write: bool = False,
        write_timeout: float = 10.0,
        nest_under_mlflow_span: bool = True,
        writer: str = "process",
        retry_timeout: float = 60.0,
    ) -> None:
        if writer not in ("process", "inline"):
            raise ValueError(f"writer must be 'process' or 'inline', not {writer!r}")
        self._inline_executor: Any = None  # built (importing mlflow, seconds) only when a trace is written in-process
        self._write_timeout = write_timeout
        if writer == "inline":
            self._inline  # noqa: B018 - pay the import here, not at the first trace
        self._store = None  # the store writer process (writer="process"), see writer_client.py
        if writer == "process":
            from ag2_otel.sinks import read_barrier
            from ag2_otel.sinks.writer_client import shared_client

            self._store = shared_client(max_queued=max_traces)
            self._store.read_timeout = write_timeout
            read_barrier.register(self._store)
            try:
                destination = _process_destination()
            except Exception:  # noqa: BLE001 - e.g. mlflow-tracing with no URI set: its get_tracking_uri() raises
                destination = None
            # Not a sqlite file that does not exist yet: creating its schema here while the application creates it
            # too (its first mlflow call) fails one of them. The first write creates it, behind the read barrier.
            if destination is not None and destination[0] is not None and not (
                    destination[0].startswith("sqlite:///") and not os.path.exists(destination[0][len("sqlite:///"):])):
                self._store.warm(destination)
            self._read_barrier = read_barrier
        self._retry_timeout = float(retry_timeout)
        self._extra_metadata: dict[str, str] | None = None
        self._max_traces = max(1, int(max_traces))
        self._max_spans = max(0, int(max_spans_per_trace))
        self._wait = wait_for_write
        self._write_timeout = write_timeout
        self._nest = nest_under_mlflow_span
        self._lock = threading.Lock()
        self._buffers: dict[int, _Buffer] = {}  # local root span id -> buffer
        self._owner: dict[int, int] = {}  # OPEN span id -> local root span id (or _DROPPED)
        self._open_root_by_trace: dict[int, int] = {}  # OTel trace id -> latest open local root span id
        # finished-span path (add_finished): OTel trace id -> spans waiting for their local root
        self._finished: dict[int, _Buffer] = {}
        self._written: OrderedDict[int, set[int]] = OrderedDict()  # trace id -> span ids already written
        self._refused: OrderedDict[int, None] = OrderedDict()  # trace ids refused at max_traces
        self._stats = ProcessorStats()
        self._warn_once = WarnOnce(_logger)
        self._shutdown = False

    @property
    def _inline(self) -> Any:
        """The in-process executor (mlflow_writer.InlineExecutor), built at first use."""
        if self._inline_executor is None:
            from ag2_otel.sinks.mlflow_writer import InlineExecutor

            self._inline_executor = InlineExecutor(self._write_timeout)
        return self._inline_executor

    @property
    def stats(self) -> dict[str, int]:
        """Counters: see ProcessorStats; with the writer process also traces_stored / traces_failed /
        traces_dropped (its queue was full) / restarts / batches (store writes) / traces_queued (the backlog: waiting
        or being written now) / backlog_peak."""
        with self._lock:
            stats = asdict(self._stats)
        if self._store is not None:
            stats.update(self._store.stats)
        return stats

    # --- SpanProcessor -------------------------------------------------------------------------------------------
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self._shutdown:
            return
        try:
            if _foreign(span):
                return
            span_id, parent = span.context.span_id, span.parent
            with self._lock:
                owner = self._owner.get(parent.span_id) if parent is not None else None
                if owner is None and parent is not None and not parent.is_remote:
                    # Parent not open here: ended already (a late child) or another provider's span. Join our open
                    # trace with the same trace id if there is one (it hangs under the root), else start a new one.
                    owner = self._open_root_by_trace.get(span.context.trace_id)
                if owner is not None:
                    self._owner[span_id] = owner
                    owning = self._buffers.get(owner)
                    if owning is not None:  # None: dropped, or its root already written (a late child)
                        owning.open[span_id] = span
                    return
                if self._full(self._buffers):
                    self._owner[span_id] = _DROPPED
                    return
                buffer = self._buffers[span_id] = _Buffer(span)
                self._owner[span_id] = span_id
                self._open_root_by_trace[buffer.trace_id] = span_id
            # No MLflow imported: no MLflow span can be active, and MLflow's import is not ours to pay.
            if self._nest and "mlflow" in sys.modules:
                from ag2_otel.sinks import mlflow_writer

                parent_hex = format(parent.span_id, "016x") if parent is not None else None
                if parent is None or not parent.is_remote:
                    buffer.mlflow_parent = mlflow_writer.active_mlflow_parent(parent_hex)
        except Exception as exc:  # noqa: BLE001 - never break the application
            self._error_once("on_start", exc)

    def on_end(self, span: ReadableSpan) -> None:
        if self._shutdown:
            return
        try:
            if _foreign(span):
                return
            span_id = span.context.span_id
            with self._lock:
                owner = self._owner.pop(span_id, None)
                if owner is None or owner == _DROPPED:
                    if owner == _DROPPED:
                        self._stats.dropped_spans += 1
                    return  # None: started before this processor was added
                buffer = self._buffers.get(owner)
                if buffer is None:
                    self._stats.late_spans += 1
                    return
                if span_id != owner:
                    buffer.open.pop(span_id, None)
                    self._append(buffer, span)
                    return
                del self._buffers[owner]
                if self._open_root_by_trace.get(buffer.trace_id) == owner:
                    del self._open_root_by_trace[buffer.trace_id]
            self._export(buffer, span, complete=True, on_root_thread=True)
        except Exception as exc:  # noqa: BLE001
            self._error_once("on_end", exc)

    def add_finished(self, spans: Iterable[ReadableSpan]) -> None:
        """Assemble FINISHED spans seen without ``on_start`` (an exporter's batches) into MLflow traces.

        Spans are buffered per OTel trace id. When a local root arrives (after the rest of its batch is buffered, so
        order inside a batch does not matter), the buffered spans of its trace id whose parent chain reaches it are
        written with it as one trace; spans of the same trace id under another local root stay for that root. A span
        whose chain ends at a span already written is late (counted, dropped, as in ``on_end``); spans whose root
        never arrives are written at :meth:`shutdown`, tagged incomplete. Not combined with ``on_start``/``on_end``
        on the same instance.
        """
        if self._shutdown:
            return
        try:
            ready: list[tuple[_Buffer, ReadableSpan]] = []
            with self._lock:
                roots = []
                for span in spans:
                    if _foreign(span):
                        continue
                    if _is_local_root(span):
                        roots.append(span)
                    else:
                        self._buffer_finished(span)
                for root in roots:
                    buffer = self._claim(root)
                    if buffer is not None:
                        ready.append((buffer, root))
            for buffer, root in ready:
                self._export(buffer, root, complete=True)
        except Exception as exc:  # noqa: BLE001
            self._error_once("add_finished", exc)

    def _buffer_finished(self, span: ReadableSpan) -> None:
        """Under the lock: one finished non-root span into its trace id's buffer (or counted as late / dropped)."""
        trace_id, span_id, parent = span.context.trace_id, span.context.span_id, _parent_id(span)
        written = self._written.get(trace_id)
        if written is not None and parent in written:
            written.add(span_id)  # its own late children are late too
            self._stats.late_spans += 1
            return
        buffer = self._finished.get(trace_id)
        if buffer is None:
            if trace_id in self._refused:
                self._stats.dropped_spans += 1
                return
            if self._full(self._finished):
                self._remember(self._refused, trace_id, None)
                self._stats.dropped_spans += 1
                return
            buffer = self._finished[trace_id] = _Buffer(None, trace_id)
        buffer.links[span_id] = parent
        self._append(buffer, span)

    def _full(self, buffers: dict) -> bool:
        """Under the lock: True (counted, warned once) when a new trace must be refused: max_traces are buffered."""
        if len(buffers) < self._max_traces:
            return False
        self._stats.dropped_traces += 1
        self._warn_once("traces", "max_traces=%d buffered traces reached; dropping new traces (counted in stats)",
                        self._max_traces)
        return True

    def _append(self, buffer: _Buffer, span: ReadableSpan) -> None:
        """Under the lock: buffer a finished span, or count it as dropped past ``max_spans_per_trace``."""
        if len(buffer.spans) < self._max_spans:
            buffer.spans.append(span)
            return
        buffer.dropped += 1
        self._stats.dropped_spans += 1
        self._warn_once("spans", "max_spans_per_trace=%d reached; dropping spans (counted in stats and tagged on "
                        "the trace)", self._max_spans)

    def _claim(self, root: ReadableSpan) -> _Buffer | None:
        """Under the lock: the buffered spans that descend from ``root`` (a finished local root), as one buffer."""
        trace_id, root_id = root.context.trace_id, root.context.span_id
        if trace_id in self._refused and trace_id not in self._finished:
            self._stats.dropped_spans += 1
            return None
        claimed = _Buffer(None, trace_id)
        pending = self._finished.get(trace_id)
        if pending is not None:
            ours: dict[int, bool] = {root_id: True}

            def descends(span_id: int | None) -> bool:
                chain = []
                while span_id is not None and span_id not in ours and span_id in pending.links:
                    chain.append(span_id)
                    span_id = pending.links[span_id]
                    if len(chain) > len(pending.links):  # a cycle: not ours
                        span_id = None
                verdict = ours.get(span_id, False) if span_id is not None else False
                for hop in chain:
                    ours[hop] = verdict
                return verdict

            claimed.spans = [s for s in pending.spans if descends(s.context.span_id)]
            mine = {span_id for span_id in pending.links if descends(span_id)}
            dropped_here = len(mine) - len(claimed.spans)
            claimed.dropped, pending.dropped = dropped_here, pending.dropped - dropped_here
            pending.spans = [s for s in pending.spans if s.context.span_id not in mine]
            pending.links = {k: v for k, v in pending.links.items() if k not in mine}
            if not pending.links:
                del self._finished[trace_id]
            written = mine | {root_id}
        else:
            written = {root_id}
        self._remember(self._written, trace_id, written)
        return claimed

    @staticmethod
    def _remember(recent: OrderedDict, key: int, value: Any) -> None:
        if key in recent and isinstance(value, set):
            value |= recent[key]
        recent[key] = value
        recent.move_to_end(key)
        while len(recent) > _RECENT:
            recent.popitem(last=False)

    def shutdown(self) -> None:
        """Write every trace whose root never ended (tagged ``ag2_otel.incomplete``), then wait for the writes."""
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
            pending = [*self._buffers.values(), *self._finished.values()]
            self._buffers.clear()
            self._finished.clear()
            self._owner.clear()
            self._open_root_by_trace.clear()
        for buffer in pending:
            buffer.spans.extend(buffer.open.values())  # still running at exit: written unfinished (ERROR)
            self._export(buffer, buffer.root, complete=False, on_root_thread=True)
        self.flush(self._write_timeout)  # the shared writer process stays for other processors; it exits with us

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.flush(timeout_millis / 1000.0)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every trace written so far is in the MLflow store. False on timeout or error."""
        try:
            done = True
            if self._store is not None:
                done = self._store.flush(timeout)
            if self._inline_executor is not None:
                done = self._inline_executor.flush(timeout) and done
            return done
        except Exception as exc:  # noqa: BLE001
            self._error_once("flush", exc)
            return False

    # --- internals -----------------------------------------------------------------------------------------------
    def _export(self, buffer: _Buffer, root: ReadableSpan | None, *, complete: bool,
                on_root_thread: bool = False) -> None:
        """One trace, one job, one of two executors: the writer process where it can take the job (a destination
        it writes, not nested under the user's MLflow span, the process up), else the in-process replay."""
        try:
            spans = [*buffer.spans, root] if root is not None else buffer.spans
            if not spans:
                return
            nested = buffer.mlflow_parent is not None
            job = self._job(buffer, root, spans, complete, to_process=self._store is not None and not nested)
            if (job.destination is not None
                    and self._store.submit(job, wait=None if complete else self._write_timeout)):
                executor: Any = self._store
                if on_root_thread:
                    self._read_barrier.note_last_trace(job.trace_id)
            else:
                _local.replaying = True
                try:
                    record = self._inline.submit(job, parent=buffer.mlflow_parent)
                finally:
                    _local.replaying = False
                if record is None:
                    return
                # Nested under a user's MLflow span: MLflow writes when that span ends, nothing to wait for here.
                executor = None if nested else self._inline
            with self._lock:
                self._stats.traces_written += 1
                if not (complete if executor is self._store else record.complete):
                    self._stats.incomplete_traces_written += 1
            if complete and self._wait and executor is not None and not executor.wait_for(job.trace_id,
                                                                                         self._write_timeout):
                self._count_timeout()
        except Exception as exc:  # noqa: BLE001
            with self._lock:
                self._stats.write_errors += 1
            self._error_once("write", exc)

    def _job(self, buffer: _Buffer, root: ReadableSpan | None, spans: list, complete: bool, *,
             to_process: bool) -> TraceJob:
        # A root without a parent owns its OTel trace id: same id in MLflow (tr-<hex>), easy to match with a
        # collector backend. Anything else (remote parent, a parent from another provider) may share it: fresh id.
        own_id = root is not None and root.parent is None
        trace_id = mlflow_trace_id(buffer.trace_id if own_id else uuid.uuid4().int)
        if self._extra_metadata is None:
            self._extra_metadata = _source_metadata()
        # destination None: not for the writer process (none, nested, or a URI it cannot write): replay in-process
        destination = _process_destination() if to_process else None
        return TraceJob(trace_id, destination, buffer.trace_id, root.context.span_id if root is not None else None,
                        complete, buffer.dropped, self._extra_metadata, self._retry_timeout, spans)

    def _count_timeout(self) -> None:
        with self._lock:
            self._stats.write_timeouts += 1
        self._warn_once("timeout", "MLflow did not store a trace within write_timeout=%ss; it is still "
                        "queued (mlflow.get_trace may not find it yet)", self._write_timeout)

    def _error_once(self, where: str, exc: BaseException) -> None:
        # Type only: messages from a store or HTTP client can carry URIs with credentials. Details at DEBUG.
        self._warn_once("error:" + where, "MlflowSpanProcessor.%s failed (%s); further errors are only counted",
                        where, type(exc).__name__)
        _logger.debug("ag2_otel: MlflowSpanProcessor.%s failed", where, exc_info=True)


_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def _process_destination() -> tuple[str | None, str | None, str | None] | None:
    """(tracking URI, experiment id, experiment name) for the writer process, or None if it cannot write there.

    Resolved here, per trace, as MLflow resolves it: ``mlflow.set_tracking_uri`` and ``mlflow.set_experiment`` (which
    sets ``MLFLOW_EXPERIMENT_ID``) in the application apply to the next trace. Without MLflow imported the application
    cannot have called them: ``MLFLOW_TRACKING_URI``, else None, which the writer process resolves to MLflow's own
    default (it has MLflow imported; the default differs between MLflow releases: ``./mlruns``, ``sqlite:///mlflow.db``).
    SQL stores, HTTP servers and file stores are written by the writer process (see store_writer for how, per MLflow);
    Databricks keeps the in-process replay (its own span upload protocol, and MLflow's exporter for it).
    """
    if "mlflow" in sys.modules:
        import mlflow

        uri = mlflow.get_tracking_uri()
    else:
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            return None, os.environ.get("MLFLOW_EXPERIMENT_ID") or None, os.environ.get("MLFLOW_EXPERIMENT_NAME") or None
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""
    if scheme == "sqlite":
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else None
        if path is None or path.startswith(":memory:") or not path:
            return None
        if not path.startswith("/"):  # relative to the application's cwd, which the writer process may not share
            uri = "sqlite:///" + os.path.abspath(path)
    elif not scheme and uri.lower().startswith("databricks"):
        return None  # the bare "databricks" URI (MLflow's is_databricks_uri), not a path
    elif scheme == "file" or (not scheme and uri):
        # a file store (``file:...`` or a plain path); relative paths are the application's cwd's
        path = uri[len("file://"):] if uri.startswith("file://") else uri[len("file:"):] if scheme == "file" else uri
        if not path or path.startswith("//"):  # file://host/...: not a local path
            return None
        uri = Path(os.path.abspath(path)).as_uri()
    elif scheme not in _SQL_SCHEMES and scheme not in ("http", "https"):
        return None
    return uri, os.environ.get("MLFLOW_EXPERIMENT_ID") or None, os.environ.get("MLFLOW_EXPERIMENT_NAME") or None


def _source_metadata() -> dict[str, str]:
    """What MLflow records about the producing program, for traces written by the writer process."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        user = ""
    return {"mlflow.user": user, "mlflow.source.name": sys.argv[0] if sys.argv else "", "mlflow.source.type": "LOCAL"}
