"""Configuration from the environment: validation at configuration time, masking, the documented variable table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ag2_otel.config import (
    ENV_VARS,
    ConfigError,
    ContentCapture,
    Settings,
    build_otlp_span_exporter,
    describe_settings_table,
    load_settings,
)

REPO = Path(__file__).resolve().parent.parent


def test_defaults_from_an_empty_environment():
    s = load_settings({})
    assert s == Settings()
    assert (s.max_content_chars, s.max_messages, s.exit_flush_timeout) == (16384, 20, 10.0)
    assert s.otlp_protocol == "grpc" and s.otlp_endpoint == "http://localhost:4317"
    assert s.mlflow_enabled and not s.otlp_enabled and not s.console_enabled
    assert s.capture_content is None


@pytest.mark.parametrize("env, message", [
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "htttp"},
     "OTEL_EXPORTER_OTLP_PROTOCOL='htttp' is not valid; use one of: grpc, http/protobuf"),
    ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='http/json'"),
    ({"OTEL_SDK_DISABLED": "yes please"}, "OTEL_SDK_DISABLED='yes please' is not valid; use one of: true, false"),
    ({"OTEL_TRACES_EXPORTER": "otlp,zipkin"}, "'zipkin' is unknown"),
    ({"OTEL_TRACES_EXPORTER": "none,otlp"}, "'none' cannot be combined"),
    ({"AG2_OTEL_MLFLOW": "maybe"}, "AG2_OTEL_MLFLOW='maybe' is not valid; use one of: true, false"),
    ({"AG2_OTEL_MAX_CONTENT_CHARS": "0"}, "AG2_OTEL_MAX_CONTENT_CHARS='0' is not valid; use a positive integer"),
    ({"AG2_OTEL_MAX_MESSAGES": "ten"}, "AG2_OTEL_MAX_MESSAGES='ten'"),
    ({"AG2_OTEL_EXIT_FLUSH_TIMEOUT": "-1"}, "AG2_OTEL_EXIT_FLUSH_TIMEOUT='-1' is not valid; use a number of seconds"),
    ({"AG2_OTEL_EXIT_FLUSH_TIMEOUT": "inf"}, "AG2_OTEL_EXIT_FLUSH_TIMEOUT='inf'"),
    ({"AG2_OTEL_MLFLOW_WRITER": "thread"}, "AG2_OTEL_MLFLOW_WRITER='thread' is not valid; use one of: process, inline"),
    ({"AG2_OTEL_MAX_TRACES": "-5"}, "AG2_OTEL_MAX_TRACES='-5'"),
    ({"AG2_OTEL_MLFLOW_RETRY_TIMEOUT": "soon"}, "AG2_OTEL_MLFLOW_RETRY_TIMEOUT='soon'"),
    ({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "everything"},
     "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT='everything'"),
])
def test_bad_values_raise_config_error_naming_variable(env, message):
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert message in str(info.value)


# Values of the OTLP exporter / batch span processor variables that the SDK raises on when the exporter is built,
# misuses at every export, or logs with its secret (tests/test_config_scope.py shows what the SDK does with each).
# They are checked only when the OTLP sink is on: autolog() builds the exporter then, and only then.
OTLP_ON = {"OTEL_TRACES_EXPORTER": "otlp"}
HTTP = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
BAD_EXPORTER_VALUES = [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT='collector:4317'"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT='http://'"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:99999"}, "OTEL_EXPORTER_OTLP_ENDPOINT='http://h:99999'"),
    ({"OTEL_EXPORTER_OTLP_TIMEOUT": "10s"}, "OTEL_EXPORTER_OTLP_TIMEOUT='10s' is not valid; use a positive number"),
    ({"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "0"}, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT='0'"),
    ({**HTTP, "OTEL_EXPORTER_OTLP_TIMEOUT": "-1"}, "OTEL_EXPORTER_OTLP_TIMEOUT='-1'"),
    ({"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "OTEL_EXPORTER_OTLP_COMPRESSION='zstd' is not valid; use one of: gzip"),
    # the SDK's grpc exporter knows only gzip and raises on 'none'/'deflate' when built
    ({"OTEL_EXPORTER_OTLP_COMPRESSION": "deflate"}, "use one of: gzip (with protocol grpc)"),
    ({"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "none"}, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION='none'"),
    # the grpc exporter reads these raw: empty raises (timeout, compression) or targets "" (endpoint)
    ({"OTEL_EXPORTER_OTLP_TIMEOUT": ""}, "OTEL_EXPORTER_OTLP_TIMEOUT is set but empty"),
    ({"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": " "}, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION is set but empty"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, "OTEL_EXPORTER_OTLP_ENDPOINT is set but empty"),
    ({"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer \"x\""},
     "OTEL_EXPORTER_OTLP_HEADERS is not valid (value hidden)"),
    ({"OTEL_BSP_MAX_QUEUE_SIZE": "-1"}, "OTEL_BSP_MAX_QUEUE_SIZE='-1' is not valid; use a positive integer"),
    ({"OTEL_BSP_SCHEDULE_DELAY": "0"}, "OTEL_BSP_SCHEDULE_DELAY='0'"),
    ({"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "200"},
     "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=200 is larger than OTEL_BSP_MAX_QUEUE_SIZE=100"),
    ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096"}, "larger than OTEL_BSP_MAX_QUEUE_SIZE=2048"),
]


@pytest.mark.parametrize("env, message", BAD_EXPORTER_VALUES)
def test_bad_exporter_values_raise_when_the_otlp_exporter_is_used(env, message):
    with pytest.raises(ConfigError) as info:
        load_settings({**OTLP_ON, **env})
    assert message in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_settings(env, otlp_exporter=True)
    assert message in str(info.value)
    load_settings(env, otlp_exporter=False)  # autolog() with a provider of yours: these values are not its business
    if not any(k.endswith("ENDPOINT") for k in env):
        load_settings(env)  # the OTLP sink is off: the exporter is never built


def test_values_the_shadowed_base_variable_would_fail_on_are_not_read():
    # the _TRACES_ variable is the one the SDK's trace exporter reads; the base one is for other signals
    env = {**OTLP_ON, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "5", "OTEL_EXPORTER_OTLP_TIMEOUT": "soon",
           "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_COMPRESSION": "deflate",
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_ENDPOINT": "c:4317"}
    s = load_settings(env)
    assert s.otlp_timeout == 5.0 and s.otlp_endpoint == "http://c:4317"


def test_collect_mode_lists_every_problem_and_uses_the_defaults():
    problems = []
    s = load_settings({"OTEL_EXPORTER_OTLP_PROTOCOL": "htttp", "AG2_OTEL_MAX_MESSAGES": "ten", **OTLP_ON,
                       "OTEL_EXPORTER_OTLP_COMPRESSION": "deflate", "OTEL_BSP_MAX_QUEUE_SIZE": "-1"}, problems=problems)
    assert (s.otlp_protocol, s.max_messages) == ("grpc", 20)
    assert [p.split("=")[0] for p in problems] == [
        "OTEL_EXPORTER_OTLP_PROTOCOL", "AG2_OTEL_MAX_MESSAGES", "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_BSP_MAX_QUEUE_SIZE"]


def test_good_values_are_parsed():
    s = load_settings({
        "OTEL_SDK_DISABLED": "FALSE", "OTEL_SERVICE_NAME": "svc", "OTEL_TRACES_EXPORTER": " otlp , console ",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/", "OTEL_EXPORTER_OTLP_TIMEOUT": "2.5",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "deflate", "OTEL_TRACES_SAMPLER": "ParentBased_TraceIdRatio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25", "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BSP_MAX_QUEUE_SIZE": "100",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100", "OTEL_BSP_EXPORT_TIMEOUT": "1000",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_and_event",
        "AG2_OTEL_MLFLOW": "false", "AG2_OTEL_MAX_CONTENT_CHARS": "100", "AG2_OTEL_MAX_MESSAGES": "3",
        "AG2_OTEL_EXIT_FLUSH_TIMEOUT": "0", "AG2_OTEL_MLFLOW_WRITER": "Inline", "AG2_OTEL_MAX_TRACES": "7",
        "AG2_OTEL_MLFLOW_RETRY_TIMEOUT": "1.5",
    })
    assert s.traces_exporters == ("otlp", "console")
    assert s.otlp_protocol == "http/protobuf"  # the _TRACES_ variable wins
    assert s.otlp_endpoint == "http://collector:4318/v1/traces"  # the SDK appends the signal path to the base
    assert s.otlp_timeout == 2.5
    assert s.capture_content is ContentCapture.SPAN_AND_EVENT
    assert (s.max_content_chars, s.max_messages, s.exit_flush_timeout) == (100, 3, 0.0)
    assert (s.mlflow_writer, s.max_traces, s.mlflow_retry_timeout) == ("inline", 7, 1.5)
    assert s.otlp_enabled and s.console_enabled and not s.mlflow_enabled


def test_empty_values_count_as_unset():
    assert load_settings({"OTEL_EXPORTER_OTLP_PROTOCOL": "", "AG2_OTEL_MAX_MESSAGES": "  "}) == Settings()


@pytest.mark.parametrize("env, otlp, mlflow, console", [
    ({}, False, True, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, True, True, False),  # an endpoint alone turns OTLP on
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True, True, False),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True, False, False),  # an explicit list is exact
    ({"OTEL_TRACES_EXPORTER": "otlp,mlflow"}, True, True, False),
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False, False, True),
    ({"OTEL_TRACES_EXPORTER": "none"}, False, False, False),
    ({"OTEL_TRACES_EXPORTER": "otlp", "AG2_OTEL_MLFLOW": "true"}, True, True, False),  # explicit AG2_OTEL_MLFLOW wins
    ({"AG2_OTEL_MLFLOW": "false"}, False, False, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp,console,mlflow", "AG2_OTEL_MLFLOW": "true"},
     False, False, False),
])
def test_which_sinks_are_on(env, otlp, mlflow, console):
    s = load_settings(env)
    assert (s.otlp_enabled, s.mlflow_enabled, s.console_enabled) == (otlp, mlflow, console)


def test_secrets_never_appear_in_masked_repr_or_errors():
    secrets = ["s3cr3t-token", "dapi-abc123", "hunter2"]
    env = {
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer {secrets[0]}",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": f"x-mlflow-experiment-id=7,X-Api-Key={secrets[0]}",
        "DATABRICKS_TOKEN": secrets[1],
        "DATABRICKS_HOST": "adb-1.azuredatabricks.net",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"https://user:{secrets[2]}@collector.example:4317",
    }
    s = load_settings(env)
    shown = json.dumps(s.masked()) + repr(s) + str(s)
    for secret in secrets:
        assert secret not in shown
    masked = s.masked()
    assert masked["otlp_headers"] == {"x-mlflow-experiment-id": "***", "x-api-key": "***"}
    assert masked["databricks_token"] == "***"
    assert masked["otlp_endpoint"] == "https://user:***@collector.example:4317"
    assert load_settings({}).masked()["databricks_token"] is None

    for bad in (f"Bearer {secrets[0]}", f'authorization=Bearer "{secrets[0]}"', f"a=1;x={secrets[0]}"):
        with pytest.raises(ConfigError) as info:  # the SDK would log each of these, secret included
            load_settings({**OTLP_ON, "OTEL_EXPORTER_OTLP_HEADERS": bad})
        assert secrets[0] not in str(info.value) and "OTEL_EXPORTER_OTLP_HEADERS" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": f"ftp://user:{secrets[2]}@host"})
    assert secrets[2] not in str(info.value)


def test_warnings_for_likely_endpoint_mistakes(caplog):
    s = load_settings({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                       "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318"})
    assert any("no path" in w for w in s.warnings)
    assert any("no path" in r.getMessage() for r in caplog.records)
    s = load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})  # grpc by default
    assert any("4318" in w for w in s.warnings)
    assert load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}).warnings == ()


@pytest.mark.parametrize("protocol, module", [("grpc", "grpc"), ("http/protobuf", "http")])
def test_exporter_is_the_sdk_one_and_reads_env_itself(protocol, module, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.invalid:7777")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "3")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    exporter = build_otlp_span_exporter(load_settings())
    try:
        assert type(exporter).__module__ == f"opentelemetry.exporter.otlp.proto.{module}.trace_exporter"
        assert type(exporter).__name__ == "OTLPSpanExporter"
        # the SDK resolved the endpoint from the environment on its own (no arguments were passed); that headers
        # and endpoint from the environment really reach a server is shown end to end in test_otlp_collector.py
        expected = "collector.invalid:7777" if module == "grpc" else "http://collector.invalid:7777/v1/traces"
        assert exporter._endpoint == expected
    finally:
        exporter.shutdown()


def test_docs_table_matches_code():
    doc = (REPO / "README.md").read_text()
    assert describe_settings_table() in doc, "regenerate the table: python -m ag2_otel.config (see docs)"


def test_every_ag2_otel_variable_read_by_the_code_is_documented():
    doc = (REPO / "README.md").read_text()
    used = set()
    for path in (REPO / "ag2_otel").rglob("*.py"):
        used |= set(re.findall(r"\bAG2_OTEL_[A-Z0-9_]+\b", path.read_text()))
    assert used >= {v.name for v in ENV_VARS if not v.standard}
    # one table: every AG2_OTEL_* variable the code reads has its row (doctor calls any other one a typo)
    missing = sorted(used - {v.name for v in ENV_VARS})
    assert not missing, f"add a row to config.ENV_VARS for: {missing}"
    undocumented = sorted(name for name in used if f"`{name}`" not in doc)
    assert not undocumented, f"AG2_OTEL_* variables read by the code but missing from README.md: " \
                             f"{undocumented}"
