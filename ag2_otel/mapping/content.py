"""Content → bounded JSON strings in the GenAI message shape. Pure functions: no AG2 import, no I/O.

Everything a user passes around can end up here: bytes, images, sets, objects whose ``__repr__`` raises, cycles,
10 MB strings, lone surrogates, NaN. Rendering never raises, never walks more than a fixed budget of the value (so a
huge history costs no more than a small one) and marks every cut with a visible ``…[truncated …]`` marker.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

TRUNCATION_MARK = "…[truncated {n} chars]"
DEFAULT_MAX_CHARS = 16384
_MAX_DEPTH = 12
_MAX_ITEMS = 200


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
        self.left -= min(len(text), limit) + 8  # +8: every value costs something, so deep junk still terminates
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
    """A JSON-safe copy of ``value`` within ``budget`` characters of string content."""
    if isinstance(budget, int):
        budget = _Budget(budget)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else budget.take(str(value))
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return budget.take(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<bytes len={len(value)}>"
    if budget.left <= 0:
        return "…[truncated]"
    if _depth >= _MAX_DEPTH:
        return "…[truncated: nested deeper than %d]" % _MAX_DEPTH
    path = _path if _path is not None else set()
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
                out[key if isinstance(key, str) else budget.take(_describe(key))] = render(item, budget, _depth + 1, path)
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
                items.append(render(item, budget, _depth + 1, path))
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


def _parse_arguments(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except (ValueError, RecursionError):
            return arguments
    return arguments


def _content_parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, list):  # OpenAI multimodal content
        parts = []
        for item in content:
            if isinstance(item, Mapping) and item.get("type") == "text":
                parts.append({"type": "text", "content": item.get("text")})
            elif isinstance(item, Mapping) and item.get("type") == "image_url":
                url = (item.get("image_url") or {}).get("url") if isinstance(item.get("image_url"), Mapping) else None
                if isinstance(url, str) and url.startswith("data:"):
                    parts.append({"type": "blob", "modality": "image", "mime_type": url[5:].split(";", 1)[0],
                                  "content": f"<inline data len={len(url)}>"})
                else:
                    parts.append({"type": "uri", "modality": "image", "uri": url})
            else:
                parts.append({"type": "text", "content": item})
        return parts
    return [{"type": "text", "content": content}]


def genai_message(message: Any, default_role: str = "user") -> dict[str, Any]:
    """One AG2 message (a str or an OpenAI-style dict) in the GenAI shape ``{"role", "name"?, "parts"}``."""
    try:
        return _genai_message(message, default_role)
    except Exception:  # a malformed message is kept as text rather than lost
        return {"role": default_role, "parts": [{"type": "text", "content": message}]}


def _genai_message(message: Any, default_role: str) -> dict[str, Any]:
    if not isinstance(message, Mapping):
        return {"role": default_role, "parts": _content_parts(message)}
    role = message.get("role")
    role = role if isinstance(role, str) and role else default_role
    out: dict[str, Any] = {"role": _ROLE.get(role, role)}
    if message.get("name"):
        out["name"] = message["name"]
    parts: list[dict[str, Any]] = []
    if out["role"] == "tool" and message.get("tool_call_id") is not None:
        parts.append({"type": "tool_call_response", "id": message.get("tool_call_id"),
                      "response": message.get("content")})
    else:
        parts.extend(_content_parts(message.get("content")))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {} if isinstance(call, Mapping) else {}
        parts.append({"type": "tool_call", "id": call.get("id") if isinstance(call, Mapping) else None,
                      "name": function.get("name"), "arguments": _parse_arguments(function.get("arguments"))})
    if isinstance(message.get("function_call"), Mapping):
        call = message["function_call"]
        parts.append({"type": "tool_call", "id": None, "name": call.get("name"),
                      "arguments": _parse_arguments(call.get("arguments"))})
    for response in message.get("tool_responses") or ():
        if isinstance(response, Mapping):
            parts.append({"type": "tool_call_response", "id": response.get("tool_call_id"),
                          "response": response.get("content")})
    out["parts"] = parts
    return out


def messages_json(messages: Sequence[Any], max_chars: int, default_role: str = "user") -> str:
    """A list of AG2 messages as a bounded GenAI ``gen_ai.input.messages`` JSON string."""
    return to_json([genai_message(m, default_role) for m in messages], max_chars)


def output_messages_json(messages: Sequence[Any], finish_reasons: Sequence[str | None], max_chars: int) -> str:
    """Model/agent replies as ``gen_ai.output.messages``: assistant messages with their finish reason."""
    out = []
    for message, reason in zip(messages, finish_reasons):
        converted = genai_message(message, "assistant")
        converted["finish_reason"] = reason or "stop"
        out.append(converted)
    return to_json(out, max_chars)
