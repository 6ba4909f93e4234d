"""The state every wrapper shares: tracer, metric instruments, content mode and size limits, and the log-once guard."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

from opentelemetry import metrics, trace

from ..config import ContentCapture
from ..version import __version__

logger = logging.getLogger("ag2_otel")

SCOPE = "ag2_otel"
_DURATION_BUCKETS = [0.01 * 2**i for i in range(14)]  # 0.01 … 81.92 s, as the GenAI conventions advise
_TOKEN_BUCKETS = [4**i for i in range(14)]  # 1, 4, 16, … 67108864

_logged: set[str] = set()
_logged_lock = threading.Lock()


def log_once(site: str, exc: BaseException) -> None:
    """Our own failures are logged once per site and swallowed: tracing must never break the traced program."""
    with _logged_lock:
        if site in _logged:
            return
        _logged.add(site)
    # exc_info off: a traceback could carry message text through local values of frames in other handlers
    logger.warning("ag2-otel: %s failed (%s: %s); tracing goes on without it", site, type(exc).__name__, exc)


@dataclass
class Limits:
    max_content_chars: int = 16384  # one recorded content string (AG2_OTEL_MAX_CONTENT_CHARS)
    max_messages: int = 20  # trailing messages of a model call's input that are recorded (AG2_OTEL_MAX_MESSAGES)

    @classmethod
    def from_env(cls) -> "Limits":
        """AG2_OTEL_MAX_CONTENT_CHARS and AG2_OTEL_MAX_MESSAGES only: a bad value is a warning and the default
        (instrument() never raises over the environment; autolog() refuses a bad value before it gets here)."""
        from ..config import instrumentation_limits

        max_content_chars, max_messages = instrumentation_limits()
        return cls(max_content_chars=max_content_chars, max_messages=max_messages)


def _tracer(tracer_provider):
    """Our tracer. The OTel API raises when it cannot load the provider OTEL_PYTHON_TRACER_PROVIDER names (no provider
    given), and so does an SDK provider's get_tracer for OTEL_PYTHON_METER_PROVIDER (its own metrics): then a proxy
    tracer (spans go to a provider set globally later, if any), said once."""
    try:
        return trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
    except Exception as exc:  # noqa: BLE001 - a bad OTEL_* value must not break instrument()
        log_once("getting a tracer (check OTEL_PYTHON_TRACER_PROVIDER and OTEL_PYTHON_METER_PROVIDER)", exc)
        return trace.ProxyTracerProvider().get_tracer(SCOPE, __version__)


def _meter(meter_provider):
    try:
        return metrics.get_meter(SCOPE, __version__, meter_provider=meter_provider)
    except Exception as exc:  # noqa: BLE001 - the same for OTEL_PYTHON_METER_PROVIDER: no metrics then
        log_once("getting a meter (check OTEL_PYTHON_METER_PROVIDER)", exc)
        return metrics.NoOpMeterProvider().get_meter(SCOPE, __version__)


class Telemetry:
    def __init__(self, tracer_provider=None, meter_provider=None, capture: ContentCapture = ContentCapture.NO_CONTENT,
                 limits: Limits | None = None, redact: Callable[[str, str], str | None] | None = None) -> None:
        self.tracer = _tracer(tracer_provider)
        meter = _meter(meter_provider)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS)
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Measures number of input and output tokens used",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS)
        self.capture = capture
        self.content_on_spans = capture.on_spans
        self.content_on_events = capture.on_events
        self.content = capture.enabled
        self.limits = limits or Limits()
        self.conversation_hook: Callable[[], None] | None = None  # autolog's check, once per conversation start
        self.redact = redact

    def scrub(self, content: dict[str, Any] | None) -> dict[str, Any] | None:
        """The user's redaction hook over every content string, before it reaches a span (so before any export).

        ``redact(key, value)`` returns the text to record, or None to drop the attribute. A hook that raises drops
        the attribute (fail closed: a broken redactor must not let the text through) and is logged once.
        """
        redact = self.redact
        if redact is None or not content:
            return content
        out: dict[str, Any] = {}
        for key, value in content.items():
            if not isinstance(value, str):
                out[key] = value  # counts and flags, not text
                continue
            try:
                new = redact(key, value)
            except Exception as exc:  # noqa: BLE001
                log_once("redact", exc)
                continue
            if new is not None:
                out[key] = new if isinstance(new, str) else str(new)
        return out

    def safe(self, site: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run one of our attribute builders; on failure log once and carry on with nothing."""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - never let our code break the agent
            log_once(site, exc)
            return None

    def wants_content(self, span) -> bool:
        """Content capture is on and the span records what it is given (a sampled-out span does not)."""
        return self.content and span.is_recording()

    def set_with_content(self, span, attributes: dict[str, Any], content: dict[str, Any] | None) -> None:
        """``span.set_attributes(attributes)`` then ``set_content(span, content)``, in one call when both go on the
        span (each set_attributes call takes the span's lock and re-checks its state)."""
        content = self.scrub(content)
        if content and self.content_on_spans and not self.content_on_events:
            span.set_attributes({**attributes, **content})
            return
        if attributes:
            span.set_attributes(attributes)
        if content:
            self.set_content(span, content)

    def set_content(self, span, attributes: dict[str, Any]) -> None:
        """Content attributes go on the span, on a span event, or both, as the capture mode says."""
        attributes = self.scrub(attributes)
        if not attributes:
            return
        if self.content_on_spans:
            span.set_attributes(attributes)
        if self.content_on_events:
            span.add_event("gen_ai.content", attributes)
