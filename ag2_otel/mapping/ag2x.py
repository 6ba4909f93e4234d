"""The AG2 1.x rules of the MLflow mapping (pure: no ``ag2`` import, no I/O).

AG2 1.x (``import ag2``) records its own spans through ``ag2.middleware.TelemetryMiddleware``; they differ from the
classic ones (and from the GenAI conventions) in a few places, each handled here:

* ``record_usage {kind}`` spans (``ag2.span.type=usage``) are AG2's accounting records. A ``model_call`` one repeats
  the tokens of the ``chat`` span beside it: never counted. Every other kind (``subtask`` rollups, ``compaction``,
  ``aggregation``, live sessions) is spend no ``chat`` span reports, so it is counted as a model call's usage, except a
  ``subtask`` rollup whose worker agent (``ag2.usage.label``) is traced in the same trace: its own ``chat`` spans are
  counted already (ag2-otel traces every agent, sub-task workers included). MLflow span type: ``LLM``.
* Cache and reasoning tokens come as ``gen_ai.usage.cache_read_input_tokens``, ``cache_creation_input_tokens`` and
  ``thinking_tokens`` (the conventions: ``cache_read.input_tokens``, ``cache_creation.input_tokens``,
  ``reasoning.output_tokens``): read as fallbacks.
* Messages are OpenAI-shaped (``{"role", "content", "tool_calls"?}``), not GenAI parts; the root ``invoke_agent`` span
  carries none. An agent span without inputs/outputs gets them from its model calls: the user's message(s) that
  started the turn (the trailing user messages of the first call's input) and the last call's output.
* Hub spans of ``ag2.network`` (envelope, channel, task, agent lifetime/events) are orchestration: ``CHAIN``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

SPAN_TYPE_KEY = "ag2.span.type"
USAGE_SPAN = "usage"  # record_usage {kind}
USAGE_KIND = "ag2.usage.kind"
USAGE_LABEL = "ag2.usage.label"  # the worker agent's name on a subtask rollup
KIND_MODEL_CALL = "model_call"
KIND_SUBTASK = "subtask"
AGENT_NAME = "gen_ai.agent.name"
AGENT_SPAN = "agent"
HUMAN_REPLY = "ag2.human_input.response"  # classic ag2-otel: ag2.human_input.reply

CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read_input_tokens"
CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation_input_tokens"
THINKING_TOKENS = "gen_ai.usage.thinking_tokens"

LLM = "LLM"  # MLflow's span type for an LLM's spend that is not a chat call
CHAIN = "CHAIN"
_HUB_SPANS = frozenset({"envelope", "channel", "task", "agent_lifetime", "agent_event"})


def span_type(attrs: Mapping[str, Any]) -> str | None:
    """The MLflow span type of a 1.x-only span, or None (the common rules apply)."""
    kind = attrs.get(SPAN_TYPE_KEY)
    if kind == USAGE_SPAN:
        return LLM
    if kind in _HUB_SPANS:
        return CHAIN
    return None


def is_usage_record(attrs: Mapping[str, Any]) -> bool:
    return attrs.get(SPAN_TYPE_KEY) == USAGE_SPAN


def traced_agents(all_attrs: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """Names of the agents that have their own agent span in the trace."""
    return frozenset(str(a[AGENT_NAME]) for a in all_attrs
                     if a.get(SPAN_TYPE_KEY) == AGENT_SPAN and a.get(AGENT_NAME))


def counts_usage(attrs: Mapping[str, Any], agents: frozenset[str] = frozenset()) -> bool:
    """A ``record_usage`` span whose tokens no ``chat`` span of the trace reports (see the module docstring)."""
    if not is_usage_record(attrs):
        return False
    kind = attrs.get(USAGE_KIND)
    if kind == KIND_MODEL_CALL:
        return False
    return not (kind == KIND_SUBTASK and attrs.get(USAGE_LABEL) in agents)


def message_text(message: Mapping[str, Any]) -> str | None:
    """The text of one OpenAI-shaped message (``content`` a string, or a list of ``{"type": "text", "text"}``)."""
    content = message.get("content")
    if isinstance(content, str) and content:
        return content
    for part in content if isinstance(content, list) else ():
        if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
            return part["text"]
    return None


def turn_request(first_call_inputs: Any) -> list[Any] | None:
    """The user's message(s) that started a turn: the trailing user messages of its first model call's input (the
    history before them belongs to earlier turns on the same stream)."""
    if not isinstance(first_call_inputs, list):
        return None
    tail: list[Any] = []
    for message in reversed(first_call_inputs):
        if not (isinstance(message, dict) and message.get("role") == "user"):
            break
        tail.append(message)
    return list(reversed(tail)) or None
