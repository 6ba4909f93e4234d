"""``get_token_usage(trace_id)``: our per-agent / per-model token breakdown of an MLflow trace, read back through
MLflow's public API (``MlflowClient().get_trace``; with only mlflow-tracing, which has no ``MlflowClient``, the
``TracingClient`` behind it). Trace metadata (the MLflow sink) first, else trace tags of the same keys (a trace that
came over OTLP, ``AG2_OTEL_OTLP_MLFLOW``)."""

from __future__ import annotations

import json
import logging
from typing import Any

from ag2_otel.mapping.mlflow_trace import (
    META_USAGE_BY_AGENT,
    META_USAGE_BY_MODEL,
    META_USAGE_TOTAL,
    TAG_OTEL_TRACE_ID,
)

_logger = logging.getLogger(__name__)


def _loads(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def get_token_usage(trace_id: str, *, tracking_uri: str | None = None) -> dict[str, Any]:
    """``{"trace_id", "otel_trace_id", "total", "by_agent", "by_model", "mlflow_token_usage"}`` for an MLflow trace id.

    ``total`` / ``by_agent`` / ``by_model`` hold ``input_tokens``, ``output_tokens``, ``total_tokens``, ``calls`` and,
    when known, cache and reasoning tokens and ``cost``. ``mlflow_token_usage`` is MLflow's own aggregate
    (``trace.info.token_usage``), which equals ``total``'s token counts. Empty dicts when the trace has none of our
    metadata; ``{}`` (logged) when the trace cannot be read. ``tracking_uri`` defaults to MLflow's current one.
    """
    try:
        try:
            from mlflow import MlflowClient
        except ImportError:  # mlflow-tracing: no MlflowClient; the client behind its trace methods reads the same
            from mlflow.tracing.client import TracingClient as MlflowClient

        info = MlflowClient(tracking_uri=tracking_uri).get_trace(trace_id).info
    except Exception as exc:  # noqa: BLE001 - a read helper must not raise into the caller's app
        _logger.warning("ag2_otel: could not read trace %s (%s)", trace_id, type(exc).__name__)
        return {}
    # the MLflow sink writes the breakdown as trace metadata; over OTLP (a collector) it can only arrive as tags
    tags = info.tags or {}
    metadata = {**tags, **(info.trace_metadata or {})}
    return {
        "trace_id": info.trace_id,
        "otel_trace_id": tags.get(TAG_OTEL_TRACE_ID),
        "total": _loads(metadata.get(META_USAGE_TOTAL)),
        "by_agent": _loads(metadata.get(META_USAGE_BY_AGENT)),
        "by_model": _loads(metadata.get(META_USAGE_BY_MODEL)),
        "mlflow_token_usage": dict(info.token_usage or {}),
    }
