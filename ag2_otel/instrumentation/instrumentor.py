"""``Ag2Instrumentor``: the opentelemetry-instrumentation entry point (``opentelemetry-instrument`` loads it)."""

from __future__ import annotations

import importlib
import logging
from typing import Any, Collection

import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from ..config import ContentCapture, content_capture
from ..package import _instruments, ag2x_version, check_ag2, warn_unsupported
from . import context_carry, provider_tap
from .targets import TARGETS, THREAD_MODULES
from .telemetry import Limits, Telemetry

logger = logging.getLogger("ag2_otel")


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except Exception:  # noqa: BLE001 - optional AG2 extras (docker, jupyter) may fail to import in many ways
        return None


def _resolve(module_name: str, attribute: str) -> tuple[Any, str] | None:
    """(owner, name) for 'Class.method' or 'function' in module, or None if this AG2 version lacks it."""
    owner: Any = _import(module_name)
    if owner is None:
        return None
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    if name not in vars(owner) and isinstance(owner, type):
        owner = _wrapped_event_class(owner)
    if owner is None or name not in vars(owner):  # only what the owner defines itself: never an inherited method
        return None
    return owner, name


def _wrapped_event_class(cls: type) -> type | None:
    """AG2's ``@wrap_event`` publishes a generated pydantic wrapper under the event's name; the event class with the
    ``__init__`` AG2 calls is the type of its ``content`` field."""
    field = getattr(cls, "model_fields", {}).get("content")
    inner = getattr(field, "annotation", None)
    return inner if isinstance(inner, type) else None


class Ag2Instrumentor(BaseInstrumentor):
    """Traces AG2 classic (``autogen``) with OpenTelemetry GenAI spans, and AG2 1.x (``ag2``) through its own
    TelemetryMiddleware (:mod:`.ag2x`); both when both are installed.

    ``Ag2Instrumentor().instrument(tracer_provider=None, meter_provider=None, capture_content=None, redact=None)``;
    capture_content: bool, a mode name (NO_CONTENT, SPAN_ONLY, EVENT_ONLY, SPAN_AND_EVENT) or None for the
    OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT variable; off by default, as in OpenTelemetry.
    redact: ``redact(key, text) -> text | None`` applied to every recorded content string before it is set on a
    span (None drops it; a hook that raises drops it too).
    """

    def __init__(self) -> None:
        super().__init__()
        # BaseInstrumentor is a singleton, and Python runs __init__ again on every Ag2Instrumentor(): keep the state
        if not hasattr(self, "_wrapped"):
            self._wrapped: list[tuple[Any, str, Any]] = []  # (owner, name, original)
            self._thread_modules: list[str] = []
            self.telemetry: Telemetry | None = None
            self._ag2x = None  # Ag2xInstrumentation while AG2 1.x is instrumented

    def instrumentation_dependencies(self) -> Collection[str]:
        # empty: AG2 classic comes under several distribution names; instrument() checks the `autogen` module itself
        return _instruments

    def instrument(self, **kwargs: Any) -> Any:
        """BaseInstrumentor.instrument, once the ``autogen`` module itself is AG2 classic at a supported version
        (whatever distribution installed it), or AG2 1.x is there. Neither: one warning, nothing wrapped, no
        exception."""
        if not self.is_instrumented_by_opentelemetry:
            support = check_ag2()
            if not support.supported and ag2x_version() is None:
                warn_unsupported(support)
                return None
        return super().instrument(**kwargs)

    def _instrument(self, **kwargs: Any) -> None:
        capture = content_capture(kwargs.get("capture_content"), default=ContentCapture.NO_CONTENT)
        tel = Telemetry(
            tracer_provider=kwargs.get("tracer_provider"),
            meter_provider=kwargs.get("meter_provider"),
            capture=capture,
            limits=kwargs.get("limits") or Limits.from_env(),
            redact=kwargs.get("redact"),
        )
        self.telemetry = tel
        if ag2x_version() is not None:
            from .ag2x import Ag2xInstrumentation

            ag2x = Ag2xInstrumentation(tel, kwargs.get("tracer_provider"))
            self._ag2x = ag2x if ag2x.install() else None
        if not check_ag2().supported:
            return  # AG2 1.x only
        for target in TARGETS:
            if target.unless_module is not None and _import(target.unless_module) is not None:
                continue  # a fallback for older AG2 releases; this one reports the same thing itself
            resolved = _resolve(target.module, target.attribute)
            if resolved is None:
                logger.debug("ag2-otel: %s.%s not in this AG2 version; skipped", target.module, target.attribute)
                continue
            owner, name = resolved
            original = vars(owner)[name]
            wrapt.wrap_function_wrapper(owner, name, target.wrapper(tel))
            self._wrapped.append((owner, name, original))
        for module in THREAD_MODULES:
            if context_carry.carry_threads(module):
                self._thread_modules.append(module)
        provider_tap.install()  # the provider SDK calls AG2's clients make inside our chat spans (see provider_tap)

    def _uninstrument(self, **kwargs: Any) -> None:
        if self._ag2x is not None:
            self._ag2x.uninstall()
            self._ag2x = None
        for owner, name, original in reversed(self._wrapped):
            setattr(owner, name, original)
        self._wrapped.clear()
        provider_tap.uninstall()
        for module in self._thread_modules:
            context_carry.release_threads(module)
        self._thread_modules.clear()
        self.telemetry = None
