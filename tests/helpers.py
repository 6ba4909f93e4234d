"""Helpers for asserting on finished spans (no fixtures here: plain functions over ``ReadableSpan`` lists)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from opentelemetry.sdk.trace import ReadableSpan

from ag2_otel import semconv as k


def _span_id(span: ReadableSpan) -> int:
    return span.context.span_id


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _ordered(spans: Iterable[ReadableSpan]) -> list[ReadableSpan]:
    return sorted(spans, key=lambda s: (s.start_time or 0, s.end_time or 0))


def span_tree(spans: Sequence[ReadableSpan]) -> list[str]:
    """``"  " * depth + span.name`` per span: roots (spans whose parent is not among ``spans``) first, each span's
    children right under it, siblings ordered by start time."""
    spans = list(spans)
    ids = {_span_id(s) for s in spans}
    by_parent: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = _parent_id(span)
        by_parent.setdefault(parent if parent in ids else None, []).append(span)
    lines: list[str] = []

    def walk(span: ReadableSpan, depth: int) -> None:
        lines.append("  " * depth + span.name)
        for child in _ordered(by_parent.get(_span_id(span), [])):
            walk(child, depth + 1)

    for root in _ordered(by_parent.get(None, [])):
        walk(root, 0)
    return lines


def by_name(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    """Spans called ``name``, in start order."""
    return _ordered(s for s in spans if s.name == name)


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    """Direct children of ``parent`` among ``spans``, in start order."""
    pid = _span_id(parent)
    return _ordered(s for s in spans if _parent_id(s) == pid and s.context.trace_id == parent.context.trace_id)


def parent_of(spans: Sequence[ReadableSpan], span: ReadableSpan) -> ReadableSpan | None:
    """The span's parent among ``spans``, or None."""
    pid = _parent_id(span)
    for candidate in spans:
        if _span_id(candidate) == pid and candidate.context.trace_id == span.context.trace_id:
            return candidate
    return None


def assert_conversation_id(attributes: Mapping[str, Any], chat_id: Any) -> None:
    """``gen_ai.conversation.id`` is AG2's own ``ChatResult.chat_id``, never one we invent: ag2 >= 0.10 gives every chat
    an id, and the attribute must equal it; ag2 0.9.x leaves ``chat_id`` None, and the attribute must be absent."""
    from autogen import ChatResult

    if ChatResult().chat_id is not None:  # this AG2 gives every chat an id
        assert attributes[k.CONVERSATION_ID] == str(chat_id)
    else:
        assert chat_id is None and k.CONVERSATION_ID not in attributes, dict(attributes)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    """The span's attributes as a plain dict (sequences as lists)."""
    out: dict[str, Any] = {}
    for key, value in (span.attributes or {}).items():
        out[key] = list(value) if isinstance(value, tuple) else value
    return out
