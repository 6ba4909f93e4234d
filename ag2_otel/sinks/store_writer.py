"""The store writer process: receives finished traces from the application and writes each to MLflow in one batch.

Why a process: storing a span costs MLflow ~0.5-1.2 ms of CPU (JSON, SQLAlchemy, sqlite). On a thread of the
application that CPU competes with the agents for the GIL; here it does not. The application side
(:mod:`ag2_otel.sinks.writer_client`) starts this module with ``python -m ag2_otel.sinks.store_writer FD`` and talks
over a socket pair (``multiprocessing.connection.Connection`` frames, pickled tuples):

* ``("trace", seq, trace_id, destination, trace_otel_id, root_span_id, complete, dropped, spans, extra_metadata)``
  -> ``("done", seq, trace_id, error_type_or_None, stored_trace_id)`` once stored (or given up); ``stored_trace_id``
  is ``trace_id`` except on the ``v2`` path, where the store chose it;
* ``("warm", destination)`` -> build that store now (schema creation, first connection), not at the first trace;
* EOF -> finish what was received, then exit.

Each trace: the snapshot is rebuilt into ``ReadableSpan`` objects and mapped by the same pure mapping as everywhere
(:func:`build_trace_record`). How it is then stored is decided by what the installed MLflow HAS (feature detection at
start, never its version string; see :func:`write_path`):

* ``batched`` (``TracingClient.start_trace(trace_info)``, MLflow 3.2+ or so): the calls MLflow's own exporter makes
  for a trace, under our trace id ``tr-<otel trace id>``: ``TracingClient.log_spans(experiment_id, spans)`` (one
  batched insert, or one OTLP POST to a server; skipped where MLflow has no ``log_spans``, and for good on a store
  that answers ``NotImplementedError``: a file store, a server older than 3.4), then
  ``TracingClient.start_trace(trace_info)`` (metadata, tags, previews), then, as MLflow's exporter does, the span
  data as the trace's artifact unless the stored trace says its spans are in the tracking store (tag
  ``mlflow.trace.spansLocation``; an MLflow without that tag reads spans from the artifact only, e.g. 3.5).
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

Backend down (server unreachable, sqlite locked): the write is retried with capped exponential backoff until
``retry_timeout`` seconds passed since the trace arrived, then given up and reported. Traces behind it wait; the
application side bounds how many are queued and counts drops.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

_logger = logging.getLogger("ag2_otel.store_writer")

MAX_BACKOFF_S = 2.0
V2_INPUTS, V2_OUTPUTS = "mlflow.traceInputs", "mlflow.traceOutputs"  # MLflow 3.1 TraceMetadataKey.INPUTS / OUTPUTS
V2_PREVIEW_CHARS = 250  # MLflow 3.1 MAX_CHARS_IN_TRACE_INFO_METADATA


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
        from ag2_otel.mapping.mlflow_wire import span_dicts, trace_info_fields
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
        self._build, self._span_dicts, self._info_fields, self._rebuild = (
            build_trace_record, span_dicts, trace_info_fields, rebuild)
        self._clients: dict[str, Any] = {}
        self._no_span_logging: set[str] = set()  # URIs whose store answered log_spans with "not supported"
        self._reachable: set[str] = set()
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

    def write(self, trace_id: str, destination: tuple, otel_trace_id: int, root_span_id: int | None, complete: bool,
              dropped: int, spans: list, extra_metadata: dict[str, str], deadline: float) -> tuple[str | None, str]:
        """Store one trace. Returns (None on success else the error's type name, the id it is stored under)."""
        if self.path is None:
            return "UnsupportedMLflow", trace_id
        try:
            record = self._build(self._rebuild(otel_trace_id, spans), root_span_id=root_span_id, complete=complete,
                                 dropped_spans=dropped)
            if record is None:
                return None, trace_id
            fields = self._info_fields(record, trace_id, extra_metadata)
            if self.path == "batched":
                mlflow_spans = [self._span_from_dict(d) for d in self._span_dicts(record, trace_id)]
                state = self._state(fields.pop("state"))
        except Exception as exc:  # noqa: BLE001 - a mapping bug: report, never retry
            _logger.debug("mapping failed", exc_info=True)
            return type(exc).__name__, trace_id
        uri, experiment_id, experiment_name = destination
        progress: dict[str, Any] = {}  # v2: what is stored already, so a retry does not start a second trace
        backoff = 0.05
        while True:
            try:
                uri = self.resolve_uri(uri)
                client = self._client(uri)
                location = self._experiment_id(uri, experiment_id, experiment_name)
                if self.path == "batched":
                    self._write_batched(client, uri, location, mlflow_spans, fields, state)
                    return None, trace_id
                return None, self._write_v2(client, location, record, trace_id, fields, progress)
            except Exception as exc:  # noqa: BLE001
                _logger.debug("write of %s failed: %r", trace_id, exc)
                if _permanent(exc) or time.monotonic() + backoff > deadline:
                    _logger.debug("write failed", exc_info=True)
                    return type(exc).__name__, trace_id
                time.sleep(backoff)  # backoff between attempts at an unreachable backend, not synchronisation
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _write_batched(self, client: Any, uri: str, location: str, mlflow_spans: list, fields: dict,
                       state: Any) -> None:
        if self._has_log_spans and uri not in self._no_span_logging:
            try:
                client.log_spans(location, mlflow_spans)
            except Exception as exc:  # noqa: BLE001
                if not _not_supported(exc):
                    raise
                self._no_span_logging.add(uri)  # as MLflow's exporter: the span data goes as the artifact below
        info = client.start_trace(self._trace_info(
            trace_location=self._location.from_experiment_id(location), state=state, **fields))
        tag = self._spans_in_store
        spans_in_store = (tag is not None and self._has_log_spans and uri not in self._no_span_logging
                          and (getattr(info, "tags", None) or {}).get(tag[0]) == tag[1])
        if not spans_in_store:
            client._upload_trace_data(info, self._trace_data(spans=mlflow_spans))

    def _write_v2(self, client: Any, location: str, record: Any, trace_id: str, fields: dict,
                  progress: dict[str, Any]) -> str:
        """MLflow 3.1's calls for a trace (its MlflowV2SpanExporter): start (the store picks the id), span data as
        the artifact, end with status, metadata and tags. Returns the stored id."""
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
        if message[0] != "trace":
            continue
        _, seq, trace_id, destination, otel_trace_id, root_span_id, complete, dropped, spans, extra, retry_s = message
        _logger.debug("trace %s: %d spans", trace_id, len(spans))
        error, stored = writer.write(trace_id, destination, otel_trace_id, root_span_id, complete, dropped, spans,
                                     extra, time.monotonic() + retry_s)
        try:
            conn.send(("done", seq, trace_id, error, stored))
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
