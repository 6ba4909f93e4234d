"""``MlflowSpanProcessor``: an OTel span processor that turns each finished local trace into one MLflow trace.

Add it to any ``TracerProvider``::

    provider.add_span_processor(MlflowSpanProcessor())

One assembly path for both entry points: finished spans are buffered per OTel trace id with the span each hangs
under; when a LOCAL root ends, the buffered spans whose chain reaches it are claimed (``_claim``) and become one
:class:`~ag2_otel.sinks.trace_job.TraceJob` for one of two executors with the same interface (``submit`` /
``wait_for`` / ``flush``): the store writer process (``writer="process"``, the default; see ``writer_client.py`` and
``store_writer.py``), which maps them (:func:`build_trace_record`) and stores them with
the other traces queued meanwhile in one batched write, off this process's GIL; or the in-process replay
(``mlflow_writer.InlineExecutor``). ``read_barrier.py`` makes ``mlflow.get_last_active_trace_id()``
return it and MLflow reads in this process wait for it. ``writer="inline"`` (and, whatever the setting, Databricks
and a trace nested under the user's active MLflow span) replays the mapped trace through MLflow's public
tracing API on the thread that ended the root instead. ``wait_for_write=True`` makes the root's end wait (bounded by
``write_timeout``) until the trace is stored.

Never raises into the application: errors are counted, logged once (type only; details at DEBUG), and swallowed.

``on_end`` feeds it span by span; :meth:`MlflowSpanProcessor.add_finished` feeds it FINISHED spans in batches, possibly
out of order (``MlflowSpanExporter``, behind the SDK's BatchSpanProcessor), where a local root is a span with no parent
or a remote one. ``on_start`` adds only what a start tells: the span is open (written unfinished at shutdown, late if
it ends after its root was written), which root it hangs under (a parent not open here -> the latest open root of its
trace id, else it is a local root itself), and the user's MLflow span a root nests under. Same caps, counters, late
and dropped rules and shutdown guarantee for both.
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

_RECENT = 1024  # trace ids remembered after a trace of theirs was written (late spans) or refused (dropped spans)
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


class _Trace:
    """The spans of one OTel trace id not written yet (or, claimed from it, the spans of one local root)."""

    __slots__ = ("trace_id", "spans", "links", "open", "roots", "dropped", "mlflow_parent")

    def __init__(self, trace_id: int) -> None:
        self.trace_id = trace_id
        self.spans: list[ReadableSpan] = []  # finished, within max_spans_per_trace
        self.links: dict[int, int | None] = {}  # span id -> the span id it hangs under, for every span seen
        self.open: dict[int, Span] = {}  # on_start only: started, not ended (written unfinished at shutdown)
        self.roots: dict[int, Any] = {}  # on_start only: open local root span id -> the MLflow span to nest under
        self.dropped: set[int] = set()  # span ids over max_spans_per_trace
        self.mlflow_parent: Any = None  # a claimed trace's MLflow span to nest under


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
        self._pending: dict[int, _Trace] = {}  # OTel trace id -> spans not written yet
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
        """What only a span's start tells: it is open, which root it hangs under, the MLflow span a root nests in."""
        if self._shutdown:
            return
        try:
            if _foreign(span):
                return
            trace_id, span_id, parent = span.context.trace_id, span.context.span_id, span.parent
            local_parent = parent is not None and not parent.is_remote
            with self._lock:
                pending = self._pending.get(trace_id)
                under = None
                if local_parent and pending is not None:
                    # Under its parent if that is buffered here; a parent that is not (written already, or another
                    # provider's span): under the latest open root of the trace id if any, else a root of its own.
                    under = parent.span_id if parent.span_id in pending.links else next(reversed(pending.roots), None)
                if under is None:
                    pending = self._trace(trace_id, new_root=not local_parent)
                    if pending is None:
                        return  # refused: counted when it ends
                    pending.roots[span_id] = None
                pending.links[span_id] = under
                pending.open[span_id] = span
            mlflow_parent = self._mlflow_parent(parent) if under is None else None  # MLflow's code: not under our lock
            if mlflow_parent is not None:
                with self._lock:
                    if span_id in pending.roots:
                        pending.roots[span_id] = mlflow_parent
        except Exception as exc:  # noqa: BLE001 - never break the application
            self._error_once("on_start", exc)

    def _mlflow_parent(self, parent: Any) -> Any:
        """The user's active MLflow span a new local root nests under (None: its own trace)."""
        # No MLflow imported: no MLflow span can be active, and MLflow's import is not ours to pay.
        if not self._nest or "mlflow" not in sys.modules or (parent is not None and parent.is_remote):
            return None
        from ag2_otel.sinks import mlflow_writer

        return mlflow_writer.active_mlflow_parent(format(parent.span_id, "016x") if parent is not None else None)

    def on_end(self, span: ReadableSpan) -> None:
        if self._shutdown:
            return
        try:
            if _foreign(span):
                return
            with self._lock:
                pending = self._pending.get(span.context.trace_id)
                if pending is None or pending.open.pop(span.context.span_id, None) is None:
                    self._untracked(span)  # late, refused, or started before this processor was added
                    return
                claimed = self._finished(span, is_root=span.context.span_id in pending.roots)
            if claimed is not None:
                self._export(claimed, span, complete=True, on_root_thread=True)
        except Exception as exc:  # noqa: BLE001
            self._error_once("on_end", exc)

    def add_finished(self, spans: Iterable[ReadableSpan]) -> None:
        """Assemble FINISHED spans seen without ``on_start`` (an exporter's batches) into MLflow traces.

        Spans are buffered as ``on_end`` buffers them. A local root is written when it arrives (after the rest of its
        batch is buffered, so order inside a batch does not matter) with the buffered spans of its trace id whose
        parent chain reaches it; spans of the same trace id under another local root stay for that root. Not combined
        with ``on_start``/``on_end`` on the same instance.
        """
        if self._shutdown:
            return
        try:
            ready: list[tuple[_Trace, ReadableSpan]] = []
            with self._lock:
                spans = [s for s in spans if not _foreign(s) and not self._untracked(s)]
                for span in sorted(spans, key=_is_local_root):  # a batch's roots last
                    claimed = self._finished(span, is_root=_is_local_root(span))
                    if claimed is not None:
                        ready.append((claimed, span))
            for claimed, root in ready:
                self._export(claimed, root, complete=True)
        except Exception as exc:  # noqa: BLE001
            self._error_once("add_finished", exc)

    def _finished(self, span: ReadableSpan, *, is_root: bool) -> _Trace | None:
        """Under the lock, the one assembly step: a finished span into its trace's buffer; for a local root, the
        trace claimed for writing (None: nothing to write now)."""
        trace_id, span_id = span.context.trace_id, span.context.span_id
        pending = self._pending.get(trace_id)
        if is_root:
            return self._claim(pending or _Trace(trace_id), span_id)
        pending = pending or self._trace(trace_id, new_root=False)  # on_end: always there (on_start made it)
        if pending is None:
            self._stats.dropped_spans += 1  # refused now: max_traces are buffered
            return None
        pending.links.setdefault(span_id, _parent_id(span))  # on_start's link wins: it knows the open root
        self._append(pending, span)
        return None

    def _untracked(self, span: ReadableSpan) -> bool:
        """Under the lock: True (counted) if a finished span is late (it or its parent was written already) or
        belongs to a refused trace."""
        trace_id, span_id, parent = span.context.trace_id, span.context.span_id, _parent_id(span)
        written = self._written.get(trace_id)
        if written is not None and (span_id in written or parent in written):
            written.add(span_id)  # its own late children are late too
            self._stats.late_spans += 1
            return True
        if trace_id in self._refused:
            self._stats.dropped_spans += 1
            return True
        return False

    def _trace(self, trace_id: int, *, new_root: bool) -> _Trace | None:
        """Under the lock: the pending spans of ``trace_id``, or a new buffer for them; None if the trace is refused:
        max_traces are buffered (counted, warned once), or it was refused before and no new local root starts."""
        pending = self._pending.get(trace_id)
        if pending is not None or (not new_root and trace_id in self._refused):
            return pending
        if len(self._pending) >= self._max_traces:
            self._stats.dropped_traces += 1
            self._warn_once("traces", "max_traces=%d buffered traces reached; dropping new traces (counted in stats)",
                            self._max_traces)
            self._remember(self._refused, trace_id, None)
            return None
        self._refused.pop(trace_id, None)
        pending = self._pending[trace_id] = _Trace(trace_id)
        return pending

    def _append(self, pending: _Trace, span: ReadableSpan) -> None:
        """Under the lock: buffer a finished span, or count it as dropped past ``max_spans_per_trace``."""
        if len(pending.spans) < self._max_spans:
            pending.spans.append(span)
            return
        pending.dropped.add(span.context.span_id)
        self._stats.dropped_spans += 1
        self._warn_once("spans", "max_spans_per_trace=%d reached; dropping spans (counted in stats and tagged on "
                        "the trace)", self._max_spans)

    def _claim(self, pending: _Trace, root_id: int) -> _Trace:
        """Under the lock: take the spans that hang under ``root_id`` out of ``pending``, as one trace (``open``: its
        spans still running, late when they end), and remember them as written."""
        links = pending.links
        ours: dict[int, bool] = {root_id: True}

        def descends(span_id: int | None) -> bool:
            chain = []
            while span_id is not None and span_id not in ours and span_id in links:
                chain.append(span_id)
                span_id = links[span_id]
                if len(chain) > len(links):  # a cycle: not ours
                    span_id = None
            verdict = ours.get(span_id, False) if span_id is not None else False
            for hop in chain:
                ours[hop] = verdict
            return verdict

        mine = {span_id for span_id in links if descends(span_id)} | {root_id}
        claimed = _Trace(pending.trace_id)
        claimed.spans = [s for s in pending.spans if s.context.span_id in mine]
        pending.spans = [s for s in pending.spans if s.context.span_id not in mine]
        claimed.open = {k: v for k, v in pending.open.items() if k in mine and k != root_id}
        pending.open = {k: v for k, v in pending.open.items() if k not in mine}
        claimed.dropped, pending.dropped = pending.dropped & mine, pending.dropped - mine
        claimed.mlflow_parent = pending.roots.pop(root_id, None)
        pending.links = {k: v for k, v in links.items() if k not in mine}
        if not pending.links and self._pending.get(pending.trace_id) is pending:
            del self._pending[pending.trace_id]
        self._remember(self._written, pending.trace_id, mine)
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
        unfinished: list[tuple[_Trace, Span | None]] = []
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
            for pending in list(self._pending.values()):
                for root_id in list(pending.roots):
                    root = pending.open[root_id]
                    unfinished.append((self._claim(pending, root_id), root))
                unfinished.append((pending, None))  # spans whose root never started here or never arrived
            self._pending.clear()
        for trace, root in unfinished:
            trace.spans.extend(trace.open.values())  # still running at exit: written unfinished (ERROR)
            self._export(trace, root, complete=False, on_root_thread=True)
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
    def _export(self, trace: _Trace, root: ReadableSpan | None, *, complete: bool,
                on_root_thread: bool = False) -> None:
        """One trace, one job, one of two executors: the writer process where it can take the job (a destination
        it writes, not nested under the user's MLflow span, the process up), else the in-process replay."""
        try:
            spans = [*trace.spans, root] if root is not None else trace.spans
            if not spans:
                return
            nested = trace.mlflow_parent is not None
            job = self._job(trace, root, spans, complete, to_process=self._store is not None and not nested)
            if (job.destination is not None
                    and self._store.submit(job, wait=None if complete else self._write_timeout)):
                executor: Any = self._store
                if on_root_thread:
                    self._read_barrier.note_last_trace(job.trace_id)
            else:
                _local.replaying = True
                try:
                    record = self._inline.submit(job, parent=trace.mlflow_parent)
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

    def _job(self, trace: _Trace, root: ReadableSpan | None, spans: list, complete: bool, *,
             to_process: bool) -> TraceJob:
        # A root without a parent owns its OTel trace id: same id in MLflow (tr-<hex>), easy to match with a
        # collector backend. Anything else (remote parent, a parent from another provider) may share it: fresh id.
        own_id = root is not None and root.parent is None
        trace_id = mlflow_trace_id(trace.trace_id if own_id else uuid.uuid4().int)
        if self._extra_metadata is None:
            self._extra_metadata = _source_metadata()
        # destination None: not for the writer process (none, nested, or a URI it cannot write): replay in-process
        destination = _process_destination() if to_process else None
        return TraceJob(trace_id, destination, trace.trace_id, root.context.span_id if root is not None else None,
                        complete, len(trace.dropped), self._extra_metadata, self._retry_timeout, spans)

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
