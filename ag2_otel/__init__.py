"""ag2-otel: OpenTelemetry GenAI tracing for AG2 (classic ``autogen``), with MLflow traces and exact token totals."""

from .instrumentation import Ag2Instrumentor
from .version import __version__

__all__ = ["Ag2Instrumentor", "__version__"]
