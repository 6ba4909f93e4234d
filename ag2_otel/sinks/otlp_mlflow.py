"""``MlflowKeysExporter``: wraps the OTLP span exporter so that an MLflow server reached through any collector stores
the same trace the direct MLflow sink writes (``AG2_OTEL_OTLP_MLFLOW``).

It runs on the batch span processor's worker thread, never on the agents' threads. Each batch it receives:

* spans of a conversation still running are held, per OTel trace id, until the conversation's local root (a span with
  no parent, or a remote one) arrives; children end before their parent, so by then every span of the conversation
  is here. The whole trace is mapped by the same pure mapping as the direct sink
  (:func:`~ag2_otel.mapping.mlflow_trace.build_trace_record`), and each span goes on as a copy of itself with MLflow's
  keys added (:func:`~ag2_otel.mapping.mlflow_otlp.otlp_attributes`); the root also gets the trace-level keys. The
  GenAI attributes are untouched: other processors and other backends see valid GenAI spans, plus ``mlflow.*`` ones;
* a span whose root was already sent (a late child), and the spans of a trace over the caps, go on at once with
  their own span-level keys only.

Bounded: at most ``max_traces`` conversations (oldest released first) and ``max_spans_per_trace`` spans each are held;
:meth:`shutdown` releases what is held (``force_flush`` does not: a running conversation's spans wait for its root). A failure in the mapping sends the batch as it came
(logged once): the export itself is never lost to us.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ag2_otel.mapping.mlflow_otlp import otlp_attributes
from ag2_otel.mapping.mlflow_trace import build_trace_record

_logger = logging.getLogger(__name__)
_RECENT = 1024  # trace ids whose root was sent, remembered to pass their late spans through


def _hex(span_id: int) -> str:
    return format(span_id, "016x")


def _is_local_root(span: ReadableSpan) -> bool:
    return span.parent is None or span.parent.is_remote


def _with(span: ReadableSpan, extra: dict) -> ReadableSpan:
    if not extra:
        return span
    return ReadableSpan(
        name=span.name, context=span.context, parent=span.parent, resource=span.resource,
        attributes={**(span.attributes or {}), **extra}, events=span.events, links=span.links, kind=span.kind,
        status=span.status, start_time=span.start_time, end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def enrich(spans: list[ReadableSpan], root: ReadableSpan | None) -> list[ReadableSpan]:
    """Copies of ``spans`` (and ``root``, last) with MLflow's keys; trace-level keys only with a root."""
    everything = [*spans, root] if root is not None else list(spans)
    record = build_trace_record(everything, root_span_id=root.context.span_id if root is not None else None)
    if record is None:
        return everything
    originals = {_hex(s.context.span_id): dict(s.attributes or {}) for s in everything}
    extra = otlp_attributes(record, originals, with_trace=root is not None)
    return [_with(s, extra.get(_hex(s.context.span_id), {})) for s in everything]


class MlflowKeysExporter(SpanExporter):
    """An OTLP exporter whose spans carry MLflow's keys (see the module docstring)."""

    def __init__(self, inner: SpanExporter, *, max_traces: int = 1000, max_spans_per_trace: int = 10_000) -> None:
        self.inner = inner
        self._max_traces = max(1, int(max_traces))
        self._max_spans = max(1, int(max_spans_per_trace))
        self._held: OrderedDict[int, list[ReadableSpan]] = OrderedDict()  # OTel trace id -> spans awaiting the root
        self._sent: OrderedDict[int, None] = OrderedDict()  # trace ids whose root went out
        self._lock = threading.Lock()
        self._warned = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            out = self._take(spans)
        except Exception:  # noqa: BLE001 - the spans still go, as they came
            self._warn("mapping a batch")
            out = list(spans)
        if not out:
            return SpanExportResult.SUCCESS
        return self.inner.export(out)

    def _take(self, spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
        out: list[ReadableSpan] = []
        roots = []
        with self._lock:
            for span in spans:
                trace_id = span.context.trace_id
                if _is_local_root(span):
                    roots.append(span)
                elif trace_id in self._sent:
                    out.extend(enrich([span], None))
                else:
                    held = self._held.setdefault(trace_id, [])
                    held.append(span)
                    if len(held) >= self._max_spans:
                        out.extend(enrich(self._held.pop(trace_id), None))
                    elif len(self._held) > self._max_traces:
                        out.extend(enrich(self._held.popitem(last=False)[1], None))
            for root in roots:
                trace_id = root.context.trace_id
                out.extend(enrich(self._held.pop(trace_id, []), root))
                self._sent[trace_id] = None
                self._sent.move_to_end(trace_id)
                while len(self._sent) > _RECENT:
                    self._sent.popitem(last=False)
        return out

    def _release(self) -> None:
        with self._lock:
            held, self._held = list(self._held.values()), OrderedDict()
        for spans in held:
            try:
                out = enrich(spans, None)
            except Exception:  # noqa: BLE001
                self._warn("mapping held spans")
                out = spans
            self.inner.export(out)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self._release()  # conversations still running at exit: their spans, without the trace-level keys
        self.inner.shutdown()

    def _warn(self, what: str) -> None:
        if not self._warned:
            self._warned = True
            _logger.warning("ag2_otel: MLflow keys for OTLP export failed while %s; spans sent without them "
                            "(further failures are not logged)", what)
        _logger.debug("ag2_otel: MlflowKeysExporter failed", exc_info=True)
