"""Configuration errors only where they belong (issue #12, part 5).

- ``Ag2Instrumentor().instrument()`` reads the content mode and two AG2_OTEL_* limits, nothing else: no OTEL_* value
  makes it raise, and a bad value of what it reads is a warning and the default.
- ``autolog()`` refuses a value it uses (ConfigError naming it), and only when it uses it: the OTLP exporter's values
  only when it builds that exporter.
- What the SDK reports itself and falls back on is the SDK's: the tests below pin what SDK 1.45 does with each value
  we leave to it (a warning and its default) and with each value we still refuse (it raises, or logs a secret).
- ``ag2-otel doctor`` reports all of it.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import sys
import textwrap

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from ag2_otel.config import ENV_VARS, ConfigError, load_settings
from tests.test_instrumentation_basic import CALCULATOR_SCRIPT, CALCULATOR_TREE, make_calculator_agents
from tests.test_zero_code_mlflow import clean_env, run_app

SECRET = "SECRET-hdr-5d1e"

# one bad value for every OTEL_* variable of the table, and for the ones the OTel API itself reads at instrument time
BAD_OTEL_VALUES = {
    "OTEL_SDK_DISABLED": "yes please",
    "OTEL_SERVICE_NAME": "",
    "OTEL_TRACES_EXPORTER": "zipkin,none",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:99999",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://",
    "OTEL_EXPORTER_OTLP_HEADERS": f'authorization=Bearer "{SECRET}"',
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS": f"Bearer {SECRET}",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "10s",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "-1",
    "OTEL_EXPORTER_OTLP_COMPRESSION": "deflate",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "zstd",
    "OTEL_TRACES_SAMPLER": "nonsense",
    "OTEL_TRACES_SAMPLER_ARG": "lots",
    "OTEL_BSP_SCHEDULE_DELAY": "5s",
    "OTEL_BSP_MAX_QUEUE_SIZE": "-1",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096",
    "OTEL_BSP_EXPORT_TIMEOUT": "never",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "everything",
    # not in the table: read by the OTel API / SDK / instrumentation base class, never by ag2-otel
    "OTEL_PYTHON_METER_PROVIDER": "no_such_meter_provider",  # the API raises loading it (no meter_provider given)
    "OTEL_SEMCONV_STABILITY_OPT_IN": ",,gen_ai_latest_experimental/dup,??",
    "OTEL_RESOURCE_ATTRIBUTES": "=,=,novalue",
    "OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.pem",
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "-3",
}
assert {v.name for v in ENV_VARS if v.name.startswith("OTEL_")} <= set(BAD_OTEL_VALUES), "a new OTEL_* row needs a case"


@pytest.fixture
def clean_otel_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("OTEL_", "AG2_OTEL_")):
            monkeypatch.delenv(name)
    return monkeypatch


def _chat_spans(instrument, span_exporter, **kwargs):
    instrumentor = instrument(capture_content=None, **kwargs)  # None: the content mode comes from the environment
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    user.initiate_chat(assistant, message="What is (44232 + 13312 / (232 - 32)) * 5?", max_turns=10)
    return instrumentor, span_exporter.get_finished_spans()


# --- instrument(): never raises over the environment ------------------------------------------------------------------
# An SDK TracerProvider's get_tracer() loads the global meter provider for the SDK's own metrics: with an unloadable
# OTEL_PYTHON_METER_PROVIDER it raises for every instrumentation. instrument() goes on (said once); no spans then.
UNTRACEABLE = {"OTEL_PYTHON_METER_PROVIDER"}


@pytest.mark.parametrize("name", sorted(BAD_OTEL_VALUES))
def test_instrument_survives_any_bad_otel_value(name, clean_otel_env, instrument, span_exporter, caplog):
    clean_otel_env.setenv(name, BAD_OTEL_VALUES[name])
    with caplog.at_level(logging.WARNING, logger="ag2_otel"):
        _, spans = _chat_spans(instrument, span_exporter)  # raises nothing, and the chat runs to its end
    assert len(spans) == (0 if name in UNTRACEABLE else len(CALCULATOR_TREE))
    if name in UNTRACEABLE:
        assert "check OTEL_PYTHON_TRACER_PROVIDER and OTEL_PYTHON_METER_PROVIDER" in caplog.text


def test_instrument_survives_all_bad_otel_values_at_once(clean_otel_env, instrument, span_exporter, caplog):
    for name, value in BAD_OTEL_VALUES.items():
        clean_otel_env.setenv(name, value)
    clean_otel_env.setenv("AG2_OTEL_MAX_MESSAGES", "ten")
    clean_otel_env.setenv("AG2_OTEL_MAX_CONTENT_CHARS", "0")
    with caplog.at_level(logging.WARNING):
        instrumentor, spans = _chat_spans(instrument, span_exporter)
    assert len(spans) == 0  # OTEL_PYTHON_METER_PROVIDER (see UNTRACEABLE); the chat ran to its end all the same
    assert (instrumentor.telemetry.limits.max_content_chars, instrumentor.telemetry.limits.max_messages) == (16384, 20)
    assert not instrumentor.telemetry.content  # the instrumentor's default: no content
    assert SECRET not in caplog.text


@pytest.mark.parametrize("name, value, default", [
    ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "everything", "NO_CONTENT"),
    ("AG2_OTEL_MAX_MESSAGES", "ten", "20"),
    ("AG2_OTEL_MAX_CONTENT_CHARS", "-1", "16384"),
])
def test_a_bad_value_instrument_reads_is_a_warning_and_the_default(name, value, default, clean_otel_env, instrument,
                                                                  span_exporter, caplog):
    clean_otel_env.setenv(name, value)
    with caplog.at_level(logging.WARNING, logger="ag2_otel"):
        instrumentor, spans = _chat_spans(instrument, span_exporter)
    assert len(spans) == len(CALCULATOR_TREE)
    warning = next(r.getMessage() for r in caplog.records if name in r.getMessage())
    assert f"{name}={value!r} is not valid" in warning and f"using the default ({default})" in warning
    telemetry = instrumentor.telemetry
    assert {"NO_CONTENT": not telemetry.content, "20": telemetry.limits.max_messages == 20,
            "16384": telemetry.limits.max_content_chars == 16384}[default]


def test_a_good_value_instrument_reads_still_applies(clean_otel_env, instrument, span_exporter):
    clean_otel_env.setenv("AG2_OTEL_MAX_MESSAGES", "2")
    clean_otel_env.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    instrumentor, spans = _chat_spans(instrument, span_exporter)
    assert instrumentor.telemetry.limits.max_messages == 2 and instrumentor.telemetry.content_on_spans
    last_chat = [s for s in spans if s.name.startswith("chat ")][-1]
    assert last_chat.attributes["ag2.input.messages.omitted"] > 0  # only the last 2 of the input recorded


def test_a_capture_content_argument_in_code_is_still_checked(instrument):
    with pytest.raises(ConfigError, match="capture_content argument='everything' is not valid"):
        instrument(capture_content="everything")


INSTRUMENT_APP = """
import sys
from ag2_otel import Ag2Instrumentor
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.test_instrumentation_basic import CALCULATOR_SCRIPT, make_calculator_agents

Ag2Instrumentor().instrument()  # no provider: the API tries OTEL_PYTHON_TRACER_PROVIDER and raises inside
user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
user.initiate_chat(assistant, message="first", max_turns=10)
print("FIRST_CHAT_DONE", flush=True)

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)  # set later: our tracer follows it
user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
user.initiate_chat(assistant, message="second", max_turns=10)
print("SPANS", len(exporter.get_finished_spans()), flush=True)
"""


def test_instrument_without_a_provider_survives_an_unloadable_global_provider(tmp_path):
    (tmp_path / "app.py").write_text(textwrap.dedent(INSTRUMENT_APP))
    run = run_app([sys.executable, "app.py"], clean_env(tmp_path, OTEL_PYTHON_TRACER_PROVIDER="no_such_provider"),
                  tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "FIRST_CHAT_DONE" in run.stdout
    assert f"SPANS {len(CALCULATOR_TREE)}" in run.stdout
    assert run.stderr.count("check OTEL_PYTHON_TRACER_PROVIDER") == 1  # said once, why the first chat was untraced


# --- what SDK 1.45 does with each value: left to it, or refused by autolog() ------------------------------------------
def _sdk_grpc_exporter():
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    OTLPSpanExporter().shutdown()


def _sdk_http_exporter():
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    OTLPSpanExporter().shutdown()


def _sdk_provider():
    return TracerProvider(shutdown_on_exit=False)


def _sdk_batch_processor():
    BatchSpanProcessor(ConsoleSpanExporter()).shutdown()


HTTP = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
LEFT_TO_THE_SDK = [  # the SDK warns (saying what) and goes on with its default: autolog() accepts these
    ({"OTEL_TRACES_SAMPLER": "nonsense"}, _sdk_provider, "Couldn't recognize sampler nonsense"),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "lots"}, _sdk_provider,
     "Could not convert TRACES_SAMPLER_ARG to float. Using default rate 1.0"),
    ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"}, _sdk_provider,
     "Using default rate 1.0"),
    ({"OTEL_BSP_SCHEDULE_DELAY": "5s"}, _sdk_batch_processor,
     "Unable to parse value for OTEL_BSP_SCHEDULE_DELAY as integer. Defaulting to 5000"),
    ({"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, _sdk_batch_processor, "OTEL_BSP_MAX_QUEUE_SIZE as integer"),
    ({**HTTP, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "br"}, _sdk_http_exporter, "Unsupported compression type: br"),
    ({**HTTP, "OTEL_EXPORTER_OTLP_TIMEOUT": "10s"}, _sdk_http_exporter,
     "Invalid timeout value '10s', using default of 10 seconds"),
]


@pytest.mark.parametrize("env, build, said", LEFT_TO_THE_SDK)
def test_values_left_to_the_sdk_it_reports_and_falls_back(env, build, said, clean_otel_env, caplog):
    for name, value in env.items():
        clean_otel_env.setenv(name, value)
    with caplog.at_level(logging.WARNING, logger="opentelemetry"):
        built = build()  # no exception
    assert said in caplog.text
    if build is _sdk_provider:
        assert "1.0" in built.sampler.get_description() or "AlwaysOn" in built.sampler.get_description()
    load_settings({"OTEL_TRACES_EXPORTER": "otlp", **env})  # autolog() does not repeat the check


REFUSED_BY_AUTOLOG = [  # the SDK raises building the exporter / processor: autolog() says it first, naming the variable
    ({"OTEL_EXPORTER_OTLP_COMPRESSION": "deflate"}, _sdk_grpc_exporter, "InvalidCompressionValueException",
     "OTEL_EXPORTER_OTLP_COMPRESSION='deflate' is not valid; use one of: gzip (with protocol grpc)"),
    ({"OTEL_EXPORTER_OTLP_TIMEOUT": "10s"}, _sdk_grpc_exporter, "could not convert string to float",
     "OTEL_EXPORTER_OTLP_TIMEOUT='10s' is not valid; use a positive number of seconds"),
    ({"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": ""}, _sdk_grpc_exporter, "could not convert string to float",
     "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT is set but empty"),
    ({"OTEL_EXPORTER_OTLP_COMPRESSION": ""}, _sdk_grpc_exporter, "InvalidCompressionValueException",
     "OTEL_EXPORTER_OTLP_COMPRESSION is set but empty"),
    ({"OTEL_BSP_MAX_QUEUE_SIZE": "-1"}, _sdk_batch_processor, "max_queue_size must be a positive integer",
     "OTEL_BSP_MAX_QUEUE_SIZE='-1' is not valid; use a positive integer"),
    ({"OTEL_BSP_MAX_QUEUE_SIZE": "100"}, _sdk_batch_processor, "max_export_batch_size must be less than or equal",
     "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=512 is larger than OTEL_BSP_MAX_QUEUE_SIZE=100"),
]


@pytest.mark.parametrize("env, build, sdk_error, ours", REFUSED_BY_AUTOLOG)
def test_values_the_sdk_raises_on_are_refused_first_with_a_clear_message(env, build, sdk_error, ours, clean_otel_env):
    for name, value in env.items():
        clean_otel_env.setenv(name, value)
    with pytest.raises(Exception) as raised:
        build()
    assert sdk_error in f"{type(raised.value).__name__}: {raised.value}"
    with pytest.raises(ConfigError) as refused:
        load_settings({"OTEL_TRACES_EXPORTER": "otlp", **env})
    assert ours in str(refused.value)


@pytest.mark.parametrize("build", [_sdk_grpc_exporter, _sdk_http_exporter])
@pytest.mark.parametrize("headers", [f'authorization=Bearer "{SECRET}"', f"Bearer {SECRET}", f"a=1;b={SECRET}"])
def test_a_header_the_sdk_cannot_parse_is_refused_because_the_sdk_logs_its_secret(build, headers, clean_otel_env,
                                                                                   caplog):
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_HEADERS", headers)
    with caplog.at_level(logging.WARNING, logger="opentelemetry"):
        build()
    assert SECRET in caplog.text  # what the SDK would put in the application's log
    with pytest.raises(ConfigError) as refused:
        load_settings({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": headers})
    assert "OTEL_EXPORTER_OTLP_HEADERS is not valid (value hidden)" in str(refused.value)
    assert SECRET not in str(refused.value)


# --- autolog(): refuses what it uses, only when it uses it ------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


AUTOLOG_APP = """
import ag2_otel
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.test_instrumentation_basic import CALCULATOR_SCRIPT, make_calculator_agents

exporter = InMemorySpanExporter()
if MINE:
    provider = TracerProvider()
    ag2_otel.autolog(tracer_provider=provider)
else:
    ag2_otel.autolog()
    provider = trace.get_tracer_provider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
user.initiate_chat(assistant, message="What is (44232 + 13312 / (232 - 32)) * 5?", max_turns=10)
print("SPANS", len(exporter.get_finished_spans()), flush=True)
"""


def _autolog(tmp_path, mine: bool, **env):
    (tmp_path / "app.py").write_text(f"MINE = {mine}\n" + textwrap.dedent(AUTOLOG_APP))
    return run_app([sys.executable, "app.py"], clean_env(tmp_path, AG2_OTEL_MLFLOW="false", **env), tmp_path)


def test_autolog_refuses_an_exporter_value_it_would_build_the_exporter_with(tmp_path):
    run = _autolog(tmp_path, mine=False, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{_closed_port()}",
                   OTEL_EXPORTER_OTLP_COMPRESSION="deflate")
    assert run.returncode != 0
    assert ("ConfigError: OTEL_EXPORTER_OTLP_COMPRESSION='deflate' is not valid; use one of: gzip (with protocol grpc)"
            in run.stderr)


def test_autolog_with_your_provider_does_not_read_the_exporter_values(tmp_path):
    # the same environment: the exporter is yours to build, autolog() adds its processors to your provider only
    run = _autolog(tmp_path, mine=True, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{_closed_port()}",
                   OTEL_EXPORTER_OTLP_COMPRESSION="deflate", OTEL_BSP_MAX_QUEUE_SIZE="-1",
                   OTEL_EXPORTER_OTLP_HEADERS=f"Bearer {SECRET}")
    assert run.returncode == 0, run.stderr[-4000:]
    assert f"SPANS {len(CALCULATOR_TREE)}" in run.stdout
    assert SECRET not in run.stdout + run.stderr


def test_autolog_leaves_the_samplers_values_to_the_sdk(tmp_path):
    run = _autolog(tmp_path, mine=False, OTEL_TRACES_SAMPLER="nonsense", OTEL_TRACES_SAMPLER_ARG="lots",
                   OTEL_BSP_SCHEDULE_DELAY="5s")
    assert run.returncode == 0, run.stderr[-4000:]
    assert "Couldn't recognize sampler nonsense" in run.stderr  # the SDK's warning; it samples everything instead
    assert f"SPANS {len(CALCULATOR_TREE)}" in run.stdout


# --- doctor: reports everything ---------------------------------------------------------------------------------------
def test_doctor_reports_every_problem_ours_and_the_sdks(clean_otel_env, tmp_path):
    from ag2_otel import doctor

    clean_otel_env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name, value in {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",
                        "OTEL_EXPORTER_OTLP_COMPRESSION": "deflate", "AG2_OTEL_MAX_MESSAGES": "ten",
                        "OTEL_EXPORTER_OTLP_HEADERS": f'authorization=Bearer "{SECRET}"',
                        "OTEL_TRACES_SAMPLER": "nonsense", "OTEL_BSP_SCHEDULE_DELAY": "5s",
                        "AG2_OTEL_MAX_MESAGES": "5", "OTEL_RESOURCE_ATTRIBUTES": "team=ml"}.items():
        clean_otel_env.setenv(name, value)
    out, err = io.StringIO(), io.StringIO()
    assert doctor.run(out, err) == 2  # autolog() would refuse some of these
    out, err = out.getvalue(), err.getvalue()
    for refused in ("OTEL_EXPORTER_OTLP_COMPRESSION='deflate' is not valid", "AG2_OTEL_MAX_MESSAGES='ten' is not valid",
                    "OTEL_EXPORTER_OTLP_HEADERS is not valid (value hidden)"):
        assert f"ag2-otel: configuration error: {refused}" in err
        assert refused in out  # and in the list to fix
    assert "the OpenTelemetry SDK says: Couldn't recognize sampler nonsense." in out
    assert "Unable to parse value for OTEL_BSP_SCHEDULE_DELAY as integer" in out
    assert "AG2_OTEL_MAX_MESAGES is not a variable ag2-otel reads" in out  # a typo
    assert "OTEL_RESOURCE_ATTRIBUTES" in out and "team=ml" not in out  # listed, value not shown (not ours to mask)
    assert "does not answer" in out  # the endpoint check still runs
    assert "(SDK; autolog checks)" in out and "(SDK)" in out  # who reads each variable
    assert SECRET not in out + err


def test_doctor_exit_status_1_for_what_only_the_sdk_reports(clean_otel_env, tmp_path):
    from ag2_otel import doctor

    clean_otel_env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    clean_otel_env.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    clean_otel_env.setenv("OTEL_TRACES_SAMPLER_ARG", "lots")
    out, err = io.StringIO(), io.StringIO()
    assert doctor.run(out, err) == 1
    assert err.getvalue() == ""
    assert "Could not convert TRACES_SAMPLER_ARG to float" in out.getvalue()

    clean_otel_env.delenv("OTEL_TRACES_SAMPLER")
    clean_otel_env.delenv("OTEL_TRACES_SAMPLER_ARG")
    out = io.StringIO()
    assert doctor.run(out, io.StringIO()) == 0, out.getvalue()
