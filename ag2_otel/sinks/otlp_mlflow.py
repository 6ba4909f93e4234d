"""``MlflowKeysExporter``: wraps the OTLP span exporter so that an MLflow server reached through any collector stores
the same trace the direct MLflow sink writes (``AG2_OTEL_OTLP_MLFLOW``).

It runs on the batch span processor's worker thread, never on the agents' threads. Each batch it receives:

* spans of a conversation still running are held, per OTel trace id, until the conversation's local root (a span with
  no parent, or a remote one) arrives; children end before their parent, so by then every span of the conversation
  is here. The whole trace is mapped by the same pure mapping as the direct sink
  (:func:`~ag2_otel.mapping.mlflow_trace.build_trace_record`), and each span goes on as a copy of itself with MLflow's
  keys added (:func:`~ag2_otel.mapping.mlflow_otlp.otlp_attributes`); the root also gets the trace-level keys. The
  GenAI attributes are untouched: other processors and other backends see valid GenAI spans, plus ``mlflow.*`` ones;
* a span whose root was already sent (a late child) goes on at once with its span-level keys.

Bounded: at most ``max_spans`` spans are held in all; over that, the oldest conversation's spans go on at once with
their span-level keys, and only a skeleton of each (ids, names, counts, short strings: what the usage breakdown
needs) stays for its root. At most ``max_traces`` conversations are held; over that, the oldest is sent and
forgotten, and its root later goes without the usage breakdown (which would be partial). :meth:`shutdown` sends what
is held (``force_flush`` does not: a running conversation's spans wait for its root). A failure in the mapping sends
those spans as they came (logged once): nothing is lost to us.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ag2_otel.mapping.mlflow_otlp import otlp_attributes
from ag2_otel.mapping.mlflow_trace import build_trace_record
from ag2_otel.sinks.warn_once import WarnOnce

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


_SKELETON_TEXT = 256  # a held span's strings longer than this (content) are not kept once it is sent


def _skeleton(span: ReadableSpan) -> ReadableSpan:
    """What the trace-level mapping still needs of a span already sent: ids, times, names, counts, short strings."""
    attrs = {k: v for k, v in (span.attributes or {}).items() if not isinstance(v, str) or len(v) <= _SKELETON_TEXT}
    return ReadableSpan(name=span.name, context=span.context, parent=span.parent, resource=_EMPTY, attributes=attrs,
                        start_time=span.start_time, end_time=span.end_time)


_EMPTY = Resource.get_empty()  # without one, every ReadableSpan runs Resource.create() (detectors)


def enrich(spans: list[ReadableSpan], root: ReadableSpan | None, skeletons: Sequence[ReadableSpan] = (), *,
           usage: bool = True) -> list[ReadableSpan]:
    """Copies of ``spans`` (and ``root``, last) with MLflow's keys, mapped together with ``skeletons`` (spans of the
    same trace sent earlier); trace-level keys only with a root (without the usage breakdown if not ``usage``)."""
    everything = [*spans, root] if root is not None else list(spans)
    record = build_trace_record([*skeletons, *everything],
                                root_span_id=root.context.span_id if root is not None else None)
    if record is None:
        return everything
    originals = {_hex(s.context.span_id): dict(s.attributes or {}) for s in everything}
    extra = otlp_attributes(record, originals, with_trace=root is not None, usage=usage)
    return [_with(s, extra.get(_hex(s.context.span_id), {})) for s in everything]


class _Held:
    __slots__ = ("spans", "skeletons")

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []  # not sent yet
        self.skeletons: list[ReadableSpan] = []  # sent already (over the cap), kept for the trace-level mapping


class MlflowKeysExporter(SpanExporter):
    """An OTLP exporter whose spans carry MLflow's keys (see the module docstring)."""

    def __init__(self, inner: SpanExporter, *, max_traces: int = 1000, max_spans: int = 10_000) -> None:
        self.inner = inner
        self._max_traces = max(1, int(max_traces))
        self._max_spans = max(1, int(max_spans))
        self._held: OrderedDict[int, _Held] = OrderedDict()  # OTel trace id -> spans awaiting the root
        self._held_spans = 0
        self._sent: OrderedDict[int, None] = OrderedDict()  # trace ids whose root went out
        self._forgotten: OrderedDict[int, None] = OrderedDict()  # trace ids dropped over max_traces: no breakdown
        self._lock = threading.Lock()
        self._warn_once = WarnOnce(_logger)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            out = self._take(spans)
        if not out:
            return SpanExportResult.SUCCESS
        return self.inner.export(out)

    def _enrich(self, spans: list[ReadableSpan], root: ReadableSpan | None, skeletons: Sequence[ReadableSpan] = (),
                usage: bool = True) -> list[ReadableSpan]:
        try:
            return enrich(spans, root, skeletons, usage=usage)
        except Exception:  # noqa: BLE001 - the spans still go, as they came
            self._warn()
            return [*spans, root] if root is not None else list(spans)

    def _take(self, spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
        """Under the lock: what goes out now."""
        out: list[ReadableSpan] = []
        roots = []
        for span in spans:
            trace_id = span.context.trace_id
            if _is_local_root(span):
                roots.append(span)
            elif trace_id in self._sent:
                out.extend(self._enrich([span], None))  # a late child
            else:
                held = self._held.get(trace_id)
                if held is None:
                    held = self._held[trace_id] = _Held()
                    if len(self._held) > self._max_traces:
                        old_id, old = self._held.popitem(last=False)
                        out.extend(self._send_early(old))
                        self._remember(self._forgotten, old_id)
                held.spans.append(span)
                self._held_spans += 1
                while self._held_spans > self._max_spans:
                    oldest = next(h for h in self._held.values() if h.spans)
                    out.extend(self._send_early(oldest))
        for root in roots:
            trace_id = root.context.trace_id
            held = self._held.pop(trace_id, None) or _Held()
            self._held_spans -= len(held.spans)
            out.extend(self._enrich(held.spans, root, held.skeletons, usage=trace_id not in self._forgotten))
            self._remember(self._sent, trace_id)
        return out

    def _send_early(self, held: _Held) -> list[ReadableSpan]:
        """Under the lock: a held conversation's spans go now, with their span-level keys; skeletons stay."""
        out = self._enrich(held.spans, None, held.skeletons)
        self._held_spans -= len(held.spans)
        held.skeletons.extend(_skeleton(s) for s in held.spans)
        held.spans = []
        return out

    @staticmethod
    def _remember(recent: OrderedDict, trace_id: int) -> None:
        recent[trace_id] = None
        recent.move_to_end(trace_id)
        while len(recent) > _RECENT:
            recent.popitem(last=False)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Conversations still running go out, without the trace-level keys (their root never came)."""
        with self._lock:
            out = [span for held in self._held.values() for span in self._send_early(held)]
            self._held.clear()
        if out:
            self.inner.export(out)
        self.inner.shutdown()

    def _warn(self) -> None:
        self._warn_once("enrich", "adding MLflow's keys to OTLP spans failed; those spans are sent without them "
                        "(further failures are not logged)")
        _logger.debug("ag2_otel: MlflowKeysExporter failed", exc_info=True)
