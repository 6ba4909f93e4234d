"""Zero-code instrumentation: ``opentelemetry-instrument python app.py`` finds Ag2Instrumentor through the
``opentelemetry_instrumentor`` entry point (``ag2 = "ag2_otel:Ag2Instrumentor"``) and traces an unmodified AG2 script.

Needs the package installed (editable is enough) so the entry point exists, and opentelemetry-distro for the
console exporter; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from ag2_otel import semconv as k
from tests.helpers import assert_conversation_id

REPO = Path(__file__).resolve().parents[1]
OTEL_INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")

APP = textwrap.dedent("""
    from autogen import ConversableAgent

    from ag2_otel.scripted import Step
    from tests.scripted_llm import scripted_llm_config

    assistant = ConversableAgent("assistant", llm_config=scripted_llm_config([Step(text="hello there", prompt_tokens=123,
                                                                                   completion_tokens=45)]),
                                 human_input_mode="NEVER")
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER")
    result = user.initiate_chat(assistant, message="hi", max_turns=1)
    print("CHAT_ID", result.chat_id)
""")


def _entry_point_installed() -> bool:
    return any(ep.name == "ag2" and ep.value == "ag2_otel:Ag2Instrumentor"
               for ep in entry_points(group="opentelemetry_instrumentor"))


def _console_spans(stdout: str) -> list[dict]:
    """The JSON objects ConsoleSpanExporter prints (one per span), picked out of AG2's own console output."""
    decoder = json.JSONDecoder()
    spans, position = [], 0
    while True:
        start = stdout.find("{", position)
        if start < 0:
            return spans
        try:
            obj, end = decoder.raw_decode(stdout, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        if isinstance(obj, dict) and "name" in obj and "context" in obj:
            spans.append(obj)
        position = end


@pytest.mark.skipif(not OTEL_INSTRUMENT.exists(), reason="opentelemetry-instrument not installed next to python")
@pytest.mark.skipif(not _entry_point_installed(), reason="ag2-otel not installed: pip install -e . (entry point)")
def test_opentelemetry_instrument_traces_an_unmodified_script(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(APP)
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update({
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "zero-code-test",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
    })

    proc = subprocess.run([str(OTEL_INSTRUMENT), sys.executable, str(app)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)

    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "CHAT_ID" in proc.stdout
    spans = _console_spans(proc.stdout)
    by_name = {s["name"]: s for s in spans}
    assert sorted(by_name) == ["chat scripted-model", "invoke_agent assistant", "invoke_workflow initiate_chat"], (
        proc.stdout[-4000:])
    assert len(spans) == 3

    workflow = by_name["invoke_workflow initiate_chat"]
    agent = by_name["invoke_agent assistant"]
    llm = by_name["chat scripted-model"]
    assert len({s["context"]["trace_id"] for s in spans}) == 1
    assert workflow["parent_id"] is None
    assert agent["parent_id"] == workflow["context"]["span_id"]
    assert llm["parent_id"] == agent["context"]["span_id"]
    assert workflow["kind"] == agent["kind"] == "SpanKind.INTERNAL"
    assert llm["kind"] == "SpanKind.CLIENT"

    chat_id = proc.stdout.split("CHAT_ID", 1)[1].split()[0]
    assert_conversation_id(workflow["attributes"], None if chat_id == "None" else chat_id)
    assert workflow["attributes"][k.AG2_PARTICIPANTS] == ["user", "assistant"]
    assert agent["attributes"][k.AGENT_NAME] == "assistant"
    assert llm["attributes"][k.OPERATION_NAME] == k.OP_CHAT
    assert llm["attributes"][k.REQUEST_MODEL] == "scripted-model"
    assert llm["attributes"][k.USAGE_INPUT_TOKENS] == 123
    assert llm["attributes"][k.USAGE_OUTPUT_TOKENS] == 45
    assert llm["resource"]["attributes"]["service.name"] == "zero-code-test"
    # content capture is off by default: no message text in the exported spans
    assert not any(key in s["attributes"] for s in spans for key in (k.INPUT_MESSAGES, k.OUTPUT_MESSAGES))
