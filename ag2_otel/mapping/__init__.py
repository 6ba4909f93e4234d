"""Pure mappings from finished OTel GenAI spans to backend-neutral records (no I/O, no MLflow import)."""

from ag2_otel.mapping.mlflow_trace import SpanRecord, TraceRecord, Usage, build_trace_record

__all__ = ["SpanRecord", "TraceRecord", "Usage", "build_trace_record"]
