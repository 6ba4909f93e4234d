"""A :class:`TraceRecord` -> the OTel span attributes that make MLflow's OTLP ingest (``POST /v1/traces``) store the
same trace the direct MLflow sink stores. Pure: no MLflow import, no I/O.

Read in MLflow 3.17's server (``server/otel_api.py``, ``Span.from_otel_proto``, ``SqlAlchemyStore.log_spans``,
``tracing/otel/translation``):

* every attribute value is decoded from the OTLP ``AnyValue`` and JSON-encoded once; ``sanitize_attributes`` then
  strips one layer again when the value was itself JSON text of a string, object or array. So an object (span
  inputs, token usage) is sent as its JSON text, a string that would parse as JSON text of a string, object or
  array is sent JSON-quoted, any other string as it is, numbers and booleans natively (:func:`otlp_value`): each is
  then stored exactly as the direct sink stores it. ``None`` (a roll-up's explicit null token usage) cannot be an OTel
  value: it is sent as the string ``"null"``, which keeps MLflow from translating the roll-up's ``gen_ai.usage.*``
  and counts as no usage.
* ``mlflow.spanType``, ``mlflow.spanInputs``/``Outputs``, ``mlflow.chat.tokenUsage``, ``mlflow.llm.model``/``provider``,
  ``mlflow.chat.tools`` are honoured as sent (its GenAI translator only fills keys that are absent, and a span type
  only where none or UNKNOWN is set).
* Trace level, from the span without a parent: ``mlflow.traceTag.<key>`` attributes become trace tags (the trace name
  too, as ``mlflow.traceTag.mlflow.traceName``); the session comes from ``gen_ai.conversation.id`` (already on our
  spans); previews are computed by the server from the root's ``mlflow.spanInputs``/``Outputs`` and read text only
  out of ``{"messages": [{"role", "content"}]}``-shaped objects, the shape the mapping gives the root
  (``chat_messages``). Trace metadata cannot be set over OTLP: our usage breakdown goes in tags of the same keys
  (``ag2_otel.get_token_usage`` reads either), as the direct sink's ``log_spans`` write does.
"""

from __future__ import annotations

import json
from typing import Any

from ag2_otel.mapping.mlflow_trace import SpanRecord, TraceRecord
from ag2_otel.mapping.mlflow_wire import SPAN_INPUTS, SPAN_OUTPUTS, SPAN_TYPE, TRACE_TAG_PREFIX, trace_tags

TAG_VIA_OTLP = "ag2_otel.via_otlp"  # "true": this trace (also) arrived over OTLP with our keys
OtelValue = str | int | float | bool


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, default=str)
    except (ValueError, TypeError):  # NaN/inf or a cycle: what MLflow's own dump falls back to, a repr string
        return json.dumps(repr(value), ensure_ascii=False)


def otlp_value(value: Any) -> OtelValue:
    """``value`` as an OTel attribute that MLflow's ingest stores as the JSON the direct sink stores."""
    if isinstance(value, (bool, int)) or (isinstance(value, float) and value == value and abs(value) != float("inf")):
        return value
    if value is None:
        return "null"
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        return _dumps(value) if isinstance(parsed, (str, dict, list)) else value
    return _dumps(value)


def span_keys(record: SpanRecord, original: dict[str, Any]) -> dict[str, OtelValue]:
    """MLflow's keys for one mapped span: type, inputs, outputs and every key the mapping added to the attributes."""
    out: dict[str, OtelValue] = {SPAN_TYPE: otlp_value(record.span_type)}
    if record.inputs is not None:
        out[SPAN_INPUTS] = otlp_value(record.inputs)
    if record.outputs is not None:
        out[SPAN_OUTPUTS] = otlp_value(record.outputs)
    for key, value in record.attributes.items():
        if key not in original:
            out[key] = otlp_value(value)
    return out


def trace_keys(record: TraceRecord, *, usage: bool = True) -> dict[str, OtelValue]:
    """The trace-level keys, for the root span: the trace's tags (:func:`trace_tags`, what the direct sink puts there
    too) plus ``ag2_otel.via_otlp``; without ``usage``, not the usage breakdown. The previews need nothing here: the
    root's inputs / outputs are already in the shape MLflow derives them from."""
    tags = {k: v for k, v in trace_tags(record).items() if usage or k not in record.metadata}
    tags[TAG_VIA_OTLP] = "true"
    return {TRACE_TAG_PREFIX + key: value for key, value in tags.items()}


def otlp_attributes(record: TraceRecord, originals: dict[str, dict[str, Any]], *, with_trace: bool,
                    usage: bool = True) -> dict[str, dict[str, OtelValue]]:
    """Per span id (16 hex characters), the attributes to add, for the spans in ``originals`` (each one's own
    attributes, by span id; other spans of the record only inform the mapping). ``with_trace``: the record's root is
    the trace's local root (put the trace-level keys on it, the usage breakdown only if ``usage``)."""
    out = {}
    for rec in record.spans:
        if rec.synthetic or rec.span_id not in originals:
            continue
        out[rec.span_id] = span_keys(rec, originals[rec.span_id])
    if with_trace and record.root.span_id in out:
        out[record.root.span_id].update(trace_keys(record, usage=usage))
    return out
