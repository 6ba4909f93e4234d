"""The fast paths of the content serializer give exactly what the plain walk gives.

render() takes fast paths for exact dict/list/str/int, and messages_json() reuses each message's rendering across
calls (AG2 sends the same message dicts to the model on every call). Both are checked against a copy of the plain
algorithm (``reference_*`` below, the serializer as it was before the fast paths): same string, for any value,
budget, message mutation, and across calls that share messages.

The reference charges the budget as the serializer does since every value costs something (so that the budget
bounds the work of a rendering, not only its output): ``_COST`` per number, None, bool, bytes and container (a
container after its ``budget.left <= 0`` check), and dict keys are charged and cut like string values, key first.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ag2_otel.instrumentation import content
from ag2_otel.instrumentation.content import (
    _Budget, _describe, _valid_utf8, genai_message, instructions_json, messages_json, render, to_json)

# --- the plain algorithm (reference) ---------------------------------------------------------------------------------


def reference_render(value: Any, budget: Any = content.DEFAULT_MAX_CHARS, _depth: int = 0, _path: set | None = None):
    if isinstance(budget, int):
        budget = _Budget(budget)
    cost = content._COST
    if value is None or isinstance(value, bool):
        budget.left -= cost
        return value
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            budget.left -= cost
            return value
        return budget.take(str(value))
    if isinstance(value, float):
        budget.left -= cost
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return budget.take(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        budget.left -= cost
        return f"<bytes len={len(value)}>"
    if budget.left <= 0:
        return "…[truncated]"
    budget.left -= cost
    if _depth >= content._MAX_DEPTH:
        return "…[truncated: nested deeper than %d]" % content._MAX_DEPTH
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
            out = {}
            for i, (key, item) in enumerate(value.items()):
                if i >= content._MAX_ITEMS or budget.left <= 0:
                    out["…"] = f"[{len(value) - i} more items]"
                    break
                key = budget.take(key if isinstance(key, str) else _describe(key))
                out[key] = reference_render(item, budget, _depth + 1, path)
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
                if i >= content._MAX_ITEMS or budget.left <= 0:
                    items.append(f"…[{len(value) - i} more items]")
                    break
                items.append(reference_render(item, budget, _depth + 1, path))
            return items
        except Exception:
            return budget.take(_describe(value))
        finally:
            path.discard(id(value))
    return budget.take(_describe(value))


def reference_to_json(value: Any, max_chars: int) -> str:
    try:
        return _valid_utf8(json.dumps(reference_render(value, max_chars), ensure_ascii=False, separators=(",", ":")))
    except Exception:
        return json.dumps(f"<unrenderable {type(value).__name__}>")


def reference_messages_json(messages, max_chars: int, default_role: str = "user") -> str:
    """The plain walk: render the whole list with one budget, then keep each message in the GenAI shape."""
    rendered = reference_render([genai_message(m, default_role) for m in messages], max_chars)
    if isinstance(rendered, list):
        rendered = [content._repair_message(m, default_role) for m in rendered]
    return _valid_utf8(json.dumps(rendered, ensure_ascii=False, separators=(",", ":")))


@pytest.fixture(autouse=True)
def _fresh_cache():
    content.clear_cache()
    yield
    content.clear_cache()


# --- render fast paths ------------------------------------------------------------------------------------------------

class Model:  # quacks like a pydantic model
    def __init__(self, data):
        self.data = data

    def model_dump(self):
        return self.data


class StrKey(str):
    pass


class ListSub(list):
    pass


class DictSub(dict):
    pass


scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63, max_value=2**70)
           | st.floats() | st.text(max_size=40) | st.text(alphabet="ab\ud800", max_size=5) | st.binary(max_size=5))
values = st.recursive(
    scalars,
    lambda children: (st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=4), children, max_size=6)
                      | st.dictionaries(st.integers() | st.none() | st.text(max_size=3), children, max_size=4)
                      | st.lists(children, max_size=3).map(tuple) | st.lists(children, max_size=3).map(ListSub)
                      | st.dictionaries(st.text(max_size=3), children, max_size=3).map(DictSub)
                      | st.builds(Model, children) | st.frozensets(st.integers(), max_size=3)),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(value=values, limit=st.integers(min_value=-5, max_value=400))
def test_render_equals_the_plain_walk(value, limit):
    assert render(value, limit) == reference_render(value, limit)
    assert to_json(value, limit) == reference_to_json(value, limit)


def test_render_fast_paths_keep_the_edge_cases():
    cyclic: dict = {"a": "x"}
    cyclic["self"] = cyclic
    loop: list = ["x"]
    loop.append(loop)
    deep: Any = "leaf"
    for _ in range(30):
        deep = {"d": [deep]}
    wide = {str(i): i for i in range(500)}
    odd_keys = {1: "one", None: "none", (1, 2): "pair", StrKey("k"): "v"}
    for value in (cyclic, loop, deep, wide, list(range(500)), odd_keys, {"big": "x" * 100}, ["x" * 100, "y"],
                  {"n": 2**64, "f": float("nan"), "b": True}, [Model({"a": "b"}), b"raw"]):
        for limit in (1, 7, 8, 9, 50, 99, 100, 101, 1000, 100000):
            assert render(value, limit) == reference_render(value, limit), (value, limit)


# --- the message cache ------------------------------------------------------------------------------------------------

message_values = st.one_of(st.none(), st.text(max_size=30), st.integers(), st.booleans())
messages_strategy = st.lists(st.one_of(
    st.text(max_size=30),
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "tool", "function", "system"])},
        optional={
            "content": st.one_of(st.none(), st.text(max_size=60), st.lists(st.fixed_dictionaries(
                {"type": st.just("text"), "text": st.text(max_size=20)}), max_size=2)),
            "name": st.text(max_size=8),
            "tool_call_id": st.text(max_size=6),
            "tool_calls": st.lists(st.fixed_dictionaries(
                {"id": st.text(max_size=4), "function": st.fixed_dictionaries(
                    {"name": st.text(max_size=6), "arguments": st.sampled_from(['{"a": 1}', "not json", "[1, 2]"])})}),
                max_size=2),
            "tool_responses": st.lists(st.fixed_dictionaries(
                {"tool_call_id": st.text(max_size=4), "role": st.just("tool"), "content": message_values}), max_size=2),
            "extra": message_values,
        }),
), max_size=8)


@settings(max_examples=300, deadline=None)
@given(history=messages_strategy, limits=st.lists(st.integers(min_value=1, max_value=600), min_size=1, max_size=4),
       window=st.integers(min_value=1, max_value=5), role=st.sampled_from(["user", "assistant"]))
def test_messages_json_equals_the_plain_walk_across_calls(history, limits, window, role):
    """Like AG2: the history grows by reference and each call renders its tail, with varying budgets."""
    for limit in limits:
        for end in range(len(history) + 1):
            tail = history[max(0, end - window):end]
            assert messages_json(tail, limit, role) == reference_messages_json(tail, limit, role)


def test_a_repeated_message_is_rendered_once(monkeypatch):
    history = [{"role": "user", "name": "u", "content": f"message {i}"} for i in range(30)]
    calls = []
    real = content.genai_message
    monkeypatch.setattr(content, "genai_message", lambda m, role="user": calls.append(m) or real(m, role))
    for end in range(1, 31):
        tail = history[max(0, end - 20):end]
        assert messages_json(tail, 16384) == reference_messages_json(tail, 16384)
    assert len(calls) == 30  # each message once, although the calls above rendered 445 of them


def test_a_mutated_message_is_rendered_again():
    message = {"role": "user", "content": "before", "tool_calls": [{"id": "c1", "function": {"name": "f"}}]}
    assert "before" in messages_json([message], 1000)
    message["content"] = "after"
    assert messages_json([message], 1000) == reference_messages_json([message], 1000)
    message["tool_calls"][0]["function"]["name"] = "g"  # nested, in place
    assert messages_json([message], 1000) == reference_messages_json([message], 1000)
    message.pop("context", None)
    message["content"] = 42  # not cacheable any more: rendered every time, still right
    assert messages_json([message], 1000) == reference_messages_json([message], 1000)
    message["content"] = ["a", None]
    assert messages_json([message], 1000) == reference_messages_json([message], 1000)
    message["content"] = ("a", None)  # a tuple is not a list: a snapshot never takes one for the other
    assert messages_json([message], 1000) == reference_messages_json([message], 1000)


def test_cached_messages_under_a_tighter_budget_are_cut_as_before():
    history = [{"role": "user", "content": "x" * 50} for _ in range(10)]
    messages_json(history, 100000)  # all cached with their full rendering
    for limit in (1, 30, 58, 59, 60, 61, 100, 200, 333, 500, 1000):
        assert messages_json(history, limit) == reference_messages_json(history, limit), limit


def test_more_messages_than_a_list_may_hold():
    history = [{"role": "user", "content": str(i)} for i in range(250)]
    assert messages_json(history, 100000) == reference_messages_json(history, 100000)
    assert messages_json(history, 100000) == reference_messages_json(history, 100000)


def test_the_cache_is_bounded_and_keeps_no_oversized_message():
    for i in range(content._CACHE_ENTRIES * 3):
        messages_json([{"role": "user", "content": f"m{i}"}], 1000)
    assert len(content._cache) <= content._CACHE_ENTRIES
    content.clear_cache()
    big = {"role": "user", "content": "x" * (content._SNAPSHOT_CHARS + 1)}
    messages_json([big], 10**7)
    assert not content._cache
    cut = {"role": "user", "content": "y" * 500}  # its rendering is cut at this budget: not cached
    messages_json([cut], 100)
    assert not content._cache


def test_uncacheable_messages_are_rendered_every_time():
    cyclic: dict = {"role": "user", "content": "hi"}
    cyclic["self"] = cyclic
    deep: Any = "leaf"
    for _ in range(20):
        deep = [deep]
    for message in (cyclic, {"role": "user", "content": deep}, {"role": "user", "content": Model("m")},
                    {"role": "user", "content": "ok", 3: "int key"}, DictSub(role="user", content="sub")):
        for _ in range(2):
            assert messages_json([message], 1000) == reference_messages_json([message], 1000)


def test_a_recycled_id_never_returns_another_messages_rendering():
    """The cache holds its message, so no other object gets its id while the entry lives; an entry whose message is
    not the one asked for (as after eviction and reuse of the address) is not used."""
    first = {"role": "user", "content": "first"}
    messages_json([first], 1000)
    key = (id(first), "user")
    message, snapshot, fragment, cost = content._cache[key]
    other = {"role": "user", "content": "other"}
    content._cache[(id(other), "user")] = (first, snapshot, fragment, cost)  # a stale entry under other's id
    assert messages_json([other], 1000) == reference_messages_json([other], 1000)


def test_concurrent_calls_agree():
    histories = [[{"role": "user", "content": f"t{t} m{i}"} for i in range(40)] for t in range(4)]
    shared = [{"role": "assistant", "content": f"shared {i}"} for i in range(40)]
    errors = []

    def work(history):
        try:
            for end in range(1, 41):
                tail = (history[:end] + shared[:end])[-20:]
                for limit in (100, 16384):
                    assert messages_json(tail, limit) == reference_messages_json(tail, limit)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(h,)) for h in histories]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def reference_instructions_json(text, limit):
    parts = [{"type": "text", "content": text}] if isinstance(text, str) else content._content_parts(text)
    return _valid_utf8(json.dumps(content._repair_parts(reference_render(parts, limit)), ensure_ascii=False,
                                  separators=(",", ":")))


def test_instructions_json():
    text = "You are a helpful assistant." * 3
    for limit in (5, 60, 16384):
        assert instructions_json(text, limit) == reference_instructions_json(text, limit)
        assert instructions_json(text, limit) == reference_instructions_json(text, limit)  # cached
    assert instructions_json(StrKey("sub"), 100) == to_json([{"type": "text", "content": "sub"}], 100)
    assert instructions_json(None, 100) == "[]"
    assert json.loads(instructions_json([{"type": "text", "text": "hi"}], 100)) == [{"type": "text", "content": "hi"}]
    for i in range(200):
        instructions_json(f"s{i}", 100)
    assert len(content._texts) <= 64


def reference_llm_request_content(config, max_chars, max_messages):
    """extract.llm_request_content as it was: the whole history sliced, every message rendered."""
    from ag2_otel import semconv as k

    attrs = {}
    messages = config.get("messages")
    if isinstance(messages, list) and messages:
        system = [m for m in messages[:1] if isinstance(m, Mapping) and m.get("role") == "system"]
        rest = messages[len(system):]
        tail = rest[-max_messages:]
        if system:
            attrs[k.SYSTEM_INSTRUCTIONS] = reference_instructions_json(system[0].get("content"), max_chars)
        attrs[k.INPUT_MESSAGES] = reference_messages_json(tail, max_chars)
        attrs[k.AG2_INPUT_MESSAGES_TOTAL] = len(rest)
        if len(tail) < len(rest):
            attrs[k.AG2_INPUT_MESSAGES_OMITTED] = len(rest) - len(tail)
    return attrs


@pytest.mark.parametrize("system", [None, "You are terse.", 7])
@pytest.mark.parametrize("max_messages", [-3, 0, 1, 2, 5, 20, 100])
def test_llm_request_content_records_the_same_tail(system, max_messages):
    from ag2_otel.instrumentation.extract import llm_request_content

    history = [{"role": "user" if i % 2 else "assistant", "content": f"m{i}"} for i in range(30)]
    head = [{"role": "system", "content": system}] if system is not None else []
    for end in (1, 2, 5, 21, 30):
        config = {"messages": head + history[:end]}
        for limit in (40, 16384):
            assert llm_request_content(config, limit, max_messages) == reference_llm_request_content(
                config, limit, max_messages)
