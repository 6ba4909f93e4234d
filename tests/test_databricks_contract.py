"""Contract test: ag2-otel -> MLflow 3.17.2 -> a Databricks workspace experiment.

No workspace is reachable here, so ``tests/databricks_stub.py`` plays one on 127.0.0.1 (plain http: MLflow and
databricks-sdk accept ``DATABRICKS_HOST=http://...``). The user's setup is the documented one: ``DATABRICKS_HOST`` +
``DATABRICKS_TOKEN`` (or a ``~/.databrickscfg`` profile), ``mlflow.set_tracking_uri("databricks")``,
``mlflow.set_experiment("/Shared/ag2-otel")``, ``ag2_otel.autolog()``, then an AG2 chat. Everything asserted comes
from what MLflow actually sent to the workspace:

- the trace arrived complete: StartTraceV3 (``POST /api/3.0/mlflow/traces``) into the experiment, then the span data
  PUT to the signed URL from ``credentials-for-data-upload``: 12 spans, the AG2 tree, span types, parent ids;
- exact tokens: ``mlflow.trace.tokenUsage`` in the StartTraceV3 metadata (480/52/532), ``mlflow.chat.tokenUsage`` per
  LLM span, and ag2-otel's own ``ag2_otel.usage.*`` metadata;
- the token goes ONLY into ``Authorization: Bearer`` headers of workspace API calls: never into a body, a URL or query
  string, the uploaded data (nor the cloud-storage PUT's headers), a log record at DEBUG, or a span attribute.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import time

import mlflow
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import ag2_otel
from tests.databricks_stub import DatabricksStub
from tests.genai_schema import SchemaCheckedSpanExporter
from tests.test_instrumentation_basic import CALCULATOR_SCRIPT, CALCULATOR_TREE, make_calculator_agents

EXPERIMENT = "/Shared/ag2-otel"
QUESTION = "What is (44232 + 13312 / (232 - 32)) * 5?"
SPAN_TYPES = ["CHAIN", "AGENT", "CHAT_MODEL", "AGENT", "TOOL", "AGENT", "CHAT_MODEL", "AGENT", "TOOL", "AGENT",
              "CHAT_MODEL", "AGENT"]
PER_CALL_USAGE = [
    {"input_tokens": 120, "output_tokens": 21, "total_tokens": 141},
    {"input_tokens": 160, "output_tokens": 22, "total_tokens": 182},
    {"input_tokens": 200, "output_tokens": 9, "total_tokens": 209},
]
# What MLflow 3.17.2 sends for this flow, in order, besides databricks-sdk's unauthenticated host-metadata probe
# (GET /.well-known/databricks-config, before most calls). experiments/get is MLflow looking for a Unity Catalog
# trace location linked to the experiment (in set_experiment, at tracer init, and in get_trace).
EXPECTED_CALLS = [
    "GET /api/2.0/mlflow/experiments/get-by-name",  # set_experiment: 404 RESOURCE_DOES_NOT_EXIST, then
    "POST /api/2.0/mlflow/experiments/create",
    "GET /api/2.0/mlflow/experiments/get",  # set_experiment: UC trace location?
    "GET /api/2.0/mlflow/experiments/get",  # MLflow's tracer provider init (first replayed span): UC location?
    "POST /api/3.0/mlflow/traces",
    "GET /api/2.0/mlflow/traces/{trace_id}/credentials-for-data-upload",
    "PUT /signed-upload/{trace_id}/traces.json",
]
READ_BACK_CALLS = [
    "GET /api/2.0/mlflow/experiments/get",  # mlflow.get_trace: UC trace id?
    "GET /api/3.0/mlflow/traces/{trace_id}",
    "GET /api/2.0/mlflow/traces/{trace_id}/credentials-for-data-download",
    "GET /signed-download/{trace_id}/traces.json",
]


class _Capture(logging.Handler):
    """Every log record, formatted with its traceback, plus its raw attributes (extras can carry values too)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.texts.append(self.format(record) + "\n" + repr(vars(record)))
        except Exception as exc:  # noqa: BLE001 - a record that cannot be formatted is still searched
            self.texts.append(f"<unformattable {exc!r}> {record.msg!r} {record.args!r}")


@pytest.fixture
def debug_logs():
    """Logging at DEBUG for the whole run, for every logger: a handler on the root and on each logger that does not
    propagate (MLflow's own ``mlflow`` logger), every level lowered to DEBUG; all restored after."""
    capture = _Capture()
    manager = logging.root.manager
    loggers = [logging.root] + [lg for lg in manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    saved = [(lg, lg.level) for lg in loggers]
    attached = [lg for lg in loggers if lg is logging.root or not lg.propagate]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    for lg in attached:
        lg.addHandler(capture)
    try:
        yield capture
    finally:
        for lg in attached:
            lg.removeHandler(capture)
        for lg, level in saved:
            lg.setLevel(level)


@pytest.fixture
def workspace(monkeypatch, tmp_path):
    """A stub workspace and a clean Databricks environment; tracking URI, active experiment and env restored after."""
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils as tracking_utils

    for name in [n for n in os.environ if n.startswith("DATABRICKS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.databrickscfg of the machine's user can take part
    # mlflow.set_tracking_uri / set_experiment also write these: monkeypatch puts back whatever was there
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    monkeypatch.setattr(fluent, "_active_experiment_id", fluent._active_experiment_id)
    # the URI as set (None when never set), not get_tracking_uri()'s resolved default, which would pin it
    previous_uri = tracking_utils._tracking_uri
    stub = DatabricksStub().start()
    try:
        yield stub
    finally:
        ag2_otel.autolog(disable=True)  # flushes MLflow's async writer first
        mlflow.set_tracking_uri(previous_uri)  # also resets MLflow's tracer provider to that URI
        stub.stop()


@pytest.fixture
def provider():
    exporter = SchemaCheckedSpanExporter()  # an InMemorySpanExporter that also checks the GenAI content
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer_provider.exporter = exporter
    yield tracer_provider  # not shut down: autolog(disable=True) already flushed, and a shutdown costs a 2 s flush
    exporter.assert_content_valid()


def _token() -> str:
    return f"dapi-CONTRACT-SECRET-{secrets.token_hex(16)}"


def _run_chat(tracking_uri: str, provider: TracerProvider) -> tuple[str, float]:
    start = time.monotonic()
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.set_experiment(EXPERIMENT)
    ag2_otel.autolog(tracer_provider=provider)
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    user.initiate_chat(assistant, message=QUESTION, max_turns=10)
    assert ag2_otel.flush(30)
    return experiment.experiment_id, time.monotonic() - start


def _b64_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def _tree(spans: list[dict]) -> list[str]:
    by_parent: dict[str | None, list[dict]] = {}
    for span in spans:
        by_parent.setdefault(span["parent_span_id"], []).append(span)
    lines: list[str] = []

    def walk(span: dict, depth: int) -> None:
        lines.append("  " * depth + span["name"])
        for child in sorted(by_parent.get(span["span_id"], []), key=lambda s: s["start_time_unix_nano"]):
            walk(child, depth + 1)

    for root in by_parent.get(None, []):
        walk(root, 0)
    return lines


def _assert_trace_arrived(stub: DatabricksStub, experiment_id: str, provider: TracerProvider) -> str:
    # the experiment was created by name in the workspace, and the trace went into it
    create = next(r for r in stub.requests if r.route == "/api/2.0/mlflow/experiments/create")
    assert create.json()["name"] == EXPERIMENT
    assert stub.experiments[experiment_id]["name"] == EXPERIMENT
    starts = [r for r in stub.requests if r.method == "POST" and r.route == "/api/3.0/mlflow/traces"]
    assert len(starts) == 1 and starts[0].status == 200
    info = starts[0].json()["trace"]["trace_info"]
    trace_id = info["trace_id"]
    assert trace_id.startswith("tr-")
    assert info["trace_location"] == {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}
    assert info["state"] == "OK"
    assert info["tags"]["mlflow.traceName"] == "invoke_workflow initiate_chat"

    # exact token totals in the trace metadata: MLflow's own key and ours
    metadata = info["trace_metadata"]
    assert json.loads(metadata["mlflow.trace.tokenUsage"]) == {"input_tokens": 480, "output_tokens": 52,
                                                               "total_tokens": 532}
    total = json.loads(metadata["ag2_otel.usage.total"])
    assert (total["input_tokens"], total["output_tokens"], total["total_tokens"], total["calls"]) == (480, 52, 532, 3)
    assert json.loads(metadata["ag2_otel.usage.by_agent"])["assistant"]["total_tokens"] == 532
    assert json.loads(metadata["ag2_otel.usage.by_model"])["scripted-model"]["calls"] == 3
    assert float(metadata["ag2_otel.usage.cost"]) == pytest.approx(480e-6 + 52 * 2e-6)
    otel_trace_ids = {format(s.context.trace_id, "032x") for s in provider.exporter.get_finished_spans()}
    assert info["tags"]["ag2_otel.otel_trace_id"] in otel_trace_ids

    # the span data, as uploaded to the signed URL: complete, typed, parented
    assert set(stub.uploads) == {trace_id}
    spans = stub.uploaded_trace_data(trace_id)["spans"]
    assert len(spans) == 12 == json.loads(metadata["mlflow.trace.sizeStats"])["num_spans"]
    assert {_b64_hex(s["trace_id"]) for s in spans} == {trace_id[len("tr-"):]}
    ids = {s["span_id"] for s in spans}
    assert len(ids) == 12
    roots = [s for s in spans if s["parent_span_id"] is None]
    assert len(roots) == 1 and all(s["parent_span_id"] in ids for s in spans if s is not roots[0])
    assert _tree(spans) == CALCULATOR_TREE
    ordered = sorted(spans, key=lambda s: s["start_time_unix_nano"])
    assert [json.loads(s["attributes"]["mlflow.spanType"]) for s in ordered] == SPAN_TYPES
    by_id = {s["span_id"]: s for s in spans}
    for span in spans:
        span_type = json.loads(span["attributes"]["mlflow.spanType"])
        parent = by_id.get(span["parent_span_id"])
        if span_type in ("CHAT_MODEL", "TOOL"):
            assert json.loads(parent["attributes"]["mlflow.spanType"]) == "AGENT"
        if span_type == "AGENT":
            assert parent is roots[0]
        assert span["status"]["code"] == "STATUS_CODE_OK"
    per_call = [json.loads(s["attributes"]["mlflow.chat.tokenUsage"]) for s in ordered
                if "mlflow.chat.tokenUsage" in s["attributes"]]
    assert per_call == PER_CALL_USAGE
    assert all(json.loads(s["attributes"]["mlflow.spanType"]) == "CHAT_MODEL" for s in ordered
               if "mlflow.chat.tokenUsage" in s["attributes"])
    tool = next(s for s in ordered if json.loads(s["attributes"]["mlflow.spanType"]) == "TOOL")
    assert json.loads(tool["attributes"]["mlflow.spanInputs"]) == {"a": 232, "b": 32, "operator": "-"}
    return trace_id


def _assert_token_only_in_bearer_headers(stub: DatabricksStub, token: str, logs: _Capture,
                                         provider: TracerProvider) -> None:
    # the full token, a truncated prefix of its random part and the marker all count as a leak
    needles = [token, token.rsplit("-", 1)[1][:12], "CONTRACT-SECRET"]

    def leaks(text: str) -> list[str]:
        return [n for n in needles if n in text]

    assert stub.requests
    for r in stub.requests:
        where = f"{r.method} {r.path}"
        assert not leaks(r.path), f"token in URL/query of {where}"
        assert not leaks(r.body.decode("utf-8", "replace")), f"token in body of {where}"
        for name, value in r.headers.items():
            if name.lower() == "authorization":
                continue
            assert not leaks(name + value), f"token in header {name} of {where}"
        auth = r.header("Authorization")
        if r.route.startswith("/api/"):
            assert auth == f"Bearer {token}", f"workspace call without the bearer token: {where}"
        else:  # the host-metadata probe and, above all, the cloud-storage PUT/GET of the span data
            assert auth is None, f"credentials sent outside the workspace API: {where}"
    for trace_id, data in stub.uploads.items():
        assert not leaks(data.decode("utf-8", "replace")), f"token in the uploaded span data of {trace_id}"

    names = {text.split(" ", 1)[0] for text in logs.texts}
    assert {"mlflow", "databricks", "urllib3"} <= {name.split(".")[0] for name in names}, f"capture not wired: {names}"
    leaked = [text for text in logs.texts if leaks(text)]
    assert not leaked, f"token in {len(leaked)} log record(s), first: {leaked[0][:500]}"

    for span in provider.exporter.get_finished_spans():
        dump = json.dumps({"attributes": dict(span.attributes or {}),
                           "events": [dict(e.attributes or {}) for e in span.events],
                           "resource": dict(span.resource.attributes), "name": span.name}, default=str)
        assert not leaks(dump), f"token on OTel span {span.name}"


def _assert_calls(stub: DatabricksStub, expected: list[str]) -> None:
    calls = [c for c in stub.calls() if c != "GET /.well-known/databricks-config"]
    assert calls == expected, "\n".join(stub.calls())
    # only "no such experiment yet" may fail; an ENDPOINT_NOT_FOUND would be a call the stub does not know
    failed = [(str(r), r.status) for r in stub.requests if r.status != 200]
    assert failed == [("GET /api/2.0/mlflow/experiments/get-by-name", 404)]


def _read_back(trace_id: str) -> None:
    """The user's view: the seed snippet finds the trace in the workspace, with its totals and per-call usage."""
    assert mlflow.get_last_active_trace_id() == trace_id
    trace = mlflow.get_trace(trace_id=trace_id)
    assert trace.info.token_usage == {"input_tokens": 480, "output_tokens": 52, "total_tokens": 532}
    assert [s.get_attribute("mlflow.chat.tokenUsage") for s in sorted(trace.data.spans, key=lambda s: s.start_time_ns)
            if s.get_attribute("mlflow.chat.tokenUsage")] == PER_CALL_USAGE
    assert len(trace.data.spans) == 12


def _assert_our_usage_api(trace_id: str) -> None:
    usage = ag2_otel.get_token_usage(trace_id)  # reads the trace back from the workspace too
    assert usage["mlflow_token_usage"] == {"input_tokens": 480, "output_tokens": 52, "total_tokens": 532}
    assert (usage["total"]["input_tokens"], usage["total"]["output_tokens"]) == (480, 52)
    assert usage["by_model"]["scripted-model"]["calls"] == 3


def _assert_contract(tracking_uri, workspace, provider, token, debug_logs):
    """The calculator chat through autolog to the stub workspace: the whole contract, as each test's tail."""
    experiment_id, elapsed = _run_chat(tracking_uri, provider)
    trace_id = _assert_trace_arrived(workspace, experiment_id, provider)
    _assert_calls(workspace, EXPECTED_CALLS)
    _read_back(trace_id)
    _assert_calls(workspace, EXPECTED_CALLS + READ_BACK_CALLS)
    _assert_our_usage_api(trace_id)
    _assert_token_only_in_bearer_headers(workspace, token, debug_logs, provider)
    assert elapsed < 60


def test_env_credentials_databricks_uri(workspace, provider, monkeypatch, debug_logs):
    token = _token()
    monkeypatch.setenv("DATABRICKS_HOST", workspace.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", token)

    _assert_contract("databricks", workspace, provider, token, debug_logs)


def test_profile_databricks_uri(workspace, provider, monkeypatch, tmp_path, debug_logs):
    token = _token()
    config = tmp_path / ".databrickscfg"
    config.write_text(f"[DEFAULT]\nhost = https://wrong.invalid\ntoken = dapi-not-this-one\n\n"
                      f"[ag2otel]\nhost = {workspace.url}\ntoken = {token}\n")
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(config))

    _assert_contract("databricks://ag2otel", workspace, provider, token, debug_logs)
