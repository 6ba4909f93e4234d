"""``ag2_otel.autolog()``: the one line. Instrument AG2, send every trace to MLflow, and over OTLP when the OTEL_*
variables ask for it.

Where the spans go:
- a TracerProvider the user (or ``opentelemetry-instrument``) already set globally is respected: we add our MLflow
  processor to it and never replace it, nor add a second OTLP exporter to it;
- otherwise we create an SDK TracerProvider (the SDK reads OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and
  OTEL_TRACES_SAMPLER(_ARG) itself), set it globally so the user's own spans can parent ours, add the MLflow
  processor and, when an OTLP endpoint or ``OTEL_TRACES_EXPORTER=otlp`` is set, a BatchSpanProcessor with the SDK's
  own OTLP exporter (it reads endpoint, headers, timeout, compression and certificate from the environment).

Calling ``autolog()`` again never adds a second set of processors; ``autolog(disable=True)`` uninstruments and
switches our processors off (an SDK provider cannot drop a processor, so ours stay attached but idle).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Callable

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

from . import config
from .config import ContentCapture, content_capture
from .instrumentation import Ag2Instrumentor
from .instrumentation.telemetry import Limits
from .package import ag2x_version, check_ag2, warn_unsupported
from .sinks.exit_hook import register_exit_flush

logger = logging.getLogger("ag2_otel")


class _Switchable(SpanProcessor):
    """A processor that can be switched off without removing it from a provider."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner
        self.enabled = True

    def on_start(self, span, parent_context=None) -> None:
        if self.enabled:
            self.inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.enabled:
            self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _State:
    lock = threading.Lock()
    provider: TracerProvider | None = None
    mlflow: _Switchable | None = None
    otlp: _Switchable | None = None
    console: _Switchable | None = None
    created_provider = False
    exit_hook = False
    exit_timeout = config.DEFAULT_EXIT_FLUSH_TIMEOUT


def _sdk_provider() -> tuple[TracerProvider, bool]:
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current, False
    # Our exit hook shuts it down within AG2_OTEL_EXIT_FLUSH_TIMEOUT; the SDK's own atexit shutdown would wait for
    # every pending OTLP batch (retries included) however long an unreachable collector takes.
    provider = TracerProvider(shutdown_on_exit=False)
    trace.set_tracer_provider(provider)
    # set_tracer_provider refuses to override silently: tell whoever comes after which provider won
    if trace.get_tracer_provider() is not provider:
        winner = trace.get_tracer_provider()
        if isinstance(winner, TracerProvider):
            return winner, False
        logger.warning("ag2-otel: a non-SDK global TracerProvider is set (%s); tracing to our own provider",
                       type(winner).__name__)
    return provider, True


def autolog(
    disable: bool = False,
    *,
    capture_content: bool | str | None = None,
    log_traces_to_mlflow: bool | None = None,
    tracer_provider: TracerProvider | None = None,
    meter_provider: Any = None,
    redact: Callable[[str, str], str | None] | None = None,
) -> None:
    """Trace AG2 to MLflow (and OTLP when configured). Safe to call more than once.

    redact: ``redact(key, text) -> text | None``, run on every recorded content string (messages, tool arguments
        and results, code, human input) before it is put on a span, so before any sink sees it; None drops it.

    capture_content: messages and tool arguments/results on spans; on by default here (MLflow users read them),
        else the argument, else OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT.
    log_traces_to_mlflow: None reads AG2_OTEL_MLFLOW (default true).
    tracer_provider: an SDK TracerProvider to add our processors to instead of the global one.
    Raises ConfigError at once for a bad configuration value, naming the variable and the accepted values.
    """
    with _State.lock:
        if disable:
            _disable()
            return
        settings = config.load_settings(otlp_exporter=False)  # the OTLP exporter's variables: only if we build it
        capture = content_capture(capture_content, default=ContentCapture.SPAN_ONLY)
        mlflow_on = settings.mlflow_enabled if log_traces_to_mlflow is None else log_traces_to_mlflow
        if settings.sdk_disabled:
            logger.info("ag2-otel: OTEL_SDK_DISABLED=true; autolog() does nothing")
            return
        support = check_ag2()
        if not support.supported and ag2x_version() is None:  # neither AG2 classic nor 1.x: one warning, untraced
            warn_unsupported(support)
            return
        if mlflow_on:
            _require_mlflow()

        provider, created = (tracer_provider, False) if tracer_provider is not None else _sdk_provider()
        if _State.provider is not None and _State.provider is not provider:
            _disable()  # a different provider this time: ours on the old one stay switched off; start over
            _State.mlflow = _State.otlp = _State.console = None
            _State.created_provider = False
        _State.provider = provider
        _State.created_provider = _State.created_provider or created

        otlp = None
        if _State.created_provider and settings.otlp_enabled and _State.otlp is None:
            # a bad exporter value raises ConfigError here, before any processor is attached
            exporter = config.build_otlp_span_exporter(settings)
            if settings.otlp_mlflow_keys(mlflow_on, _tracking_uri()):
                from .sinks.otlp_mlflow import MlflowKeysExporter

                exporter = MlflowKeysExporter(exporter)  # the trace MLflow gets through a collector (README)
            otlp = _Switchable(BatchSpanProcessor(exporter))

        if mlflow_on:
            _keep_mlflow_writing_to_its_store()
            if _State.mlflow is None:
                from .sinks.mlflow_processor import MlflowSpanProcessor

                _State.mlflow = _Switchable(MlflowSpanProcessor(
                    write_timeout=settings.exit_flush_timeout, writer=settings.mlflow_writer,
                    max_traces=settings.max_traces, retry_timeout=settings.mlflow_retry_timeout))
                provider.add_span_processor(_State.mlflow)
            _State.mlflow.enabled = True
        elif _State.mlflow is not None:
            _State.mlflow.enabled = False

        if _State.created_provider and settings.otlp_enabled:
            if otlp is not None:
                _State.otlp = otlp
                provider.add_span_processor(_State.otlp)
            _State.otlp.enabled = True
        if _State.created_provider and settings.console_enabled and _State.console is None:
            _State.console = _Switchable(SimpleSpanProcessor(ConsoleSpanExporter()))
            provider.add_span_processor(_State.console)
        _State.exit_timeout = settings.exit_flush_timeout
        if not _State.exit_hook:
            # a provider the user owns may never be shut down: unfinished traces must still reach MLflow; ours is
            # created without the SDK's unbounded atexit shutdown
            register_exit_flush(_at_exit)
            _State.exit_hook = True

        _disable_mlflow_ag2_autolog()
        instrumentor = Ag2Instrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()  # re-instrument: the capture mode or provider may have changed
        limits = Limits(max_content_chars=settings.max_content_chars, max_messages=settings.max_messages)
        instrumentor.instrument(tracer_provider=provider, meter_provider=meter_provider, capture_content=capture,
                                redact=redact,
                                limits=limits)
        if instrumentor.telemetry is not None:
            instrumentor.telemetry.conversation_hook = _mlflow_ag2_logger_started_later


MLFLOW_MISSING = (
    "ag2-otel: the MLflow sink is on (AG2_OTEL_MLFLOW, default true) but MLflow is not installed. Install it with "
    "`pip install 'ag2-otel[mlflow]'` (full MLflow: the local sqlite store), or `mlflow-skinny` / `mlflow-tracing` to "
    "write to a tracking server or Databricks; or trace without MLflow: AG2_OTEL_MLFLOW=false (or "
    "autolog(log_traces_to_mlflow=False)).")


def _require_mlflow() -> None:
    """MLflow is an extra: say which one before anything is set up, instead of an ImportError from the sink."""
    import importlib.util

    try:
        found = importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise config.ConfigError(MLFLOW_MISSING)


def _tracking_uri() -> str | None:
    """Where the MLflow sink writes, as far as known now (MLflow is not imported just to ask)."""
    if "mlflow" in sys.modules:
        try:
            import mlflow

            return mlflow.get_tracking_uri()
        except Exception:  # noqa: BLE001 - mlflow-tracing with nothing set raises
            return None
    return os.environ.get("MLFLOW_TRACKING_URI")


def _keep_mlflow_writing_to_its_store() -> None:
    """MLflow sends its own spans over OTLP *instead of* to the tracking store as soon as an OTLP endpoint variable
    is set, and our MLflow sink writes through MLflow's tracer: with OTLP configured, our MLflow traces would vanish
    into the collector. The OTLP sink already exports the original spans, so MLflow keeps its store unless the
    user chose otherwise (MLFLOW_ENABLE_OTLP_EXPORTER or MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT set)."""
    otlp_vars = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    user_chose = ("MLFLOW_ENABLE_OTLP_EXPORTER", "MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT")
    if any(os.environ.get(v) for v in otlp_vars) and not any(v in os.environ for v in user_chose):
        os.environ["MLFLOW_ENABLE_OTLP_EXPORTER"] = "false"
        logger.info("ag2-otel: OTLP endpoint set; MLFLOW_ENABLE_OTLP_EXPORTER=false so MLflow keeps writing traces to "
                    "its tracking store (ag2-otel exports the spans over OTLP itself)")


def _disable() -> None:
    instrumentor = Ag2Instrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    for processor in (_State.mlflow, _State.otlp, _State.console):
        if processor is not None:
            processor.force_flush()
            processor.enabled = False


def _mlflow_ag2_logger_started_later() -> None:
    """At each top-level conversation: mlflow.ag2.autolog() called after us would trace every chat a second time
    (through AG2's runtime logger). Ours wins here too, said once."""
    from autogen import runtime_logging

    if runtime_logging.logging_enabled() and type(runtime_logging.autogen_logger).__name__ == "MlflowAg2Logger":
        _disable_mlflow_ag2_autolog()


def _disable_mlflow_ag2_autolog() -> None:
    """MLflow's own AG2 autolog would write a second, different trace of every chat: ours wins, said once."""
    if "mlflow" not in sys.modules:
        return  # nobody turned it on, and importing MLflow just to check costs seconds
    try:
        from mlflow.utils.autologging_utils import autologging_is_disabled  # public module, stable since MLflow 2

        if autologging_is_disabled("ag2"):
            return
        import mlflow.ag2

        mlflow.ag2.autolog(disable=True)
        logger.warning("ag2-otel: mlflow.ag2.autolog() was on; turned it off so each chat is traced once (by ag2-otel)")
    except Exception as exc:  # noqa: BLE001 - mlflow without the ag2 flavor, or a changed API: nothing to turn off
        logger.debug("ag2-otel: could not check mlflow.ag2 autolog: %s", exc)


def _at_exit() -> None:
    """Interpreter exit, bounded by AG2_OTEL_EXIT_FLUSH_TIMEOUT in all: write traces whose root never ended (marked
    incomplete) and wait for the MLflow writer, then shut our provider down (the last OTLP batches) on a helper thread
    we stop waiting for at the deadline."""
    deadline = time.monotonic() + _State.exit_timeout
    if _State.mlflow is not None and _State.mlflow.enabled:
        _State.mlflow.inner.shutdown()
    if _State.created_provider and _State.provider is not None:
        finish = _State.provider.shutdown
    elif _State.otlp is not None and _State.otlp.enabled:
        finish = _State.otlp.force_flush
    else:
        return
    worker = threading.Thread(target=finish, name="ag2-otel-exit-flush", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive():
        logger.warning("ag2-otel: spans still being exported at exit after AG2_OTEL_EXIT_FLUSH_TIMEOUT=%ss; the rest "
                       "is dropped", _State.exit_timeout)


def flush(timeout: float | None = 30.0) -> bool:
    """Wait until every finished trace is written to MLflow and exported over OTLP. True if all made it in time."""
    ok = True
    millis = int((timeout or 30.0) * 1000)
    for processor in (_State.mlflow, _State.otlp):
        if processor is not None:
            ok = processor.force_flush(millis) and ok
    return ok


def mlflow_processor() -> Any:
    """The MlflowSpanProcessor autolog() installed (for its ``stats``), or None."""
    return _State.mlflow.inner if _State.mlflow is not None else None
