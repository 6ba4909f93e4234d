"""The store writer process: receives finished traces from the application and writes each to MLflow in one batch.

Why a process: storing a span costs MLflow ~0.5-1.2 ms of CPU (JSON, SQLAlchemy, sqlite). On a thread of the
application that CPU competes with the agents for the GIL; here it does not. The application side
(:mod:`ag2_otel.sinks.writer_client`) starts this module with ``python -m ag2_otel.sinks.store_writer FD`` and talks
over a socket pair (``multiprocessing.connection.Connection`` frames, pickled):

* ``("traces", [TraceJob, ...])`` (:mod:`ag2_otel.sinks.trace_job`: what was queued when the child took the last
  batch) -> ``("done", [JobResult, ...])`` once all are stored (or given up); a result's ``stored_id`` is the job's
  ``trace_id`` except on the ``v2`` path, where the store chose it;
* ``("warm", destination)`` -> build that store now (schema creation, first connection), not at the first trace;
* EOF -> finish what was received, then exit.

Each trace of a batch: the snapshot is rebuilt into ``ReadableSpan`` objects and mapped by the same pure mapping as
everywhere (:func:`build_trace_record`). How it is then stored is decided by what the installed MLflow HAS (feature detection at
start, never its version string; see :func:`write_path`):

* ``batched`` (``TracingClient.start_trace(trace_info)``, MLflow 3.2+ or so), under our trace ids
  ``tr-<otel trace id>``: ONE ``TracingClient.log_spans(experiment_id, spans)`` with every span of the batch (one SQL
  transaction, or one OTLP POST to a server), each root span carrying its trace's tags as ``mlflow.traceTag.*`` and
  its inputs/outputs in the shape the store derives previews from (``mlflow_wire.trace_tags``,
  ``mlflow_trace.chat_messages``). MLflow 3.17's store makes whole traces of that: tags, state, times, previews,
  token totals, session; the trace metadata it cannot be given that way is why our breakdown is in tags. Whether a
  store does is proved once per URI on the first trace written there (:meth:`StoreWriter._makes_traces`: it reads
  back as ``start_trace`` would have written it). Where it does not, the calls MLflow's own exporter makes:
  ``TracingClient.start_trace(trace_info)`` per trace first (to a server, up to ``HTTP_PARALLEL`` at once; again
  after the spans where ``log_spans`` adds span usage onto it, MLflow 3.10), the spans (skipped where MLflow has no
  ``log_spans``, and for good on a store that answers ``NotImplementedError``: a file store, a server older than
  3.4), then the span data as each trace's artifact unless the store keeps spans (the stored trace carries
  ``mlflow.trace.spansLocation``, checked once per URI; an MLflow without that tag reads spans from the artifact only,
  e.g. 3.5). Without ``start_trace`` a store writes 2-3× as many traces a second (``benchmarks/bench.py``).
* ``v2`` (``TracingClient.start_trace(experiment_id, timestamp_ms, request_metadata, tags)``, MLflow 3.1): the calls
  that MLflow's own exporter for non-Databricks URIs makes there: ``start_trace`` (the store picks the trace id),
  the span data as the trace's artifact, ``end_trace``. The id the store chose goes back with the acknowledgement,
  and the application's read barrier hands it to ``mlflow.get_last_active_trace_id()`` / ``mlflow.get_trace(...)``.

``Span.from_dict``, ``TraceInfo``, ``TraceData``, ``TraceLocation`` and ``TraceStatus`` are public entities;
``TracingClient`` is the client behind ``MlflowClient``'s trace methods (public methods, no ``:meta private:``, though
the class is not in MLflow's API reference); ``TracingClient._upload_trace_data`` is the one private call (MLflow's
exporter's own artifact upload, the same from 3.1 to 3.17). None of it goes through MLflow's tracer (which MLflow 3.1
cannot run on a current OpenTelemetry SDK). The child's first message says which path:
``("ready", {"write_path": "batched" | "v2" | None, "missing": what is missing, or None})``; None: this MLflow has
neither, every trace is answered ``UnsupportedMLflow`` and the application writes in-process.

Backend down (server unreachable, sqlite locked): the batch is retried (what is stored already is not repeated) with
capped exponential backoff until ``retry_timeout`` seconds passed since the batch arrived, then given up and
reported; a 4xx on a batch of several is retried trace by trace. Traces behind it wait; the application side bounds
how many are queued and counts drops.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from ag2_otel.mapping.mlflow_wire import META_TOKEN_USAGE
from ag2_otel.sinks.credentials import error_name
from ag2_otel.sinks.trace_job import JobResult, TraceJob

_logger = logging.getLogger("ag2_otel.store_writer")

MAX_BACKOFF_S = 2.0
V2_INPUTS, V2_OUTPUTS = "mlflow.traceInputs", "mlflow.traceOutputs"  # MLflow 3.1 TraceMetadataKey.INPUTS / OUTPUTS
V2_PREVIEW_CHARS = 250  # MLflow 3.1 MAX_CHARS_IN_TRACE_INFO_METADATA
HTTP_PARALLEL = 4  # start_trace calls of one batch in flight at once to an http(s) server


@dataclass
class _Prepared:
    """A job mapped: the record, its TraceInfo fields and (batched path) its MLflow spans and state."""

    job: TraceJob
    record: Any
    fields: dict[str, Any]
    spans: list[Any] = field(default_factory=list)
    state: Any = None


def _permanent(exc: BaseException) -> bool:
    """A 4xx answer (bad request, not found): retrying cannot help."""
    status = getattr(exc, "get_http_status_code", None)
    try:
        code = int(status()) if callable(status) else None
    except Exception:  # noqa: BLE001
        code = None
    return code is not None and 400 <= code < 500 and code != 429


def _params(function: Any) -> frozenset[str]:
    import inspect

    try:
        return frozenset(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return frozenset()


def write_path() -> tuple[str | None, str | None]:
    """(``"batched"`` | ``"v2"`` | None, what is missing for the batched path). By feature: the methods and
    signatures the installed MLflow has, not its version."""
    from mlflow.tracing.client import TracingClient

    try:
        from mlflow.entities import Span, TraceData  # noqa: F401
    except ImportError as exc:
        return None, f"mlflow.entities ({exc})"
    if not callable(getattr(Span, "from_dict", None)):
        return None, "Span.from_dict"
    if not callable(getattr(TracingClient, "_upload_trace_data", None)):
        return None, "TracingClient._upload_trace_data"
    start = _params(TracingClient.start_trace)
    if "trace_info" in start:
        try:
            from mlflow.entities import TraceInfo, TraceLocation, TraceState  # noqa: F401
        except ImportError as exc:
            return None, f"mlflow.entities ({exc})"
        if callable(getattr(TraceLocation, "from_experiment_id", None)):
            return "batched", None if callable(getattr(TracingClient, "log_spans", None)) else "TracingClient.log_spans"
        return None, "TraceLocation.from_experiment_id"
    if {"experiment_id", "timestamp_ms", "request_metadata", "tags"} <= start and callable(
            getattr(TracingClient, "end_trace", None)):
        return "v2", "TracingClient.start_trace(trace_info)"
    return None, "TracingClient.start_trace(trace_info)"


def _spans_in_store_tag() -> tuple[str, str] | None:
    """(tag key, value) by which a stored trace says its spans are in the tracking store; None on an MLflow whose
    ``get_trace`` reads spans from the trace's artifact only."""
    try:
        from mlflow.tracing.constant import SpansLocation, TraceTagKey

        return TraceTagKey.SPANS_LOCATION, SpansLocation.TRACKING_STORE.value
    except (ImportError, AttributeError):
        return None


def _same_usage(stored: str, sent: str) -> bool:
    import json

    try:
        return json.loads(stored) == json.loads(sent)
    except (TypeError, ValueError):
        return False


def _not_supported(exc: BaseException) -> bool:
    """The store cannot log spans (file store, a server older than 3.4): MLflow's exporter stops trying too."""
    if isinstance(exc, NotImplementedError):
        return True
    message = str(getattr(exc, "message", "") or exc)
    return "span logging is not supported" in message or "log_spans is not supported" in message


class StoreWriter:
    def __init__(self) -> None:
        from mlflow.entities import Span, TraceData
        from mlflow.tracing.client import TracingClient

        from ag2_otel.mapping.mlflow_trace import build_trace_record
        from ag2_otel.mapping.mlflow_wire import span_dicts, trace_info_fields, trace_tags
        from ag2_otel.sinks.span_snapshot import rebuild

        self.path, self.missing = write_path()
        self._client_class = TracingClient
        self._span_from_dict, self._trace_data = Span.from_dict, TraceData
        if self.path == "batched":
            from mlflow.entities import TraceInfo, TraceLocation, TraceState

            self._trace_info, self._location, self._state = TraceInfo, TraceLocation, TraceState
            self._spans_in_store = _spans_in_store_tag()
            self._has_log_spans = callable(getattr(TracingClient, "log_spans", None))
        elif self.path == "v2":
            from mlflow.entities.trace_status import TraceStatus

            self._status = TraceStatus
        self._build, self._span_dicts, self._info_fields, self._tags, self._rebuild = (
            build_trace_record, span_dicts, trace_info_fields, trace_tags, rebuild)
        self._clients: dict[str, Any] = {}
        self._no_span_logging: set[str] = set()  # URIs whose store answered log_spans with "not supported"
        self._reachable: set[str] = set()
        self._spans_kept: dict[str, bool] = {}  # URI -> its store reads spans logged by log_spans (see _keeps_spans)
        self._usage_kept: dict[str, bool] = {}  # URI -> log_spans leaves start_trace's token usage as it is
        self._spans_only: dict[str, bool] = {}  # URI -> log_spans alone makes whole traces there (_makes_traces)
        self._threads: Any = None
        self._experiments: dict[tuple, str] = {}
        self._default_uri: str | None = None

    def _check_server(self, uri: str) -> None:
        """Raise unless an http(s) server answers ``/health``, until it has once.

        MLflow's REST store asks the server's version before its first ``log_spans`` and caches the answer for the
        life of the process, a failure included ("log_spans is not supported"): asking while the server is down
        would disable span logging for good. So we only let it ask once the server is up.
        """
        if uri in self._reachable or not uri.lower().startswith(("http://", "https://")):
            return
        import urllib.request

        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=3) as response:  # noqa: S310 - user's URI
            response.read()
        self._reachable.add(uri)

    def _client(self, uri: str) -> Any:
        self._check_server(uri)
        client = self._clients.get(uri)
        if client is None:
            client = self._clients[uri] = self._client_class(uri)
        return client

    def _experiment_id(self, uri: str, experiment_id: str | None, experiment_name: str | None) -> str:
        if experiment_id:
            return experiment_id
        if not experiment_name:
            return "0"  # MLflow's Default experiment
        key = (uri, experiment_name)
        found = self._experiments.get(key)
        if found is None:
            client = self._experiment_client(uri)
            experiment = client.get_experiment_by_name(experiment_name)
            found = experiment.experiment_id if experiment else client.create_experiment(experiment_name)
            self._experiments[key] = found
        return found

    def _experiment_client(self, uri: str) -> Any:
        """``MlflowClient(uri)``; with only mlflow-tracing (no MlflowClient) the tracking store behind our client,
        which has the same experiment methods (MlflowClient calls them)."""
        try:
            from mlflow import MlflowClient
        except ImportError:
            return self._client(uri).store
        return MlflowClient(uri)

    def warm(self, destination: tuple) -> None:
        """Build the store (sqlite: create/migrate the schema; http: first connection) before the first trace."""
        try:
            uri, experiment_id, experiment_name = destination
            uri = self.resolve_uri(uri)
            self._client(uri)
            location = self._experiment_id(uri, experiment_id, experiment_name)
            self._experiment_client(uri).get_experiment(location)
        except Exception:  # noqa: BLE001 - the first write will retry and report
            _logger.debug("warm-up failed", exc_info=True)

    def resolve_uri(self, uri: str | None) -> str:
        """None: the application had not imported MLflow and set no MLFLOW_TRACKING_URI: MLflow's own default, as this
        MLflow resolves it (``./mlruns`` or ``sqlite:///mlflow.db`` in the working directory, which we share)."""
        if uri:
            return uri
        if self._default_uri is None:
            import mlflow

            self._default_uri = mlflow.get_tracking_uri()
        return self._default_uri

    def write_batch(self, jobs: list[TraceJob], arrived: float) -> list[JobResult]:
        """Store the traces of one batch; one answer per job. Jobs are grouped by destination; a group is stored
        with one ``log_spans`` call (each trace's spans kept together), see :meth:`_write_batched`."""
        results: list[JobResult] = []
        groups: dict[tuple, list[_Prepared]] = {}
        for job in jobs:
            if self.path is None:
                results.append(JobResult(job.seq, job.trace_id, "UnsupportedMLflow", job.trace_id))
                continue
            try:
                prepared = self._prepare(job)
            except Exception as exc:  # noqa: BLE001 - a mapping bug: report, never retry
                _logger.debug("mapping failed", exc_info=True)
                results.append(JobResult(job.seq, job.trace_id, type(exc).__name__, job.trace_id))
                continue
            if prepared is None:  # nothing to store (no spans left)
                results.append(JobResult(job.seq, job.trace_id, None, job.trace_id))
                continue
            groups.setdefault(tuple(job.destination), []).append(prepared)
        for destination, group in groups.items():
            results.extend(self._store(destination, group, arrived + min(p.job.retry_timeout for p in group)))
        return results

    def _prepare(self, job: TraceJob) -> _Prepared | None:
        record = self._build(self._rebuild(job.otel_trace_id, job.spans), root_span_id=job.root_span_id,
                             complete=job.complete, dropped_spans=job.dropped)
        if record is None:
            return None
        prepared = _Prepared(job, record, self._info_fields(record, job.trace_id, job.extra_metadata))
        if self.path == "batched":
            tags = self._tags(record, job.extra_metadata)
            prepared.spans = [self._span_from_dict(d) for d in self._span_dicts(record, job.trace_id, tags=tags)]
            prepared.state = self._state(prepared.fields.pop("state"))
        return prepared

    def _store(self, destination: tuple, group: list[_Prepared], deadline: float) -> list[JobResult]:
        """Store ``group`` (same destination), retrying with capped backoff until ``deadline``. A permanent error
        (4xx) on a group of several is retried trace by trace, so one bad trace does not fail the others."""
        uri, experiment_id, experiment_name = destination
        progress: dict[str, Any] = {}  # what is stored already, so a retry does not repeat it
        backoff = 0.05
        while True:
            try:
                uri = self.resolve_uri(uri)
                client = self._client(uri)
                location = self._experiment_id(uri, experiment_id, experiment_name)
                if self.path == "batched":
                    self._write_batched(client, uri, location, group, progress)
                    return [JobResult(p.job.seq, p.job.trace_id, None, p.job.trace_id) for p in group]
                stored = [self._write_v2(client, location, p.record, p.job.trace_id, p.fields,
                                         progress.setdefault(p.job.trace_id, {})) for p in group]
                return [JobResult(p.job.seq, p.job.trace_id, None, s) for p, s in zip(group, stored)]
            except Exception as exc:  # noqa: BLE001
                _logger.debug("write of %d trace(s) failed: %r", len(group), exc)
                if _permanent(exc) and len(group) > 1:
                    return [r for p in group for r in self._store(destination, [p], deadline)]
                if _permanent(exc) or time.monotonic() + backoff > deadline:
                    _logger.debug("write failed", exc_info=True)
                    error = error_name(exc, uri)  # a 401/403 says which variables to set
                    return [JobResult(p.job.seq, p.job.trace_id, error, p.job.trace_id) for p in group]
                time.sleep(backoff)  # backoff between attempts at an unreachable backend, not synchronisation
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _write_batched(self, client: Any, uri: str, location: str, group: list[_Prepared],
                       progress: dict[str, Any]) -> None:
        """ONE ``log_spans`` with every span of the group, each root carrying its trace's tags: where the store makes
        whole traces of that (MLflow 3.17: tags, state, times, previews, token usage, session; proved once per URI by
        :meth:`_makes_traces`) that is all. Elsewhere, as MLflow's exporter: ``start_trace`` per trace first (its insert
        path), the spans, and where the store does not keep spans each trace's span data as its artifact."""
        if self._spans_only.get(uri, True) and self._log_spans(client, uri, location, group, progress):
            if uri not in self._spans_only:
                self._spans_only[uri] = self._makes_traces(client, uri, group)
            if self._spans_only[uri]:
                return
            progress["usage_checked"] = True  # start_trace after the spans: its values stand on every store
        infos: dict[str, Any] = progress.setdefault("infos", {})
        todo = [p for p in group if p.job.trace_id not in infos]

        def start(p: _Prepared) -> Any:
            return client.start_trace(self._trace_info(
                trace_location=self._location.from_experiment_id(location), state=p.state, **p.fields))

        if todo:
            if len(todo) > 1 and uri.lower().startswith(("http://", "https://")):
                # one HTTP round trip each: let the server's workers take several at once
                started = list(self._pool().map(start, todo))
            else:
                started = [start(p) for p in todo]
            for p, info in zip(todo, started):
                infos[p.job.trace_id] = info
        self._log_spans(client, uri, location, group, progress)
        if progress.get("logged") and not progress.get("usage_checked"):
            if not self._keeps_usage(client, uri, group):
                # this store added the spans' usage onto start_trace's (MLflow 3.10 sums into the stored value; 3.17
                # keeps start_trace's): say ours again now that the spans are in, start_trace's values then stand
                for p in group:
                    start(p)
            progress["usage_checked"] = True
        if progress.get("logged") and self._keeps_spans(client, uri, group[0].job.trace_id):
            return
        uploaded: set[str] = progress.setdefault("uploaded", set())
        for p in group:
            if p.job.trace_id not in uploaded:
                client._upload_trace_data(infos[p.job.trace_id], self._trace_data(spans=p.spans))
                uploaded.add(p.job.trace_id)

    def _log_spans(self, client: Any, uri: str, location: str, group: list[_Prepared], progress: dict[str, Any]) -> bool:
        """The group's spans in one ``log_spans`` call, once per batch; False where the store cannot log spans (a file
        store, a server older than 3.4, an MLflow without the call): then, as MLflow's exporter, the artifact."""
        if progress.get("logged"):
            return True
        if not self._has_log_spans or uri in self._no_span_logging:
            return False
        try:
            client.log_spans(location, [span for p in group for span in p.spans])
        except Exception as exc:  # noqa: BLE001
            if not _not_supported(exc):
                raise
            self._no_span_logging.add(uri)
            return False
        progress["logged"] = True
        return True

    def _makes_traces(self, client: Any, uri: str, group: list[_Prepared]) -> bool:
        """Whether the store at ``uri`` made whole traces of spans alone: the first trace of the group (one with usage
        if any) reads back with its tags, state, start time, previews and token usage as ``start_trace`` would have
        written them, and its spans kept in the store. Asked once per URI; where not, ``start_trace`` is called."""
        probe = next((p for p in group if META_TOKEN_USAGE in p.fields["trace_metadata"]), group[0])
        info = client.get_trace_info(probe.job.trace_id)
        if info is None:
            return False
        fields, tags = probe.fields, getattr(info, "tags", None) or {}
        stored_usage = (getattr(info, "trace_metadata", None) or {}).get(META_TOKEN_USAGE)
        sent_usage = fields["trace_metadata"].get(META_TOKEN_USAGE)
        state = getattr(getattr(info, "state", None), "value", None)
        made = (all(tags.get(k) == v for k, v in fields["tags"].items())
                and state == probe.state.value
                and getattr(info, "request_time", None) == fields["request_time"]
                and getattr(info, "request_preview", None) == fields["request_preview"]
                and getattr(info, "response_preview", None) == fields["response_preview"]
                and (stored_usage == sent_usage or _same_usage(stored_usage, sent_usage))
                and self._spans_in_store is not None and tags.get(self._spans_in_store[0]) == self._spans_in_store[1])
        _logger.debug("log_spans %s whole traces at this store", "makes" if made else "does not make")
        if made:
            self._spans_kept[uri] = True
        return made

    def _keeps_spans(self, client: Any, uri: str, trace_id: str) -> bool:
        """Whether the store at ``uri`` reads a trace's spans from where ``log_spans`` put them: the stored trace
        carries the tag ``mlflow.trace.spansLocation`` (an MLflow without it, e.g. 3.5, reads the artifact only).
        Asked once per URI, of the first trace logged there."""
        known = self._spans_kept.get(uri)
        if known is None:
            tag = self._spans_in_store
            info = client.get_trace_info(trace_id) if tag is not None else None
            tags = (getattr(info, "tags", None) or {}) if info is not None else {}
            known = self._spans_kept[uri] = tag is not None and tags.get(tag[0]) == tag[1]
        return known

    def _keeps_usage(self, client: Any, uri: str, group: list[_Prepared]) -> bool:
        """Whether ``log_spans`` at ``uri`` leaves the token usage ``start_trace`` stored as it was (MLflow 3.17: the
        values of start_trace stand) rather than adding the spans' usage onto it (MLflow 3.10: the total doubles).
        Decided by what the store does, once per URI, on the first trace of a batch that has usage (a batch with none
        needs nothing). Where the store adds, start_trace is called again after the spans: one more call per trace,
        never a wrong total."""
        known = self._usage_kept.get(uri)
        if known is not None:
            return known
        probe = next((p for p in group if META_TOKEN_USAGE in p.fields["trace_metadata"]), None)
        if probe is None:  # nothing in this batch to add up wrongly
            return True
        info = client.get_trace_info(probe.job.trace_id)
        stored = (getattr(info, "trace_metadata", None) or {}).get(META_TOKEN_USAGE) if info is not None else None
        known = self._usage_kept[uri] = stored is not None and _same_usage(stored, probe.fields["trace_metadata"][
            META_TOKEN_USAGE])
        _logger.debug("log_spans %s start_trace's token usage at this store", "keeps" if known else "adds onto")
        return known

    def _pool(self) -> Any:
        if self._threads is None:
            from concurrent.futures import ThreadPoolExecutor

            self._threads = ThreadPoolExecutor(max_workers=HTTP_PARALLEL, thread_name_prefix="ag2-otel-start-trace")
        return self._threads

    def _write_v2(self, client: Any, location: str, record: Any, trace_id: str, fields: dict,
                  progress: dict[str, Any]) -> str:
        """MLflow 3.1's calls for a trace (its MlflowV2SpanExporter): start (the store picks the id), span data as
        the artifact, end with status, metadata and tags. Returns the stored id."""
        if progress.get("stored"):  # a retry of its batch: this one is done
            return progress["stored"]
        metadata, tags = dict(fields["trace_metadata"]), dict(fields["tags"])
        # a v2 trace keeps its request/response previews in metadata, cut as MLflow cuts them there
        for key, preview in ((V2_INPUTS, fields.get("request_preview")), (V2_OUTPUTS, fields.get("response_preview"))):
            if preview:
                metadata[key] = preview if len(preview) <= V2_PREVIEW_CHARS else preview[:V2_PREVIEW_CHARS - 3] + "..."
        info = progress.get("info")
        if info is None:
            info = progress["info"] = client.start_trace(
                experiment_id=location, timestamp_ms=fields["request_time"], request_metadata=metadata, tags=tags)
        stored = info.request_id
        if not progress.get("uploaded"):
            spans = [self._span_from_dict(d) for d in self._span_dicts(record, trace_id, request_id=stored)]
            client._upload_trace_data(info, self._trace_data(spans=spans))
            progress["uploaded"] = True
        status = self._status.ERROR if fields["state"] == "ERROR" else self._status.OK
        client.end_trace(stored, timestamp_ms=fields["request_time"] + fields["execution_duration"], status=status,
                         request_metadata=metadata, tags=tags)
        progress["stored"] = stored
        return stored


def serve(conn: Connection) -> None:
    writer = StoreWriter()
    conn.send(("ready", {"write_path": writer.path, "missing": writer.missing}))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "warm":
            writer.warm(message[1])
            continue
        if message[0] != "traces":
            continue
        arrived = time.monotonic()
        _logger.debug("batch of %d trace(s)", len(message[1]))
        results = writer.write_batch(message[1], arrived)
        try:
            conn.send(("done", results))
        except (EOFError, OSError):
            pass  # the application is gone; keep writing what was received


def main(argv: list[str]) -> int:
    # Ctrl-C in a terminal reaches the whole process group; the application decides, we finish what we were given.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # MLflow's own HTTP retries (7, exponential) would hold one trace for minutes; we retry ourselves, bounded.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    if os.environ.get("AG2_OTEL_DEBUG_WRITER"):
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s store_writer %(name)s %(message)s")
        _logger.setLevel(logging.DEBUG)
    conn = Connection(int(argv[1]))
    try:
        serve(conn)
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
