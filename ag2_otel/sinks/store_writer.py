"""The store writer process: receives finished traces from the application and writes each to MLflow in one batch.

Why a process: storing a span costs MLflow ~0.5-1.2 ms of CPU (JSON, SQLAlchemy, sqlite). On a thread of the
application that CPU competes with the agents for the GIL; here it does not. The application side
(:mod:`ag2_otel.sinks.writer_client`) starts this module with ``python -m ag2_otel.sinks.store_writer FD`` and talks
over a socket pair (``multiprocessing.connection.Connection`` frames, pickled tuples):

* ``("trace", seq, trace_id, destination, trace_otel_id, root_span_id, complete, dropped, spans, extra_metadata)``
  -> ``("done", seq, trace_id, error_type_or_None)`` once stored (or given up);
* ``("warm", destination)`` -> build that store now (schema creation, first connection), not at the first trace;
* EOF -> finish what was received, then exit.

Each trace: the snapshot is rebuilt into ``ReadableSpan`` objects, mapped by the same pure mapping as everywhere
(:func:`build_trace_record`), and written with the two calls MLflow's own exporter makes for a trace:
``TracingClient.log_spans(experiment_id, spans)`` (one batched insert, or one OTLP POST to a server) and
``TracingClient.start_trace(trace_info)`` (metadata, tags, previews). ``Span.from_dict``, ``TraceInfo`` and
``TraceLocation`` are public entities; ``TracingClient`` is the client behind ``MlflowClient``'s trace methods (public
methods, no ``:meta private:``, though the class is not in MLflow's API reference).

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


def _permanent(exc: BaseException) -> bool:
    """A 4xx answer (bad request, not found): retrying cannot help."""
    status = getattr(exc, "get_http_status_code", None)
    try:
        code = int(status()) if callable(status) else None
    except Exception:  # noqa: BLE001
        code = None
    return code is not None and 400 <= code < 500 and code != 429


class StoreWriter:
    def __init__(self) -> None:
        from mlflow.entities import Span, TraceInfo, TraceLocation, TraceState
        from mlflow.tracing.client import TracingClient

        from ag2_otel.mapping.mlflow_trace import build_trace_record
        from ag2_otel.mapping.mlflow_wire import span_dicts, trace_info_fields
        from ag2_otel.sinks.span_snapshot import rebuild

        self._span_from_dict = Span.from_dict
        self._trace_info, self._location, self._state = TraceInfo, TraceLocation, TraceState
        self._client_class = TracingClient
        self._build, self._span_dicts, self._info_fields, self._rebuild = (
            build_trace_record, span_dicts, trace_info_fields, rebuild)
        self._clients: dict[str, Any] = {}
        self._reachable: set[str] = set()
        self._experiments: dict[tuple, str] = {}

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
            from mlflow import MlflowClient

            client = MlflowClient(uri)
            experiment = client.get_experiment_by_name(experiment_name)
            found = experiment.experiment_id if experiment else client.create_experiment(experiment_name)
            self._experiments[key] = found
        return found

    def warm(self, destination: tuple) -> None:
        """Build the store (sqlite: create/migrate the schema; http: first connection) before the first trace."""
        try:
            uri, experiment_id, experiment_name = destination
            self._client(uri)
            location = self._experiment_id(uri, experiment_id, experiment_name)
            from mlflow import MlflowClient

            MlflowClient(uri).get_experiment(location)
        except Exception:  # noqa: BLE001 - the first write will retry and report
            _logger.debug("warm-up failed", exc_info=True)

    def write(self, trace_id: str, destination: tuple, otel_trace_id: int, root_span_id: int | None, complete: bool,
              dropped: int, spans: list, extra_metadata: dict[str, str], deadline: float) -> str | None:
        """Store one trace. Returns None on success, else the error's type name."""
        try:
            record = self._build(self._rebuild(otel_trace_id, spans), root_span_id=root_span_id, complete=complete,
                                 dropped_spans=dropped)
            if record is None:
                return None
            mlflow_spans = [self._span_from_dict(d) for d in self._span_dicts(record, trace_id)]
            fields = self._info_fields(record, trace_id, extra_metadata)
            state = self._state(fields.pop("state"))
        except Exception as exc:  # noqa: BLE001 - a mapping bug: report, never retry
            _logger.debug("mapping failed", exc_info=True)
            return type(exc).__name__
        uri, experiment_id, experiment_name = destination
        backoff = 0.05
        while True:
            try:
                client = self._client(uri)
                location = self._experiment_id(uri, experiment_id, experiment_name)
                client.log_spans(location, mlflow_spans)
                client.start_trace(self._trace_info(
                    trace_location=self._location.from_experiment_id(location), state=state, **fields))
                return None
            except Exception as exc:  # noqa: BLE001
                _logger.debug("write of %s failed: %r", trace_id, exc)
                if _permanent(exc) or time.monotonic() + backoff > deadline:
                    _logger.debug("write failed", exc_info=True)
                    return type(exc).__name__
                time.sleep(backoff)  # backoff between attempts at an unreachable backend, not synchronisation
                backoff = min(backoff * 2, MAX_BACKOFF_S)


def serve(conn: Connection) -> None:
    writer = StoreWriter()
    conn.send(("ready",))
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
        error = writer.write(trace_id, destination, otel_trace_id, root_span_id, complete, dropped, spans, extra,
                             time.monotonic() + retry_s)
        try:
            conn.send(("done", seq, trace_id, error))
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
