"""ag2-otel: OpenTelemetry GenAI tracing for AG2 (classic ``autogen``), with MLflow traces and exact token totals."""

from .autolog import autolog, flush, mlflow_processor
from .config import ConfigError
from .instrumentation import Ag2Instrumentor
from .version import __version__


def get_token_usage(trace_id: str, *, tracking_uri: str | None = None):
    """Token totals of one MLflow trace, per agent and per model, with the cost when known (see ag2_otel.usage)."""
    from .usage import get_token_usage as _get

    return _get(trace_id, tracking_uri=tracking_uri)


def __getattr__(name: str):
    # the MLflow processor imports mlflow (seconds): only when asked for
    if name == "MlflowSpanProcessor":
        from .sinks.mlflow_processor import MlflowSpanProcessor

        return MlflowSpanProcessor
    raise AttributeError(name)


__all__ = ["Ag2Instrumentor", "ConfigError", "MlflowSpanProcessor", "__version__", "autolog", "flush",
           "get_token_usage", "mlflow_processor"]
