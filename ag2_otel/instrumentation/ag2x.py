"""AG2 1.x (``import ag2``): every agent traced through AG2's own ``TelemetryMiddleware``. The only module that imports
``ag2``.

How it is attached, and why this way. AG2 1.x has no global switch for middleware: a ``TelemetryMiddleware`` goes on
one agent (``Agent(middleware=...)``, ``add_middleware``, a ``Plugin`` given to the constructor) or on one call
(``agent.ask(..., middleware=[...])``, the way AG2's own eval runner installs telemetry). The agent-level means reach
only agents built after ``autolog()`` (a wrapped constructor) and would have to be taken back out of the user's agents
on ``autolog(disable=True)``. The per-call parameter reaches every agent, created before or after, and changes none of
them; every entry point (``Agent.ask`` / ``run`` / ``resume``, ``AgentReply.ask`` / ``run``, sub-task workers, the A2A
and ACP executors) hands its per-call middleware to one method, ``Agent._turn_scope(additional_middleware=...)``. So
that one method is wrapped, and it adds our ``TelemetryMiddleware`` to the per-call middleware, exactly as a user
passing ``middleware=[TelemetryMiddleware(...)]`` to each call would. Not when the agent or the call already has a
``TelemetryMiddleware`` (the user's own): one agent is never traced twice.

Per call it sets: ``agent_name`` (else AG2 names every agent span ``invoke_agent unknown``), the content switch
(``capture_content``: spans only; 1.x has no event mode), ``max_tool_result_chars`` from AG2_OTEL_MAX_CONTENT_CHARS,
and ``gen_ai.conversation.id`` = the stream's id through ``span_attributes`` (a follow-up ``reply.ask`` and a stream
the user passes in keep one session; a fresh ``agent.ask`` is a new stream). The redaction hook runs on every content
attribute before it reaches a span: the middleware gets a tracer whose spans pass those attributes through
:meth:`Telemetry.scrub`.

Known limit: per-call middleware is the innermost, so usage an agent-level middleware reports after its turn
(knowledge compaction/aggregation) ends after the agent span and is exported over OTLP but arrives too late for the
MLflow trace.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import wrapt

from .telemetry import Telemetry, log_once

logger = logging.getLogger("ag2_otel")

CONVERSATION_ID = "gen_ai.conversation.id"
# the attributes TelemetryMiddleware records only with capture_content (AG2 1.2)
CONTENT_KEYS = frozenset({"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.call.arguments",
                          "gen_ai.tool.call.result", "ag2.human_input.prompt", "ag2.human_input.response"})


class _ScrubbedSpan(wrapt.ObjectProxy):
    """A span whose content attributes go through the redaction hook first (None drops the attribute)."""

    def __init__(self, span: Any, telemetry: Telemetry) -> None:
        super().__init__(span)
        self._self_telemetry = telemetry

    def set_attribute(self, key: str, value: Any) -> None:
        if key in CONTENT_KEYS:
            scrubbed = self._self_telemetry.scrub({key: value}) or {}
            if key not in scrubbed:
                return
            value = scrubbed[key]
        self.__wrapped__.set_attribute(key, value)

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)


class _ScrubbingTracer:
    def __init__(self, tracer: Any, telemetry: Telemetry) -> None:
        self._tracer = tracer
        self._telemetry = telemetry

    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        return _ScrubbedSpan(self._tracer.start_span(*args, **kwargs), self._telemetry)

    @contextlib.contextmanager
    def start_as_current_span(self, *args: Any, **kwargs: Any):
        with self._tracer.start_as_current_span(*args, **kwargs) as span:
            yield _ScrubbedSpan(span, self._telemetry)


class _ScrubbingTracerProvider:
    """What TelemetryMiddleware gets as its ``tracer_provider`` when a redaction hook is set."""

    def __init__(self, provider: Any, telemetry: Telemetry) -> None:
        self._provider = provider
        self._telemetry = telemetry

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        from opentelemetry import trace

        provider = self._provider or trace.get_tracer_provider()
        return _ScrubbingTracer(provider.get_tracer(*args, **kwargs), self._telemetry)


def _has_telemetry(agent: Any, kwargs: dict[str, Any], telemetry_cls: type) -> bool:
    """The agent (its own middleware, its constructor's plugins) or this call (middleware, plugins) has one already."""
    own = [getattr(entry, "middleware", entry) for entry in getattr(agent, "middleware", ())]
    call = list(kwargs.get("additional_middleware") or ())
    for plugin in kwargs.get("additional_plugins") or ():
        call.extend(getattr(plugin, "_middleware", ()))
    return any(isinstance(m, telemetry_cls) for m in (*own, *call))


class Ag2xInstrumentation:
    """Wraps ``ag2.agent.Agent._turn_scope`` (see the module docstring); ``uninstall()`` restores it."""

    def __init__(self, telemetry: Telemetry, tracer_provider: Any = None) -> None:
        self.telemetry = telemetry
        self.tracer_provider = tracer_provider
        self._original: Any = None
        self._owner: Any = None

    def install(self) -> bool:
        try:
            from ag2.agent import Agent
            from ag2.middleware import TelemetryMiddleware
        except Exception as exc:  # noqa: BLE001 - ag2 without its tracing extra, or a broken install
            logger.warning("ag2-otel: AG2 1.x is installed but its TelemetryMiddleware cannot be imported (%s: %s); "
                           "install it with: pip install 'ag2[tracing]'. AG2 1.x is not traced.",
                           type(exc).__name__, exc)
            return False
        if "_turn_scope" not in vars(Agent):
            logger.warning("ag2-otel: this AG2 1.x has no Agent._turn_scope (the method every turn goes through in "
                           "1.0 → 1.2); AG2 1.x is not traced.")
            return False
        self._telemetry_cls = TelemetryMiddleware
        self._owner, self._original = Agent, vars(Agent)["_turn_scope"]
        wrapt.wrap_function_wrapper(Agent, "_turn_scope", self._turn_scope)
        return True

    def uninstall(self) -> None:
        if self._owner is not None:
            self._owner._turn_scope = self._original
            self._owner = self._original = None

    def _turn_scope(self, wrapped: Any, instance: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        try:
            middleware = self._middleware_for(instance, kwargs)
        except Exception as exc:  # noqa: BLE001 - never break the agent: this turn runs untraced
            log_once("AG2 1.x TelemetryMiddleware setup", exc)
            middleware = None
        if middleware is not None:
            kwargs = {**kwargs, "additional_middleware": (*(kwargs.get("additional_middleware") or ()), middleware)}
        return wrapped(*args, **kwargs)

    def _middleware_for(self, agent: Any, kwargs: dict[str, Any]) -> Any:
        if _has_telemetry(agent, kwargs, self._telemetry_cls):
            return None
        tel = self.telemetry
        provider = _ScrubbingTracerProvider(self.tracer_provider, tel) if tel.redact else self.tracer_provider
        attributes = {}
        stream = getattr(kwargs.get("context"), "stream", None)
        if getattr(stream, "id", None) is not None:
            attributes[CONVERSATION_ID] = str(stream.id)
        return self._telemetry_cls(
            tracer_provider=provider,
            capture_content=tel.content_on_spans,
            max_tool_result_chars=tel.limits.max_content_chars,
            agent_name=str(getattr(agent, "name", None) or "unknown"),
            span_attributes=attributes,
        )
