"""Content → bounded JSON strings in the GenAI message shape. Pure functions: no AG2 import, no I/O.

Everything a user passes around can end up here: bytes, images, sets, objects whose ``__repr__`` raises, cycles,
10 MB strings, lone surrogates, NaN. Rendering never raises, never walks more than a fixed budget of the value (so a
huge history costs no more than a small one) and marks every cut with a visible ``…[truncated …]`` marker.

The budget bounds the WORK of one rendering, not only its output: every value visited costs ``_COST`` characters on
top of its text (a string its length, a dict key its length, a number, None, a bool or a container just ``_COST``),
and once the budget is spent nothing more is visited. So a list of 200 references to one shared list nested 4 deep
(200**4 leaves) costs no more than a string of ``max_chars`` characters.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

TRUNCATION_MARK = "…[truncated {n} chars]"
DEFAULT_MAX_CHARS = 16384
_MAX_DEPTH = 12
_MAX_ITEMS = 200
_COST = 8  # what every value visited costs from the budget, on top of its text


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + TRUNCATION_MARK.format(n=len(text) - limit)


class _Budget:
    """Characters left for strings in one rendered value; shared across the whole walk."""

    __slots__ = ("left",)

    def __init__(self, chars: int) -> None:
        self.left = chars

    def take(self, text: str) -> str:
        limit = max(self.left, 0)
        self.left -= min(len(text), limit) + _COST  # every value costs something, so deep junk still terminates
        return _truncate(text, limit)


def _describe(value: Any) -> str:
    """A short, safe stand-in for an object JSON cannot hold."""
    kind = type(value).__name__
    size = getattr(value, "size", None)
    if isinstance(size, tuple) and kind.endswith("Image") or kind.endswith("ImageFile"):
        return f"<image {kind} size={size} mode={getattr(value, 'mode', '?')}>"
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not break the trace
        return f"<unrepresentable {kind}>"
    if not isinstance(text, str):
        return f"<unrepresentable {kind}>"
    return text


def render(value: Any, budget: _Budget | int = DEFAULT_MAX_CHARS, _depth: int = 0, _path: set[int] | None = None) -> Any:
    """A JSON-safe copy of ``value`` within ``budget`` characters (string content plus ``_COST`` per value)."""
    if isinstance(budget, int):
        budget = _Budget(budget)
    return _render(value, budget, _depth, _path if _path is not None else set())


_INT_MIN, _INT_MAX = -(2**63), 2**63


def _render(value: Any, budget: _Budget, depth: int, path: set[int]) -> Any:
    """render() proper. Exact builtin types (what AG2 messages are made of) take fast paths with the same result as
    the general path below; anything else (subclasses, pydantic models, objects) goes the general way."""
    kind = type(value)
    if kind is str:
        left = budget.left
        if len(value) <= left:  # fits: what _Budget.take does without a cut
            budget.left = left - len(value) - _COST
            return value
        return budget.take(value)
    if kind is dict:
        return _render_dict(value, budget, depth, path)
    if kind is list:
        return _render_list(value, budget, depth, path)
    if value is None or kind is bool:
        budget.left -= _COST
        return value
    if kind is int and _INT_MIN <= value < _INT_MAX:
        budget.left -= _COST
        return value
    return _render_other(value, budget, depth, path)


def _render_dict(value: dict, budget: _Budget, depth: int, path: set[int]) -> Any:
    if budget.left <= 0:
        return "…[truncated]"
    budget.left -= _COST
    if depth >= _MAX_DEPTH:
        return "…[truncated: nested deeper than %d]" % _MAX_DEPTH
    ident = id(value)
    if ident in path:
        return "<cycle>"
    path.add(ident)
    try:
        out: dict[str, Any] = {}
        i = 0
        for key, item in value.items():
            if i >= _MAX_ITEMS or budget.left <= 0:
                out["…"] = f"[{len(value) - i} more items]"
                break
            # the key first (charged and cut like a value), then the value
            if type(key) is str and len(key) <= budget.left:
                budget.left -= len(key) + _COST
            else:
                key = budget.take(key if isinstance(key, str) else _describe(key))
            if type(item) is str and len(item) <= budget.left:
                budget.left -= len(item) + _COST
                out[key] = item
            else:
                out[key] = _render(item, budget, depth + 1, path)
            i += 1
        return out
    except Exception:
        return budget.take(_describe(value))
    finally:
        path.discard(ident)


def _render_list(value: list, budget: _Budget, depth: int, path: set[int]) -> Any:
    if budget.left <= 0:
        return "…[truncated]"
    budget.left -= _COST
    if depth >= _MAX_DEPTH:
        return "…[truncated: nested deeper than %d]" % _MAX_DEPTH
    ident = id(value)
    if ident in path:
        return "<cycle>"
    path.add(ident)
    try:
        items = []
        i = 0
        for item in value:
            if i >= _MAX_ITEMS or budget.left <= 0:
                items.append(f"…[{len(value) - i} more items]")
                break
            if type(item) is str and len(item) <= budget.left:
                budget.left -= len(item) + _COST
                items.append(item)
            else:
                items.append(_render(item, budget, depth + 1, path))
            i += 1
        return items
    except Exception:
        return budget.take(_describe(value))
    finally:
        path.discard(ident)


def _render_other(value: Any, budget: _Budget, _depth: int, path: set[int]) -> Any:
    """The general path: every type, subclasses included."""
    if value is None or isinstance(value, bool):
        budget.left -= _COST
        return value
    if isinstance(value, int):
        if _INT_MIN <= value < _INT_MAX:
            budget.left -= _COST
            return value
        return budget.take(str(value))
    if isinstance(value, float):
        budget.left -= _COST
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return budget.take(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        budget.left -= _COST
        return f"<bytes len={len(value)}>"
    if budget.left <= 0:
        return "…[truncated]"
    budget.left -= _COST
    if _depth >= _MAX_DEPTH:
        return "…[truncated: nested deeper than %d]" % _MAX_DEPTH
    if id(value) in path:
        return "<cycle>"
    if hasattr(value, "model_dump") and not isinstance(value, type):
        try:
            value = value.model_dump()
        except Exception:
            return budget.take(_describe(value))
    if isinstance(value, Mapping):
        path.add(id(value))
        try:
            out: dict[str, Any] = {}
            for i, (key, item) in enumerate(value.items()):
                if i >= _MAX_ITEMS or budget.left <= 0:
                    out["…"] = f"[{len(value) - i} more items]"
                    break
                key = budget.take(key if isinstance(key, str) else _describe(key))  # keys cost and are cut too
                out[key] = _render(item, budget, _depth + 1, path)
            return out
        except Exception:
            return budget.take(_describe(value))
        finally:
            path.discard(id(value))
    if isinstance(value, (Sequence, set, frozenset)):
        path.add(id(value))
        try:
            items = []
            for i, item in enumerate(value):
                if i >= _MAX_ITEMS or budget.left <= 0:
                    items.append(f"…[{len(value) - i} more items]")
                    break
                items.append(_render(item, budget, _depth + 1, path))
            return items
        except Exception:
            return budget.take(_describe(value))
        finally:
            path.discard(id(value))
    return budget.take(_describe(value))


_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid_utf8(text: str) -> str:
    """OTLP protobuf needs valid UTF-8: lone surrogates become U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


def to_json(value: Any, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """``value`` as a JSON string with at most about ``max_chars`` characters of string content."""
    try:
        return _valid_utf8(json.dumps(render(value, max_chars), ensure_ascii=False, separators=(",", ":")))
    except Exception:  # render() is total; this is belt and braces
        return json.dumps(f"<unrenderable {type(value).__name__}>")


def to_text(value: Any, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """A plain string attribute value: strings as they are (truncated), anything else as bounded JSON."""
    if isinstance(value, str):
        return _valid_utf8(_truncate(value, max_chars))
    return to_json(value, max_chars)


# --- AG2 message dicts → GenAI message shape ------------------------------------------------------------------------

_ROLE = {"function": "tool"}


def parse_arguments(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except (ValueError, RecursionError):
            return arguments
    return arguments


def _text_of(value: Any) -> str:
    """A text part's content is a string (the conventions' schema): anything else becomes bounded JSON text."""
    return value if isinstance(value, str) else to_text(value)


def _content_parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}] if content else []
    if isinstance(content, list):  # OpenAI multimodal content
        parts = []
        for item in content:
            if isinstance(item, Mapping) and item.get("type") in ("text", "output_text", "input_text"):
                parts.append({"type": "text", "content": _text_of(item.get("text"))})
            elif isinstance(item, Mapping) and item.get("type") == "image_url":
                url = (item.get("image_url") or {}).get("url") if isinstance(item.get("image_url"), Mapping) else None
                if isinstance(url, str) and url.startswith("data:"):
                    parts.append({"type": "blob", "modality": "image", "mime_type": url[5:].split(";", 1)[0],
                                  "content": f"<inline data len={len(url)}>"})
                else:
                    parts.append({"type": "uri", "modality": "image", "uri": _text_of(url)})
            else:
                parts.append({"type": "text", "content": _text_of(item)})
        return parts
    return [{"type": "text", "content": _text_of(content)}]


def plain_message(message: Any) -> Any:
    """An SDK message object (pydantic: openai's ChatCompletionMessage, AG2's copy of it; a SimpleNamespace from a
    custom client) as the plain dict it stands for; dicts and strings as they are. Never raises."""
    if isinstance(message, (Mapping, str)) or message is None:
        return message
    dump = getattr(message, "model_dump", None)
    if callable(dump) and not isinstance(message, type):
        try:
            dumped = dump(exclude_none=True)
        except Exception:  # noqa: BLE001 - a hostile model object: kept as text below
            return message
        return dumped if isinstance(dumped, Mapping) else message
    if type(message).__name__ == "SimpleNamespace":
        return {key: plain_message(value) if key != "content" else value for key, value in vars(message).items()}
    return message


def _tool_call_part(call: Any) -> dict[str, Any]:
    call = plain_message(call)
    if not isinstance(call, Mapping):
        return {"type": "tool_call", "id": None, "name": _text_of(call), "arguments": None}
    function = plain_message(call.get("function")) or {}
    if not isinstance(function, Mapping):
        function = {}
    call_id = call.get("id")
    name = function.get("name")
    return {"type": "tool_call", "id": None if call_id is None else _text_of(call_id),
            "name": "" if name is None else _text_of(name), "arguments": parse_arguments(function.get("arguments"))}


def genai_message(message: Any, default_role: str = "user") -> dict[str, Any]:
    """One AG2 message (a str, an OpenAI-style dict, or an SDK message object) in the GenAI shape
    ``{"role", "name"?, "parts"}``."""
    try:
        return _genai_message(plain_message(message), default_role)
    except Exception:  # a malformed message is kept as text rather than lost
        return {"role": default_role, "parts": [{"type": "text", "content": _describe(message)}]}


def _genai_message(message: Any, default_role: str) -> dict[str, Any]:
    if not isinstance(message, Mapping):
        return {"role": default_role, "parts": _content_parts(message)}
    role = message.get("role")
    role = role if isinstance(role, str) and role else default_role
    out: dict[str, Any] = {"role": _ROLE.get(role, role)}
    if message.get("name"):
        out["name"] = _text_of(message["name"])
    parts: list[dict[str, Any]] = []
    # reasoning first, as the model produced it (vLLM/DeepSeek-style servers: reasoning_content; others: reasoning)
    for key in ("reasoning_content", "reasoning"):
        reasoning = message.get(key)
        if isinstance(reasoning, str) and reasoning:
            parts.append({"type": "reasoning", "content": reasoning})
            break
    if out["role"] == "tool" and message.get("tool_call_id") is not None:
        parts.append({"type": "tool_call_response", "id": _text_of(message.get("tool_call_id")),
                      "response": message.get("content")})
    else:
        parts.extend(_content_parts(message.get("content")))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append({"type": "text", "content": refusal})
    for call in message.get("tool_calls") or ():
        parts.append(_tool_call_part(call))
    function_call = plain_message(message.get("function_call"))
    if isinstance(function_call, Mapping):
        parts.append({"type": "tool_call", "id": None, "name": _text_of(function_call.get("name") or ""),
                      "arguments": parse_arguments(function_call.get("arguments"))})
    for response in message.get("tool_responses") or ():
        response = plain_message(response)
        if isinstance(response, Mapping):
            call_id = response.get("tool_call_id")
            parts.append({"type": "tool_call_response", "id": None if call_id is None else _text_of(call_id),
                          "response": response.get("content")})
    out["parts"] = parts
    return out


def messages_json(messages: Sequence[Any], max_chars: int, default_role: str = "user") -> str:
    """A list of AG2 messages as a bounded GenAI ``gen_ai.input.messages`` JSON string."""
    if max_chars > 0:
        try:
            return _messages_json_cached(messages, max_chars, default_role)
        except Exception:  # noqa: BLE001 - the plain path below gives the same answer (or its own fallback)
            pass
    return _shaped_json([genai_message(m, default_role) for m in messages], max_chars, default_role)


# --- keeping the GenAI shape through a cut -----------------------------------------------------------------------------
# The budget may run out inside a message (a 10 MB tool result, a huge id): render() then cuts the dict, dropping its
# remaining keys, or gives a container that was not reached a "…[truncated]" string. The conventions' schemas require
# some keys (a message's role and parts, a part's type and its payload key): those come back with a cut marker, so a
# truncated message is still a valid message. Only rendered copies are touched, never the caller's values.

CUT = "…[truncated]"
_PART_REQUIRED: dict[str, tuple[str, ...]] = {
    "text": ("content",), "reasoning": ("content",), "tool_call": ("name",), "tool_call_response": ("response",),
    "blob": ("modality", "content"), "uri": ("modality", "uri"), "file": ("modality", "file_id"),
}


def _repair_parts(parts: Any) -> list[Any]:
    if not isinstance(parts, list):
        return []
    for part in parts:
        if not isinstance(part, dict):
            continue  # the "…[N more items]" marker at the end of a cut list
        part.pop("…", None)
        if not isinstance(part.get("type"), str):
            part["type"] = "text"
        for key in _PART_REQUIRED.get(part["type"], ()):
            if not isinstance(part.get(key), str) and (key != "response" or key not in part):
                part[key] = CUT
    return parts


def _repair_message(message: Any, role: str, output: bool = False) -> Any:
    if not isinstance(message, dict):
        return message
    message.pop("…", None)
    if not isinstance(message.get("role"), str):
        message["role"] = role
    message["parts"] = _repair_parts(message.get("parts"))
    if output and not isinstance(message.get("finish_reason"), str):
        message["finish_reason"] = CUT
    return message


def _shaped_json(messages: list[Any], max_chars: int, role: str, output: bool = False) -> str:
    """``to_json(messages, max_chars)`` with every message kept in the GenAI shape."""
    try:
        rendered = render(messages, max_chars)
        if isinstance(rendered, list):
            rendered = [_repair_message(m, role, output) for m in rendered]
        return _dumps(rendered)
    except Exception:  # render() is total; this is belt and braces
        return json.dumps(f"<unrenderable {type(messages).__name__}>")


# --- the message cache ------------------------------------------------------------------------------------------------
# AG2 sends the same message dicts to the model again on every call (the history grows by reference), and we record
# up to AG2_OTEL_MAX_MESSAGES of them per call: each message's JSON is rendered once and reused while the message
# is unchanged. An entry holds a reference to the message (so its id() cannot be reused while the entry lives) and a
# snapshot of its value, compared with ``==`` on every hit (dicts are mutable: AG2 pops keys, hooks edit messages).
# Only messages made of exact dict/list/str/None are cached (for those, ``==`` equal means the same rendering); any
# number, bool, model object, subclass, cycle or oversized message is rendered every time, as before.
#
# The cached fragment is exactly what the shared-budget rendering of the whole list produces for that message when
# the budget left before it exceeds the message's cost (the budget it consumes): then no string is cut and no
# container is cut short, whatever the budget was. A message whose rendering was cut is never cached.

_CACHE_ENTRIES = 256
_SNAPSHOT_NODES = 512  # containers + strings in one cached message
_SNAPSHOT_CHARS = 65536  # string characters in one cached message (bounds the memory an entry keeps alive)
_cache: dict[tuple[int, str], tuple[Any, Any, str, int]] = {}  # (id, role) -> (message, snapshot, fragment, cost)
_cache_lock = threading.Lock()


class _NotCacheable(Exception):
    pass


def _snapshot(value: Any) -> Any:
    """A copy of ``value``'s containers sharing its strings; _NotCacheable unless exact dict/list/str/None only."""
    budget = [_SNAPSHOT_NODES, _SNAPSHOT_CHARS]

    def copy(item: Any, depth: int) -> Any:
        kind = type(item)
        budget[0] -= 1
        if budget[0] < 0 or depth > _MAX_DEPTH:
            raise _NotCacheable
        if kind is str:
            budget[1] -= len(item)
            if budget[1] < 0:
                raise _NotCacheable
            return item
        if item is None:
            return None
        if kind is dict:
            out = {}
            for key, sub in item.items():
                if type(key) is not str:
                    raise _NotCacheable
                out[key] = copy(sub, depth + 1)
            return out
        if kind is list:
            return [copy(sub, depth + 1) for sub in item]
        raise _NotCacheable

    return copy(value, 0)


def _dumps(rendered: Any) -> str:
    return _valid_utf8(json.dumps(rendered, ensure_ascii=False, separators=(",", ":")))


def _messages_json_cached(messages: Sequence[Any], max_chars: int, default_role: str) -> str:
    """messages_json() with per-message fragments from the cache: the same string as
    ``to_json([genai_message(m, default_role) for m in messages], max_chars)``."""
    budget = _Budget(max_chars - _COST)  # max_chars > 0: what _render_list charges for the list itself
    cache = _cache
    fragments = []
    total = len(messages)
    for i, message in enumerate(messages):
        if i >= _MAX_ITEMS or budget.left <= 0:  # as render() cuts the list
            fragments.append(_dumps(f"…[{total - i} more items]"))
            break
        key = (id(message), default_role)
        entry = cache.get(key)
        if entry is not None and entry[0] is message and entry[3] < budget.left and message == entry[1]:
            fragments.append(entry[2])
            budget.left -= entry[3]
            continue
        left = budget.left
        fragment = _dumps(_repair_message(_render(genai_message(message, default_role), budget, 1, set()), default_role))
        fragments.append(fragment)
        cost = left - budget.left
        if cost < left:  # nothing was cut: the fragment holds for any budget above its cost
            try:
                snapshot = _snapshot(message)
            except _NotCacheable:
                continue
            with _cache_lock:
                cache.pop(key, None)
                cache[key] = (message, snapshot, fragment, cost)
                while len(cache) > _CACHE_ENTRIES:
                    del cache[next(iter(cache))]
    return "[" + ",".join(fragments) + "]"


_texts: dict[tuple[int, int], tuple[str, str]] = {}  # (id(text), max_chars) -> (text, JSON)


def instruction_parts(text: Any) -> list[dict[str, Any]]:
    """An agent's system message as ``gen_ai.system_instructions`` parts: a string is one text part, OpenAI-style
    content a list of parts, None none; a text part's content is always a string."""
    if isinstance(text, str):
        return [{"type": "text", "content": text}]
    return _content_parts(text)


def _instructions_json(text: Any, max_chars: int) -> str:
    return _dumps(_repair_parts(render(instruction_parts(text), max_chars)))


def instructions_json(text: Any, max_chars: int) -> str:
    """``gen_ai.system_instructions`` JSON of an agent's system message, within ``max_chars``. Strings are immutable:
    the JSON of one is kept while the entry holds it."""
    if type(text) is not str:
        return _instructions_json(text, max_chars)
    key = (id(text), max_chars)
    entry = _texts.get(key)
    if entry is not None and entry[0] is text:
        return entry[1]
    out = _instructions_json(text, max_chars)
    with _cache_lock:
        if len(_texts) >= 64:
            _texts.clear()
        _texts[key] = (text, out)
    return out


def clear_cache() -> None:
    """Forget every cached rendering (tests; memory)."""
    with _cache_lock:
        _cache.clear()
        _texts.clear()


def output_messages_json(messages: Sequence[Any], finish_reasons: Sequence[str | None], max_chars: int) -> str:
    """Model/agent replies as ``gen_ai.output.messages``: assistant messages with their finish reason."""
    out = []
    for message, reason in zip(messages, finish_reasons):
        converted = genai_message(message, "assistant")
        # the finish reason ahead of the parts: a cut inside the parts never takes it away
        out.append({"role": converted.pop("role"), "finish_reason": _text_of(reason or "stop"), **converted})
    return _shaped_json(out, max_chars, "assistant", output=True)
