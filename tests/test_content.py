"""The content serializer: hostile values are rendered safely and bounded; AG2 messages take the GenAI shape."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from ag2_otel.instrumentation.content import TRUNCATION_MARK, genai_message, messages_json, render, to_json, to_text


class HostileRepr:
    def __repr__(self):
        raise RuntimeError("repr exploded")


class FakeImage:  # quacks like PIL.Image.Image without needing Pillow
    size = (640, 480)
    mode = "RGB"


FakeImage.__name__ = "Image"


def test_hostile_values_render_and_parse():
    cyclic: dict = {"name": "loop"}
    cyclic["self"] = cyclic
    cyclic_list: list = [1]
    cyclic_list.append(cyclic_list)
    nested: dict = {}
    cursor = nested
    for _ in range(500):
        cursor["d"] = {}
        cursor = cursor["d"]
    value = {
        "bytes": b"\x00\xff" * 10,
        "set": {1, 2},
        "hostile": HostileRepr(),
        "cycle": cyclic,
        "cycle_list": cyclic_list,
        "nan": math.nan,
        "inf": -math.inf,
        "surrogate": "a\ud800b",
        "nested": nested,
        "image": FakeImage(),
        "bigint": 10**40,
        7: "non-string key",
    }
    out = json.loads(to_json(value, 4096))
    assert out["bytes"] == "<bytes len=20>"
    assert sorted(out["set"]) == [1, 2]
    assert out["hostile"] == "<unrepresentable HostileRepr>"
    assert out["cycle"]["self"] == "<cycle>"
    assert out["cycle_list"][1] == "<cycle>"
    assert out["nan"] == "nan" and out["inf"] == "-inf"
    assert out["surrogate"] == "a\ufffdb"
    assert "nested deeper" in json.dumps(out["nested"])
    assert out["image"].startswith("<image Image size=(640, 480)")
    assert out["bigint"] == str(10**40)
    assert out["7"] == "non-string key"


def test_ten_megabyte_string_is_cut_with_a_visible_marker():
    big = "x" * 10_000_000
    text = to_text(big, 1000)
    assert len(text) < 1100
    assert text.endswith(TRUNCATION_MARK.format(n=10_000_000 - 1000))
    payload = json.loads(messages_json([{"role": "user", "content": big}] * 50, 2000))
    assert len(json.dumps(payload)) < 10_000  # the budget is for the whole value, not per string


def test_genai_shape_of_ag2_messages():
    tool_call_msg = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": '{"a": 1}'}}]}
    tool_result_msg = {"role": "tool", "content": "2", "tool_responses": [
        {"tool_call_id": "c1", "role": "tool", "content": "2"}]}
    multimodal = {"role": "user", "name": "bob", "content": [
        {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
    assert genai_message("hi") == {"role": "user", "parts": [{"type": "text", "content": "hi"}]}
    assert genai_message(tool_call_msg)["parts"] == [{"type": "tool_call", "id": "c1", "name": "calc", "arguments": {"a": 1}}]
    assert {"type": "tool_call_response", "id": "c1", "response": "2"} in genai_message(tool_result_msg)["parts"]
    converted = genai_message(multimodal)
    assert converted["name"] == "bob"
    assert converted["parts"][1]["type"] == "blob" and "AAAA" not in json.dumps(converted)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5)
    | st.frozensets(st.integers(), max_size=3),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(value=json_values, limit=st.integers(min_value=1, max_value=500))
def test_render_is_total_and_bounded(value, limit):
    text = to_json(value, limit)
    json.loads(text)  # always valid JSON
    text.encode("utf-8")  # always valid UTF-8 (OTLP needs it)
    rendered = render(value, limit)
    strings = []

    def collect(v):
        if isinstance(v, str):
            strings.append(v)
        elif isinstance(v, dict):
            for key, item in v.items():
                collect(item)
        elif isinstance(v, list):
            for item in v:
                collect(item)

    collect(rendered)
    marker_room = 64 * (len(strings) + 1)
    assert sum(len(s) for s in strings) <= limit + marker_room


@settings(max_examples=100, deadline=None)
@given(messages=st.lists(st.one_of(
    st.text(), st.dictionaries(st.sampled_from(["role", "content", "name", "tool_calls", "tool_responses",
                                               "function_call", "tool_call_id"]),
                               st.one_of(st.text(), st.none(), st.lists(st.dictionaries(st.text(max_size=8), st.text(max_size=8)), max_size=3))),
), max_size=5))
def test_message_conversion_never_raises(messages):
    json.loads(messages_json(messages, 300))
