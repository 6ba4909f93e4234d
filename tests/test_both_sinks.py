"""``ag2_otel.autolog()`` with both sinks on, in a subprocess (the global TracerProvider can be set once per process).

- collector up (OTLP over grpc and over http/protobuf): the calculator chat reaches the tmp sqlite store through the
  MLflow sink AND the real ``mlflow server`` through the SDK's OTLP exporter and a real rotel collector, exact totals
  in both, the same OTel trace id;
- collector down (a closed port, OTEL_EXPORTER_OTLP_TIMEOUT=1): the chat finishes, the process exits 0 within a
  measured bound, the MLflow store still has the trace, and the failed OTLP export is logged once per batch.

OTEL_BSP_SCHEDULE_DELAY is raised in the collector-down case so the OTLP batch processor exports exactly once (at
exit): the number of failed batches is then known (1) and so is the number of log lines allowed.
"""

from __future__ import annotations

import re
import sys
import textwrap

import pytest

from tests.collector import free_port
from tests.test_otlp_collector import fetch_trace
from tests.test_zero_code_mlflow import CHAT, SPANS, assert_server_trace, assert_sqlite_trace, clean_env, run_app, \
    store_traces

APP = textwrap.dedent("""
    import ag2_otel

    ag2_otel.autolog()
""") + textwrap.dedent(CHAT)

# measured on this box: chat end -> exit 3.4 s (grpc) / 4.2 s (http/protobuf) with the collector down, most of it
# MLflow's own exit work (store write, its async queue flush, its OTLP metrics export); OTLP itself gives up after
# OTEL_EXPORTER_OTLP_TIMEOUT=1 s. The bound leaves room for a slow CI box, and is far below a hang.
EXIT_AFTER_CHAT_BOUND_S = 15.0


def _run(tmp_path, **env):
    (tmp_path / "app.py").write_text(APP)
    return run_app([sys.executable, "app.py"], clean_env(tmp_path, **env), tmp_path)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_both_sinks_get_the_trace(protocol, tmp_path, rotel_collector, mlflow_server):
    endpoint = rotel_collector.grpc_endpoint if protocol == "grpc" else rotel_collector.http_endpoint
    run = _run(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
               OTEL_SERVICE_NAME="both-sinks")
    assert run.returncode == 0, run.stderr[-4000:]
    print(f"{protocol}: run {run.total_s:.2f}s, chat end -> exit {run.after_chat_s:.2f}s")

    traces = store_traces(tmp_path)  # the MLflow sink (MLFLOW_ENABLE_OTLP_EXPORTER=false kept it in the store)
    assert len(traces) == 1, [t.info.trace_id for t in traces]
    otel_trace_id = assert_sqlite_trace(traces[0])

    server_trace = fetch_trace(mlflow_server, rotel_collector.experiment_id, otel_trace_id, expected_spans=SPANS)
    assert_server_trace(server_trace)
    assert "ag2_otel:" not in run.stderr, run.stderr[-4000:]


# What the SDK logs per failed span batch (measured, opentelemetry-exporter-otlp 1.45): a WARNING "Transient error ...
# retrying in Xs" for each retry that fits in the timeout (0 or 1 with a 1 s timeout), then one ERROR "Failed to
# export ...". The grpc exporters' module logger has a DuplicateFilter keyed on (message template, level, 20 s
# bucket) that is shared by the metrics exporter: MLflow's own OTLP metrics exporter (it exports span-duration
# histograms whenever an OTLP endpoint is set) fails first at exit, and the span failure line is then swallowed, so
# over grpc the only line is "Failed to export metrics ...". Hence "at most" below.
SPAN_FAILURE = re.compile(r"Failed to export (traces|spans batch)")
SPAN_RETRY = re.compile(r"Transient error .* (exporting traces|exporting spans batch)")
METRIC_LINE = re.compile(r"export(ing)? metrics")


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_collector_down_exits_promptly_and_mlflow_still_gets_the_trace(protocol, tmp_path):
    port = free_port()  # bound then released: nothing listens there
    run = _run(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}", OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
               OTEL_EXPORTER_OTLP_TIMEOUT="1", OTEL_BSP_SCHEDULE_DELAY="600000")
    lines = run.stderr.splitlines()
    span_failures = [line for line in lines if SPAN_FAILURE.search(line)]
    span_retries = [line for line in lines if SPAN_RETRY.search(line)]
    metric_lines = [line for line in lines if METRIC_LINE.search(line)]
    print(f"{protocol}: run {run.total_s:.2f}s, chat end -> exit {run.after_chat_s:.2f}s; span export failure lines "
          f"{len(span_failures)}, retry lines {len(span_retries)}, MLflow metric export lines {len(metric_lines)}")
    print(run.stderr)

    assert run.returncode == 0, run.stderr[-4000:]
    assert "CHAT_DONE" in run.stdout
    assert run.after_chat_s is not None and run.after_chat_s < EXIT_AFTER_CHAT_BOUND_S, run.after_chat_s
    failed_batches = 1  # one batch: the schedule delay keeps the batch processor waiting until the exit flush
    assert len(span_failures) <= failed_batches and len(span_retries) <= failed_batches, run.stderr[-4000:]
    assert len(metric_lines) <= 2, run.stderr[-4000:]  # MLflow's metric batch: one retry line, one failure line
    assert "ag2_otel:" not in run.stderr, run.stderr[-4000:]  # nothing from our code: the SDK reports its failure
    assert "Traceback" not in run.stderr, run.stderr[-4000:]

    traces = store_traces(tmp_path)
    assert len(traces) == 1
    assert_sqlite_trace(traces[0])


USER_PROVIDER_APP = textwrap.dedent("""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    mine = TracerProvider()
    exporter = InMemorySpanExporter()
    mine.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(mine)

    import ag2_otel

    ag2_otel.autolog()
    ag2_otel.autolog()  # twice: still one set of processors
    assert trace.get_tracer_provider() is mine, "autolog replaced the user's provider"
""") + textwrap.dedent(CHAT) + textwrap.dedent("""
    print("USER_EXPORTER_SPANS", len(exporter.get_finished_spans()))
""")


def test_a_global_provider_the_user_set_is_kept_and_gets_our_spans(tmp_path):
    (tmp_path / "app.py").write_text(USER_PROVIDER_APP)
    run = run_app([sys.executable, "app.py"], clean_env(tmp_path), tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    assert f"USER_EXPORTER_SPANS {SPANS}" in run.stdout
    traces = store_traces(tmp_path)
    assert len(traces) == 1
    assert_sqlite_trace(traces[0])


def test_bad_value_fails_at_configuration_time_naming_the_variable(tmp_path):
    (tmp_path / "app.py").write_text("import ag2_otel\nag2_otel.autolog()\n")
    # (a bad OTEL_TRACES_SAMPLER_ARG is the SDK's: it warns and uses 1.0, see tests/test_config_scope.py)
    run = run_app([sys.executable, "app.py"], clean_env(tmp_path, OTEL_EXPORTER_OTLP_PROTOCOL="http/json"), tmp_path)
    assert run.returncode != 0
    assert "ConfigError" in run.stderr and "OTEL_EXPORTER_OTLP_PROTOCOL='http/json'" in run.stderr


def test_sdk_disabled_means_nothing_is_traced(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    run = run_app([sys.executable, "app.py"], clean_env(tmp_path, OTEL_SDK_DISABLED="true"), tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "CHAT_DONE" in run.stdout
    assert store_traces(tmp_path) == []
