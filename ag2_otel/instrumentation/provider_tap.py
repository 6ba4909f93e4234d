"""Usage details AG2's model clients drop, read from the provider SDK call AG2 makes inside our ``chat`` span.

AG2 builds its own ``ChatCompletion`` in two places where the provider said more than AG2 keeps:

- ``OpenAIClient`` with ``stream=True`` consumes the SDK's chunk stream and keeps only prompt/completion tokens; the
  provider's last chunk also carries ``prompt_tokens_details.cached_tokens`` and
  ``completion_tokens_details.reasoning_tokens``.
- ``AnthropicClient`` (plain and streamed) keeps ``input_tokens``/``output_tokens`` only: ``cache_read_input_tokens``,
  ``cache_creation_input_tokens`` and ``output_tokens_details.thinking_tokens`` are lost, and Anthropic's
  ``input_tokens`` leaves out the cached part (the GenAI conventions and MLflow count it in).

So, only while one of our ``chat`` spans is open (:data:`CURRENT`, set by ``llm_wrapper``), the SDK method AG2 calls
is observed: a whole response is read after the call, a stream is handed to AG2 as a transparent proxy that reads
each item as AG2 pulls it. What AG2 receives is never changed and our code never raises into it. The span then gets,
from the last SDK call of that model call, only what the response AG2 returned lacks (:func:`fill`): nothing is ever
counted twice, and a response that already has the details (OpenAI without streaming) is left as it is.

:data:`TAPS` is the one table of SDK methods; :func:`install` / :func:`uninstall` are run by the instrumentor with
the AG2 targets. A missing SDK (or method) is skipped.
"""

from __future__ import annotations

import contextvars
import importlib
import logging
from dataclasses import dataclass
from typing import Any, Callable

import wrapt

from .. import semconv as k
from .content import to_text
from ..mapping.counts import token_count
from .telemetry import log_once

logger = logging.getLogger("ag2_otel")

Usage = dict  # "input", "output", "cache_read", "cache_creation", "reasoning": int; "input_excludes_cache": bool;
# "model": str (the model the provider says served the call); "thinking": {choice index: str}, the reasoning text
# AG2 drops or folds into the answer (content, recorded only with content capture on)


class Tap:
    """What the provider SDK reported during one of our chat spans: the usage of the latest SDK call."""

    __slots__ = ("usage",)

    def __init__(self) -> None:
        self.usage: Usage | None = None

    def new_call(self) -> Usage:
        self.usage = {}  # a retry or a second client in the config list: only the last call's numbers count
        return self.usage


# The open chat span's tap (set by llm_wrapper for the span's lifetime); None: not inside our chat span.
CURRENT: contextvars.ContextVar[Tap | None] = contextvars.ContextVar("ag2_otel_provider_tap", default=None)


# --- reading usage from SDK objects (attribute or mapping access; anything that is not a count is ignored) ----------

def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _numbers(**values: Any) -> Usage:
    return {key: n for key, value in values.items() if (n := token_count(value)) is not None}


def openai_usage(usage: Any) -> Usage:
    """An OpenAI ``CompletionUsage`` (``prompt_tokens`` already includes the cached tokens)."""
    return _numbers(input=_get(usage, "prompt_tokens"), output=_get(usage, "completion_tokens"),
                    cache_read=_get(_get(usage, "prompt_tokens_details"), "cached_tokens"),
                    reasoning=_get(_get(usage, "completion_tokens_details"), "reasoning_tokens"))


def openai_chunk(chunk: Any) -> Usage | None:
    """One ``ChatCompletionChunk``: with ``stream_options.include_usage`` the last one has ``usage``; the
    ``reasoning_content`` deltas OpenAI-compatible reasoning servers send (AG2's stream assembly drops them)."""
    usage = _get(chunk, "usage")
    found = openai_usage(usage) if usage is not None else {}
    for choice in _get(chunk, "choices") or ():
        piece = _get(_get(choice, "delta"), "reasoning_content")
        index = _get(choice, "index")
        if isinstance(piece, str) and piece and isinstance(index, int):
            found.setdefault("thinking", {})[index] = piece
    return found or None


def anthropic_usage(usage: Any) -> Usage:
    """An Anthropic ``Usage`` / ``MessageDeltaUsage``: ``input_tokens`` excludes the cache reads and writes."""
    found = _numbers(input=_get(usage, "input_tokens"), output=_get(usage, "output_tokens"),
                     cache_read=_get(usage, "cache_read_input_tokens"),
                     cache_creation=_get(usage, "cache_creation_input_tokens"),
                     reasoning=_get(_get(usage, "output_tokens_details"), "thinking_tokens"))
    found["input_excludes_cache"] = True
    return found


def anthropic_message(message: Any) -> Usage | None:
    """A ``Message`` (or the one ``message_start`` carries): its usage, and the model that served it (AG2 reports the
    request's model name instead)."""
    usage = _get(message, "usage")
    found = anthropic_usage(usage) if usage is not None else {}
    model = _get(message, "model")
    if isinstance(model, str) and model:
        found["model"] = model
    # thinking blocks joined as AG2 joins them before it folds them into the answer's text
    thinking = [_get(block, "thinking") for block in _get(message, "content") or () if _get(block, "type") == "thinking"]
    thinking = [t for t in thinking if isinstance(t, str)]
    if thinking:
        found["thinking"] = {0: "\n\n".join(thinking)}
    return found or None


def anthropic_event(event: Any) -> Usage | None:
    """A raw stream event: ``message_start`` carries the input side, ``message_delta`` the (cumulative) output."""
    kind = _get(event, "type")
    if kind == "message_start":
        return anthropic_message(_get(event, "message"))
    if kind == "message_delta":
        usage = _get(event, "usage")
        return anthropic_usage(usage) if usage is not None else None
    if kind == "content_block_start" and _get(_get(event, "content_block"), "type") == "thinking":
        return {"thinking_block": True}
    if kind == "content_block_delta" and _get(_get(event, "delta"), "type") == "thinking_delta":
        piece = _get(_get(event, "delta"), "thinking")
        return {"thinking": {0: piece}} if isinstance(piece, str) and piece else None
    return None


@dataclass(frozen=True)
class SdkCall:
    module: str
    attribute: str  # "Class.method"
    response: Callable[[Any], Usage | None] | None  # usage of a whole response; None: AG2 keeps that response whole
    event: Callable[[Any], Usage | None] | None  # usage carried by one item of a stream (stream=True)


TAPS: tuple[SdkCall, ...] = (
    # OpenAIClient (also Azure, and every OpenAI-compatible api_type built on it); without streaming AG2 returns the
    # SDK's ChatCompletion itself, which extract.llm_response reads whole
    SdkCall("openai.resources.chat.completions", "Completions.create", None, openai_chunk),
    # AnthropicClient (also Bedrock / Vertex, which use the same Messages resource)
    SdkCall("anthropic.resources.messages", "Messages.create", anthropic_message, anthropic_event),
    SdkCall("anthropic.resources.messages", "Messages.parse", anthropic_message, None),  # native structured output
)


# --- the wrapper ------------------------------------------------------------------------------------------------------

_MAX_THINKING_CHARS = 1 << 20  # what one model call's reasoning text may hold in memory


def _note(record: Usage, found: Usage | None) -> None:
    if not found:
        return
    pieces = found.pop("thinking", None)
    if found.pop("thinking_block", False) and record.get("thinking", {}).get(0):
        pieces = {0: "\n\n"}  # a second thinking block: AG2 joins blocks with a blank line
    record.update(found)  # later stream items win (Anthropic's message_delta has the final output count)
    if pieces:
        thinking = record.setdefault("thinking", {})
        for index, piece in pieces.items():
            text = thinking.get(index, "")
            if len(text) < _MAX_THINKING_CHARS:
                thinking[index] = text + piece


class _TappedStream(wrapt.ObjectProxy):
    """The SDK's stream as AG2 sees it (same class, attributes, iteration and context manager); each item AG2 pulls is
    read for usage on the way."""

    def __init__(self, wrapped: Any, read: Callable[[Any], Usage | None], record: Usage) -> None:
        super().__init__(wrapped)
        self._self_read, self._self_record = read, record

    def _self_look(self, item: Any) -> None:
        try:
            _note(self._self_record, self._self_read(item))
        except Exception as exc:  # noqa: BLE001 - never break the stream AG2 is reading
            log_once("provider tap: stream item", exc)

    def __iter__(self):
        for item in self.__wrapped__:
            self._self_look(item)
            yield item

    def __next__(self):
        item = next(self.__wrapped__)
        self._self_look(item)
        return item

    def __enter__(self):
        self.__wrapped__.__enter__()
        return self  # `with stream as s:` iterates the proxy, not the bare stream

    def __exit__(self, *exc_info: Any) -> Any:
        return self.__wrapped__.__exit__(*exc_info)


def _wrapper(call: SdkCall, switch: dict) -> Callable:
    def wrapper(wrapped, instance, args, kwargs):
        tap = CURRENT.get() if switch["on"] else None
        if tap is None:
            return wrapped(*args, **kwargs)
        result = wrapped(*args, **kwargs)  # the SDK's exceptions pass through untouched
        try:
            record = tap.new_call()
            if kwargs.get("stream") is True:
                if call.event is not None:
                    return _TappedStream(result, call.event, record)
            elif call.response is not None:
                _note(record, call.response(result))
        except Exception as exc:  # noqa: BLE001
            log_once(f"provider tap: {call.attribute}", exc)
        return result

    return wrapper


# --- merging into the chat span's attributes --------------------------------------------------------------------------

def thinking(tap: Tap | None) -> dict[int, str]:
    """The reasoning text per choice the provider streamed or returned during the call (may be empty)."""
    usage = tap.usage if tap is not None else None
    return dict(usage.get("thinking") or {}) if usage else {}


_MAX_MODEL_CHARS = 256
_DETAILS = ((k.USAGE_CACHE_READ_INPUT_TOKENS, "cache_read"), (k.USAGE_CACHE_CREATION_INPUT_TOKENS, "cache_creation"),
            (k.USAGE_REASONING_OUTPUT_TOKENS, "reasoning"))


def fill(attrs: dict[str, Any], tap: Tap | None, request_model: Any = None) -> None:
    """Add to a chat span's result attributes what the provider reported and AG2's response lacks.

    - cache read / cache creation / reasoning tokens: only when the response has none;
    - input and output tokens: only when the response has no usage at all;
    - Anthropic's input count: the conventions (and MLflow) count cached input in ``input_tokens``; AG2 copies
      Anthropic's uncached count. When the response's count is exactly that uncached number, the cache reads and
      writes are added to it; any other number is the response's own and is kept;
    - the response model: when AG2 reported the request's model name and the provider named the model it served.
    """
    usage = tap.usage if tap is not None else None
    if not usage:
        return
    served = usage.get("model")
    if served and request_model is not None and attrs.get(k.RESPONSE_MODEL, request_model) == request_model:
        attrs[k.RESPONSE_MODEL] = to_text(served, _MAX_MODEL_CHARS)
    for key, name in _DETAILS:
        if key not in attrs and usage.get(name):
            attrs[key] = usage[name]
    raw_input = usage.get("input")
    if k.USAGE_INPUT_TOKENS not in attrs and k.USAGE_OUTPUT_TOKENS not in attrs:
        if "output" in usage:
            attrs[k.USAGE_OUTPUT_TOKENS] = usage["output"]
        if raw_input is not None:
            attrs[k.USAGE_INPUT_TOKENS] = raw_input
    if usage.get("input_excludes_cache") and raw_input is not None and attrs.get(k.USAGE_INPUT_TOKENS) == raw_input:
        attrs[k.USAGE_INPUT_TOKENS] = raw_input + usage.get("cache_read", 0) + usage.get("cache_creation", 0)


# --- install / uninstall ------------------------------------------------------------------------------------------------

def _resolve(call: SdkCall) -> tuple[Any, str] | None:
    try:
        owner: Any = importlib.import_module(call.module)
    except Exception:  # noqa: BLE001 - the SDK is not installed (or fails to import): nothing to tap
        return None
    *path, name = call.attribute.split(".")
    for part in path:
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    return (owner, name) if name in vars(owner) else None


# (owner, name) -> (our FunctionWrapper, its on/off switch, the function it replaced). Kept across uninstall when
# another instrumentation (opentelemetry-instrumentation-openai-v2, ...) wrapped the method on top of ours: we cannot
# take ours out of their chain, so it is switched off instead, and switched back on by the next install.
_installed: dict[tuple[Any, str], tuple[Any, dict, Any]] = {}


def _chain_holds(function: Any, ours: Any) -> bool:
    for _ in range(16):  # wrappers of wrappers: follow __wrapped__ a bounded number of steps
        if function is ours:
            return True
        function = getattr(function, "__wrapped__", None)
        if function is None:
            return False
    return False


def install() -> list[str]:
    """Wrap every SDK method of :data:`TAPS` that is installed; returns the ones wrapped ("module:Class.method")."""
    done = []
    for call in TAPS:
        resolved = _resolve(call)
        if resolved is None:
            logger.debug("ag2-otel: %s.%s not installed; no provider tap", call.module, call.attribute)
            continue
        owner, name = resolved
        current = vars(owner)[name]
        previous = _installed.get((owner, name))
        if previous is not None and _chain_holds(current, previous[0]):
            previous[1]["on"] = True  # still in the chain (under someone else's wrapper): switch it back on
        else:
            switch = {"on": True}
            wrapt.wrap_function_wrapper(owner, name, _wrapper(call, switch))
            _installed[(owner, name)] = (vars(owner)[name], switch, current)
        done.append(f"{call.module}:{call.attribute}")
    return done


def uninstall() -> None:
    for (owner, name), (ours, switch, original) in list(_installed.items()):
        switch["on"] = False
        if vars(owner).get(name) is ours:  # ours is the outermost: put the original back
            setattr(owner, name, original)
            del _installed[(owner, name)]
