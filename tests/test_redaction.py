"""The redaction hook: a callable the user passes scrubs content before any export (spans, events, MLflow)."""

from __future__ import annotations

import re

import mlflow
import pytest

from ag2_otel.sinks.mlflow_processor import MlflowSpanProcessor
from tests.test_instrumentation_basic import CALCULATOR_SCRIPT, make_calculator_agents

EMAIL = "jane.doe@example.com"
QUESTION = f"My email is {EMAIL}. What is (44232 + 13312 / (232 - 32)) * 5?"


def scrub_emails(key: str, text: str) -> str:
    return re.sub(r"[\w.+-]+@[\w-]+\.[\w.]+", "<email>", text)


def _all_strings(spans):
    for span in spans:
        yield from (v for v in span.attributes.values() if isinstance(v, str))
        for event in span.events:
            yield from (v for v in event.attributes.values() if isinstance(v, str))


@pytest.mark.parametrize("mode", ["SPAN_ONLY", "SPAN_AND_EVENT"])
def test_redact_scrubs_every_content_string(instrument, span_exporter, mode):
    instrument(capture_content=mode, redact=scrub_emails)
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    user.initiate_chat(assistant, message=QUESTION, max_turns=6)
    strings = list(_all_strings(span_exporter.get_finished_spans()))
    assert not any(EMAIL in s for s in strings)
    assert sum("<email>" in s for s in strings) >= 3  # the first message, every model call's input, agent turns


def test_redact_returning_none_drops_and_raising_fails_closed(instrument, span_exporter, caplog):
    def hook(key: str, text: str) -> str | None:
        if key == "gen_ai.tool.call.arguments":
            return None
        if EMAIL in text:
            raise RuntimeError("redactor bug")
        return text

    instrument(capture_content=True, redact=hook)
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    result = user.initiate_chat(assistant, message=QUESTION, max_turns=6)
    assert result.summary  # the chat is unaffected
    spans = span_exporter.get_finished_spans()
    assert not any(EMAIL in s for s in _all_strings(spans))  # the hook raised for those: dropped, not leaked
    assert not any("gen_ai.tool.call.arguments" in s.attributes for s in spans)
    assert any("gen_ai.tool.call.result" in s.attributes for s in spans)  # other content still recorded
    assert sum("redactor bug" in r.getMessage() or "RuntimeError" in r.getMessage() for r in caplog.records) <= 1


def test_redacted_text_is_what_mlflow_stores(instrument, tracer_provider, tmp_path, monkeypatch):
    for leftover in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(leftover, raising=False)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        processor = MlflowSpanProcessor()
        tracer_provider.add_span_processor(processor)
        instrument(capture_content=True, redact=scrub_emails)
        user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
        user.initiate_chat(assistant, message=QUESTION, max_turns=6)
        trace = mlflow.get_trace(mlflow.get_last_active_trace_id())
        assert trace is not None and len(trace.data.spans) == 12
        assert "<email>" in trace.info.request_preview
        assert processor.flush(timeout=60)
        raw = (tmp_path / "mlflow.db").read_bytes()
        assert EMAIL.encode() not in raw and b"<email>" in raw
    finally:
        mlflow.set_tracking_uri(previous)
