"""Shared fixtures. Server fixtures (a real `mlflow server`, a real rotel collector) live in their own modules."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.genai_schema import SchemaCheckedSpanExporter

pytest_plugins = ["tests.servers", "tests.collector", "tests.postgres"]


@pytest.fixture(scope="session", autouse=True)
def offline_mlflow():
    """MLflow's store prices spans from a model catalog it downloads from GitHub: there is no network here."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_MODEL_CATALOG_URI", "")
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # MLflow's usage telemetry would try the internet too
    yield
    mp.undo()


@pytest.fixture
def span_exporter():
    """An InMemorySpanExporter whose spans' GenAI content (input/output messages, system instructions, tool
    definitions, on the span or its events) is checked against tests/genai_schema at teardown."""
    exporter = SchemaCheckedSpanExporter()
    yield exporter
    if exporter.content_problems:
        pytest.fail(
            f"GenAI content schema violations ({len(exporter.content_problems)}):\n  "
            + "\n  ".join(exporter.content_problems),
            pytrace=False,
        )


@pytest.fixture
def tracer_provider(span_exporter):
    """A fresh TracerProvider per test, never the global one."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def instrument(tracer_provider):
    """``instrument(capture_content=False)``: instruments AG2 with the test's tracer provider; always undone at
    teardown (Ag2Instrumentor is a singleton, a leftover instrumentation would leak into the next test)."""
    from ag2_otel import Ag2Instrumentor

    instrumentor = Ag2Instrumentor()

    def _instrument(capture_content=False, **kwargs):
        instrumentor.instrument(tracer_provider=tracer_provider, capture_content=capture_content, **kwargs)
        return instrumentor

    try:
        yield _instrument
    finally:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
