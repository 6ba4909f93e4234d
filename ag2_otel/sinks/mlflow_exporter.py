"""``MlflowSpanExporter``: the MLflow sink as an OTel ``SpanExporter``, for zero-code setups.

Registered in the ``opentelemetry_traces_exporter`` entry-point group as ``mlflow``, so::

    OTEL_TRACES_EXPORTER=otlp,mlflow opentelemetry-instrument python app.py

sends every trace over OTLP *and* to MLflow (``MLFLOW_TRACKING_URI``, default ``sqlite:///mlflow.db``). The SDK
builds it with no arguments and wraps it in a ``BatchSpanProcessor``, so it only ever sees FINISHED spans, in batches,
in end order, and one conversation may be split across batches. It has no ``on_start`` to learn which root a span
belongs to, so it feeds finished spans to the processor's one assembly (:meth:`MlflowSpanProcessor.add_finished`):

- spans are buffered per OTel trace id (at most ``max_traces`` trace ids, ``max_spans_per_trace`` spans each; drops
  are counted in :attr:`stats` and tagged on the trace, one warning per cap);
- a trace is complete when its LOCAL ROOT arrives (a span with no parent, or a remote one): children end before their
  parents, so every span of that root's subtree has been exported by then (in an earlier batch or the same one, which
  is buffered whole before any root in it is written). The spans whose parent chain reaches the root are written with
  it as one MLflow trace; spans ending after their root was written are counted as ``late_spans`` and dropped;
- :meth:`shutdown` (the SDK calls it at exit, after the batch processor's last export) writes what is still waiting
  for a root as incomplete traces (tag ``ag2_otel.incomplete``) and waits (bounded) for MLflow's store writes.

Writes are handed to the store writer process like the span processor's (see ``writer_client.py``), from the batch
processor's worker thread, so ``mlflow.get_last_active_trace_id()`` in the application does not see them and a
trace is not nested under the application's active MLflow span; use ``ag2_otel.autolog()`` (the span processor) for
that. ``force_flush``/``shutdown`` wait for the writer.

Interpreter exit: the SDK shuts its provider down from an ``atexit`` handler, too late for MLflow's write path (see
exit_hook.py), and a batch still queued at exit would only reach us then. So the constructor registers an early exit
hook that force-flushes the global TracerProvider while the interpreter is still whole; the later provider shutdown
then finds nothing queued. Bounded by the exporters' own timeouts (OTEL_EXPORTER_OTLP_TIMEOUT for OTLP).

``MLFLOW_ENABLE_OTLP_EXPORTER``: MLflow sends its OWN spans over OTLP instead of to the tracking store as soon as
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set. The writer process stores our traces
directly, but the in-process replay (Databricks, ``AG2_OTEL_MLFLOW_WRITER=inline``) goes through MLflow's tracer:
beside an OTLP exporter those traces would silently go to the collector instead of the store (and twice there). So, as ``autolog()`` does, the constructor sets ``MLFLOW_ENABLE_OTLP_EXPORTER=false`` when an OTLP endpoint
variable is set and neither it nor ``MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT`` is (an explicit choice is respected).
MLflow reads it once, when its tracer provider is first set up (its first span), which under
``opentelemetry-instrument`` is after this constructor.
"""

from __future__ import annotations

import logging
import weakref
from typing import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .exit_hook import register_exit_flush


_logger = logging.getLogger(__name__)


def _flush_before_interpreter_exit(ref: weakref.ref) -> None:
    exporter = ref()
    if exporter is None or exporter._shutdown:
        return
    try:
        force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)
        if force_flush is not None:
            force_flush()  # batch processors export what they hold, to us (and to OTLP) now
        exporter.force_flush(int(exporter._processor._write_timeout * 1000))
    except Exception:  # noqa: BLE001 - exit must go on
        _logger.debug("ag2_otel: flush before interpreter exit failed", exc_info=True)


class MlflowSpanExporter(SpanExporter):
    """Writes each finished local trace to MLflow. Never raises into the SDK: errors are counted and logged once."""

    def __init__(
        self,
        *,
        max_traces: int = 1000,
        max_spans_per_trace: int = 10_000,
        wait_for_write: bool = False,
        write_timeout: float | None = None,
    ) -> None:
        from ag2_otel import config
        from ag2_otel.autolog import _keep_mlflow_writing_to_its_store
        from ag2_otel.sinks.mlflow_processor import MlflowSpanProcessor

        _keep_mlflow_writing_to_its_store()  # before MLflow sets up its tracer provider (see module docstring)
        if write_timeout is None:
            write_timeout = config.exit_flush_timeout()  # its one variable: no other OTEL_* value can fail it
        self._processor = MlflowSpanProcessor(
            max_traces=max_traces, max_spans_per_trace=max_spans_per_trace, wait_for_write=wait_for_write,
            write_timeout=write_timeout, nest_under_mlflow_span=False,
        )
        self._shutdown = False
        register_exit_flush(_flush_before_interpreter_exit, weakref.ref(self))

    @property
    def stats(self) -> dict[str, int]:
        """The same counters as ``MlflowSpanProcessor.stats``."""
        return self._processor.stats

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        self._processor.add_finished(spans)  # never raises
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until every trace written so far is in the MLflow store (traces still waiting for a root stay)."""
        return self._processor.force_flush(timeout_millis)

    def shutdown(self) -> None:
        if self._shutdown:
            return
        self._shutdown = True
        self._processor.shutdown()

    def __repr__(self) -> str:  # shown by the SDK's own log lines
        return f"{type(self).__name__}()"
