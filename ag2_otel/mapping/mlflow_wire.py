"""A :class:`TraceRecord` -> MLflow's stored shapes: span dicts (``mlflow.entities.Span.from_dict``) and TraceInfo fields.

Pure: no MLflow import, no I/O. Used by the store writer process (``ag2_otel.sinks.store_writer``), which writes
whole traces in one batched ``log_spans`` call, the trace-level data riding on each root span (:func:`trace_tags`);
where a store cannot make the trace from that, also their TraceInfo (``start_trace``, :func:`trace_info_fields`), the
calls MLflow's own exporter makes (on MLflow 3.1: start_trace, the spans as the trace's artifact, end_trace).

Shapes are MLflow 3.17's ``Span.to_dict`` output: ids base64 of the big-endian bytes, every attribute value a JSON
string (``mlflow.spanInputs`` and friends included), event attributes raw, status as the OTLP enum name. The MLflow
trace id is ``tr-`` + 32 hex characters; the span dicts carry the same 128-bit value as their trace id, so a server
that recomputes the id from the OTLP trace id (``/v1/traces``) lands on the same trace.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from ag2_otel.mapping.mlflow_trace import MAX_METADATA_CHARS, MLFLOW_TRACE_SESSION, TraceRecord

TRACE_ID_PREFIX = "tr-"
TRACE_SCHEMA_VERSION = "3"
# MLflow's keys (plain strings, values from mlflow 3.17: SpanAttributeKey, TraceMetadataKey, TraceTagKey)
REQUEST_ID = "mlflow.traceRequestId"
SPAN_TYPE = "mlflow.spanType"
SPAN_INPUTS = "mlflow.spanInputs"
SPAN_OUTPUTS = "mlflow.spanOutputs"
META_SCHEMA_VERSION = "mlflow.trace_schema.version"
META_TOKEN_USAGE = "mlflow.trace.tokenUsage"
META_USER = "mlflow.user"
META_SOURCE_NAME = "mlflow.source.name"
META_SOURCE_TYPE = "mlflow.source.type"
TAG_TRACE_NAME = "mlflow.traceName"
TRACE_TAG_PREFIX = "mlflow.traceTag."  # SpanAttributeKey.TRACE_TAG_PREFIX: on the root, read by log_spans as a trace tag
_STATUS = {"ERROR": "STATUS_CODE_ERROR", "OK": "STATUS_CODE_OK", "UNSET": "STATUS_CODE_OK"}


def mlflow_trace_id(trace_id_128: int) -> str:
    return TRACE_ID_PREFIX + format(trace_id_128 & (2**128 - 1), "032x")


def _b64(value: int, size: int) -> str:
    return base64.b64encode(value.to_bytes(size, "big")).decode("ascii")


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: MLflow's store parses these strings back, so they become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


_plain_dumps = json.JSONEncoder().encode  # one encoder, built once: most values are str/int/bool


def _dumps(value: Any) -> str:
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return _plain_dumps(value)
    if kind is float and math.isfinite(value):
        return _plain_dumps(value)
    try:
        return json.dumps(value, default=str, allow_nan=False)
    except (ValueError, TypeError):  # NaN/inf somewhere inside, or a cycle
        try:
            return json.dumps(_json_safe(value), default=str, allow_nan=False)
        except (ValueError, TypeError):
            return json.dumps(str(value))


def trace_tags(record: TraceRecord, extra_metadata: dict[str, str] | None = None) -> dict[str, str]:
    """Everything trace-level that is not derived from the spans, as trace tags: the name, our tags, the usage
    breakdown (``ag2_otel.get_token_usage`` reads tags or metadata) and ``extra_metadata`` (the producing program).

    On the root span as ``mlflow.traceTag.<key>`` they are what lets ``log_spans`` alone make the whole trace: MLflow's
    store (3.17) makes trace tags of them and derives state, times, previews, token usage and session from the spans;
    trace metadata it cannot be given that way, hence tags."""
    tags = {TAG_TRACE_NAME: record.name, **(extra_metadata or {}),
            **{k: v for k, v in record.metadata.items() if k != MLFLOW_TRACE_SESSION}, **record.tags}
    return {k: str(v)[:MAX_METADATA_CHARS] for k, v in tags.items()}


def span_dicts(record: TraceRecord, trace_id: str, request_id: str | None = None,
               tags: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The record's spans (parent-first, root first) as ``Span.from_dict`` input under MLflow trace id ``trace_id``.

    ``request_id``: the id the spans name as their trace (``mlflow.traceRequestId``) when the store chose one (MLflow
    3.1's v2 traces); the OTel trace id in them stays ``trace_id``'s. ``tags`` (:func:`trace_tags`) go on the root."""
    trace_b64 = _b64(int(trace_id[len(TRACE_ID_PREFIX):], 16), 16)
    request_id = json.dumps(request_id or trace_id)
    out = []
    for rec in record.spans:
        attributes = {key: _dumps(value) for key, value in rec.attributes.items()}
        attributes[REQUEST_ID] = request_id
        attributes[SPAN_TYPE] = json.dumps(rec.span_type)
        if rec.inputs is not None:
            attributes[SPAN_INPUTS] = _dumps(rec.inputs)
        if rec.outputs is not None:
            attributes[SPAN_OUTPUTS] = _dumps(rec.outputs)
        out.append({
            "trace_id": trace_b64,
            "span_id": _b64(int(rec.span_id, 16), 8),
            "parent_span_id": _b64(int(rec.parent_id, 16), 8) if rec.parent_id is not None else None,
            "name": rec.name,
            "start_time_unix_nano": rec.start_time_ns,
            "end_time_unix_nano": rec.end_time_ns,
            "events": [
                {"name": e.name, "time_unix_nano": e.timestamp_ns, "attributes": {k: _json_safe(v) for k, v in e.attributes.items()}}
                for e in rec.events
            ],
            "status": {"code": _STATUS.get(rec.status, "STATUS_CODE_OK"),
                       "message": rec.status_message if rec.status == "ERROR" else ""},
            "attributes": attributes,
        })
    if tags and out:
        out[0]["attributes"].update((TRACE_TAG_PREFIX + k, json.dumps(v)) for k, v in tags.items())
    return out


def trace_info_fields(record: TraceRecord, trace_id: str, extra_metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``mlflow.entities.TraceInfo`` (minus the location, which needs MLflow)."""
    root = record.root
    metadata = {META_SCHEMA_VERSION: TRACE_SCHEMA_VERSION, **(extra_metadata or {}), **record.metadata}
    if record.usage.calls:
        metadata[META_TOKEN_USAGE] = json.dumps(record.usage.to_mlflow())
    tags = {TAG_TRACE_NAME: record.name[:MAX_METADATA_CHARS], **record.tags}
    return {
        "trace_id": trace_id,
        "request_time": root.start_time_ns // 1_000_000,
        "execution_duration": max(0, root.end_time_ns - root.start_time_ns) // 1_000_000,
        "state": "ERROR" if root.status == "ERROR" else "OK",
        "request_preview": record.request_preview,
        "response_preview": record.response_preview,
        "trace_metadata": {k: str(v)[:MAX_METADATA_CHARS] for k, v in metadata.items()},
        "tags": {k: str(v)[:MAX_METADATA_CHARS] for k, v in tags.items()},
    }
