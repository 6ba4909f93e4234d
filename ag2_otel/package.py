"""What opentelemetry-instrumentation checks before loading us (BaseInstrumentor.instrumentation_dependencies)."""

_instruments = ("ag2 >= 0.9.1, < 1.0",)
