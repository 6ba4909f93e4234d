"""Finished OTel spans <-> plain tuples that pickle cheaply, to hand a trace to the store writer process.

``ReadableSpan`` itself does not pickle (its attributes hold a lock) and carries a Resource per span that the MLflow
mapping never reads. A snapshot keeps what :func:`ag2_otel.mapping.mlflow_trace.build_trace_record` reads; the writer
process rebuilds real ``ReadableSpan`` objects with the SDK's public constructor and runs the same mapping.
"""

from __future__ import annotations

from typing import Iterable

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, Status, StatusCode

SpanTuple = tuple  # (name, span_id, parent_id, parent_is_remote, start, end, status, description, attrs, events, scope)


def snapshot(spans: Iterable[ReadableSpan]) -> list[SpanTuple]:
    out = []
    for span in spans:
        parent = span.parent
        status = span.status
        scope = span.instrumentation_scope
        out.append((
            span.name,
            span.context.span_id,
            parent.span_id if parent is not None else None,
            bool(parent.is_remote) if parent is not None else False,
            span.start_time,
            span.end_time,
            status.status_code.value if status is not None else 0,
            status.description if status is not None else None,
            dict(span.attributes or {}),
            [(e.name, e.timestamp, dict(e.attributes or {})) for e in span.events or ()],
            scope.name if scope is not None else "",
        ))
    return out


def rebuild(trace_id: int, spans: list[SpanTuple]) -> list[ReadableSpan]:
    # An explicit empty Resource: without one, every ReadableSpan runs Resource.create() (detectors, ~ms each).
    empty = Resource.get_empty()
    out = []
    for name, span_id, parent_id, remote, start, end, status, description, attrs, events, scope in spans:
        out.append(ReadableSpan(
            name=name,
            context=SpanContext(trace_id, span_id, is_remote=False),
            parent=SpanContext(trace_id, parent_id, is_remote=remote) if parent_id is not None else None,
            attributes=attrs,
            events=[Event(ename, eattrs, timestamp=ts) for ename, ts, eattrs in events],
            status=Status(StatusCode(status), description if status == StatusCode.ERROR.value else None),
            start_time=start,
            end_time=end,
            instrumentation_scope=InstrumentationScope(scope),
            resource=empty,
        ))
    return out

