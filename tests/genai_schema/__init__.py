"""JSON Schema checks for the GenAI content attributes a span records (test helper, not shipped).

``validate_span_content(span)`` checks each of ``gen_ai.input.messages``, ``gen_ai.output.messages``,
``gen_ai.system_instructions`` and ``gen_ai.tool.definitions`` found on a finished span, and the same keys in its
events' attributes, against our own draft 2020-12 schemas in this folder (written from the OpenTelemetry GenAI
schemas; the versions read are cited in each file's ``$comment``). A value must be a string holding JSON that the
attribute's schema accepts.

The schemas accept one ag2-otel extension, the renderer's list-overflow marker (``"…[N more items]"``, appended as
the last item of a list it cut): exactly that string, at most once per array, and (checked here, JSON Schema cannot
say "last") only as the array's last item. Everything else the renderer's budget can leave where a message or part
belongs (a ``"…[truncated]"`` string instead of an object, a dict cut short by a ``"…"`` key so a required field is
missing) is rejected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, relevance
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from referencing import Registry, Resource

HERE = Path(__file__).parent

INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
TOOL_DEFINITIONS = "gen_ai.tool.definitions"

_FILES = {
    INPUT_MESSAGES: "gen-ai-input-messages.schema.json",
    OUTPUT_MESSAGES: "gen-ai-output-messages.schema.json",
    SYSTEM_INSTRUCTIONS: "gen-ai-system-instructions.schema.json",
    TOOL_DEFINITIONS: "gen-ai-tool-definitions.schema.json",
}
CONTENT_KEYS = tuple(_FILES)
OVERFLOW_MARKER = re.compile(r"^…\[[0-9]+ more items\]$")


def _load() -> dict[str, jsonschema.Draft202012Validator]:
    schemas = {key: json.loads((HERE / name).read_text(encoding="utf-8")) for key, name in _FILES.items()}
    registry = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values()
    )
    validators = {}
    for key, schema in schemas.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        validators[key] = jsonschema.Draft202012Validator(schema, registry=registry)
    return validators


VALIDATORS = _load()


def _where(error: ValidationError) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)


def _deepest(error: ValidationError) -> ValidationError:
    """For anyOf/oneOf failures, the sub-error that explains most, all the way down."""
    while error.context:
        # the branch that got furthest into the value: a bad text part inside a message explains more than "the
        # message is not the overflow-marker string"
        candidates = [e for e in error.context if e.schema.get("title") != "OverflowMarker"] or list(error.context)
        depth = max(len(e.absolute_path) for e in candidates)
        error = max((e for e in candidates if len(e.absolute_path) == depth), key=relevance)
    return error


def _marker_positions(value: Any, errors: list[str]) -> None:
    """The overflow marker, where accepted, must be the last item of its array (the renderer appends it)."""

    def check(items: Any, where: str) -> None:
        if not isinstance(items, list):
            return
        for i, item in enumerate(items[:-1]):
            if isinstance(item, str) and OVERFLOW_MARKER.match(item):
                errors.append(f"{where}[{i}]: overflow marker {item!r} is not the last item")

    check(value, "$")
    if isinstance(value, list):
        for i, message in enumerate(value):
            if isinstance(message, dict):
                check(message.get("parts"), f"$[{i}].parts")


def content_errors(key: str, value: Any) -> list[str]:
    """Why ``value`` (an attribute value) is not a valid ``key`` attribute; [] when it is (or key is not content)."""
    validator = VALIDATORS.get(key)
    if validator is None:
        return []
    if not isinstance(value, str):
        return [f"not a JSON string but {type(value).__name__}: {value!r:.200}"]
    try:
        document = json.loads(value)
    except ValueError as exc:
        return [f"not JSON ({exc}): {value[:200]!r}"]
    errors = []
    for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path)):
        inner = _deepest(error)
        note = ""
        if inner.validator == "required" and isinstance(inner.instance, dict):  # what the object has instead
            note = f" (has {', '.join(repr(k[:40]) for k in list(inner.instance)[:8])})"
        errors.append(f"{_where(inner)}: {inner.message[:300]}{note}")
    _marker_positions(document, errors)
    return errors


def span_content_errors(span: Any) -> list[str]:
    """Every schema violation in a ReadableSpan's content attributes and its events' content attributes."""
    problems = []
    sources = [("attributes", span.attributes or {})]
    sources += [(f"event {event.name!r}", event.attributes or {}) for event in span.events or ()]
    for where, attributes in sources:
        for key in CONTENT_KEYS:
            if key in attributes:
                for message in content_errors(key, attributes[key]):
                    problems.append(f"span {span.name!r} {where} {key} {message}")
    return problems


def validate_span_content(span: Any) -> None:
    """AssertionError listing every violation in ``span``'s content; None when it is all valid."""
    problems = span_content_errors(span)
    if problems:
        raise AssertionError("GenAI content schema violations:\n  " + "\n  ".join(problems))


def validate_spans(spans: Iterable[Any]) -> None:
    """validate_span_content for many spans, one AssertionError for all of them."""
    problems = [problem for span in spans for problem in span_content_errors(span)]
    if problems:
        raise AssertionError(f"GenAI content schema violations ({len(problems)}):\n  " + "\n  ".join(problems))


class SchemaCheckedSpanExporter(InMemorySpanExporter):
    """The SDK's InMemorySpanExporter that also checks every exported span's content against the schemas.

    Problems are kept as spans are exported (so a test's ``clear()`` does not hide them) and raised by
    ``assert_content_valid()`` (the ``span_exporter`` fixture calls it at teardown). The spans themselves are stored
    unchanged, whatever the check finds."""

    def __init__(self, max_spans: int | None = None) -> None:
        super().__init__(max_spans)
        self.content_problems: list[str] = []
        self.content_checked = 0  # spans that carried at least one content attribute

    def export(self, spans) -> SpanExportResult:
        for span in spans:
            try:
                if any(key in (span.attributes or {}) for key in CONTENT_KEYS) or any(
                    key in (event.attributes or {}) for event in span.events or () for key in CONTENT_KEYS
                ):
                    self.content_checked += 1
                    self.content_problems.extend(span_content_errors(span))
            except Exception as exc:  # noqa: BLE001 - a broken check must not lose the span
                self.content_problems.append(f"span {getattr(span, 'name', '?')!r}: the check itself failed: {exc!r}")
        return super().export(spans)

    def assert_content_valid(self) -> None:
        if self.content_problems:
            raise AssertionError(
                f"GenAI content schema violations ({len(self.content_problems)}):\n  "
                + "\n  ".join(self.content_problems)
            )
