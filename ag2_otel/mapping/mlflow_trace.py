"""Finished OTel GenAI spans of one trace -> a plain :class:`TraceRecord` shaped for MLflow. Pure: no I/O, no MLflow.

Decisions (see also the README):

* Span types. ``invoke_workflow`` (and AG2's own ``conversation`` / ``initiate_chats``) -> ``CHAIN`` wherever it sits,
  root included: a workflow holds several agents, and keeping ``AGENT`` for agent turns only means filtering MLflow
  spans by type ``AGENT`` lists agent turns and nothing else. ``invoke_agent`` -> ``AGENT``; ``chat`` /
  ``text_completion`` / ``generate_content`` -> ``CHAT_MODEL``; ``execute_tool`` (tools, handoffs) and code execution
  -> ``TOOL``; ``embeddings`` -> ``EMBEDDING``; ``retrieval`` -> ``RETRIEVER``; speaker selection -> ``CHAIN`` (an
  orchestration step that may wrap a model call); anything else (human input, ``create_agent``, unknown) -> ``UNKNOWN``.
* Token usage (``mlflow.chat.tokenUsage``) goes on model-call spans only. MLflow aggregates a trace top-down and a span
  with usage hides its descendants' usage; our totals apply the same rule, so they equal ``trace.info.token_usage``.
  Roll-up spans that carry ``gen_ai.usage.*`` themselves (AG2's ``conversation`` span does) get an explicit null
  ``mlflow.chat.tokenUsage``, which stops MLflow's SQL store from translating their roll-up into span usage (it only
  translates when the key is absent) and so from double counting.
* The root is the span whose parent is not in the set (the processor passes the local root explicitly). Spans whose
  parent is missing hang under the root; with several candidate roots and none named, a synthetic root spans them.
* The root's inputs / outputs are ``{"messages": [{"role", "content", ...}]}`` (:func:`chat_messages`): MLflow's
  store derives the trace's previews from the root span in that shape, so one ``log_spans`` call makes the whole
  trace, and our previews follow MLflow's rule (:func:`_preview`), so every write path gives the same trace.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ag2_otel import semconv as sc
from ag2_otel.mapping import ag2x
from ag2_otel.mapping.counts import token_count

# --- MLflow span types and keys (plain strings: this module must not import MLflow; values from mlflow 3.17) -------
CHAIN = "CHAIN"
AGENT = "AGENT"
CHAT_MODEL = "CHAT_MODEL"
TOOL = "TOOL"
EMBEDDING = "EMBEDDING"
RETRIEVER = "RETRIEVER"
UNKNOWN = "UNKNOWN"

MLFLOW_CHAT_USAGE = "mlflow.chat.tokenUsage"
MLFLOW_LLM_MODEL = "mlflow.llm.model"
MLFLOW_LLM_PROVIDER = "mlflow.llm.provider"
MLFLOW_CHAT_TOOLS = "mlflow.chat.tools"  # the tools offered, OpenAI-shaped: the trace UI lists them with the chat
MLFLOW_TRACE_SESSION = "mlflow.trace.session"  # TraceMetadataKey.TRACE_SESSION

# --- our trace-level keys ------------------------------------------------------------------------------------------
TAG_OTEL_TRACE_ID = "ag2_otel.otel_trace_id"  # 32 hex chars
TAG_INCOMPLETE = "ag2_otel.incomplete"  # "true" when the local root never ended (written at shutdown)
TAG_DROPPED_SPANS = "ag2_otel.dropped_spans"  # spans dropped by the per-trace cap
META_USAGE_TOTAL = "ag2_otel.usage.total"  # JSON: usage dict (see Usage.to_dict)
META_USAGE_BY_AGENT = "ag2_otel.usage.by_agent"  # JSON: {agent name: usage dict}
META_USAGE_BY_MODEL = "ag2_otel.usage.by_model"  # JSON: {model: usage dict}
META_COST = "ag2_otel.usage.cost"  # total cost (USD) as reported by the producer, when known
UNKNOWN_KEY = "(unknown)"  # agent / model bucket when the span does not say
MAX_METADATA_CHARS = 8000  # MLflow's SQL column size for tag/metadata values
PREVIEW_CHARS = 1000

MODEL_OPS = frozenset({sc.OP_CHAT, sc.OP_TEXT_COMPLETION, sc.OP_GENERATE_CONTENT, sc.OP_EMBEDDINGS})
_WORKFLOW_OPS = frozenset({sc.OP_WORKFLOW, sc.AG2_NATIVE_OP_CONVERSATION, sc.AG2_NATIVE_OP_INITIATE_CHATS})
_WORKFLOW_AG2_TYPES = frozenset({sc.SPAN_TYPE_CONVERSATION, sc.SPAN_TYPE_MULTI_CONVERSATION})
_TOOL_AG2_TYPES = frozenset({sc.SPAN_TYPE_TOOL, sc.SPAN_TYPE_HANDOFF, sc.SPAN_TYPE_CODE_EXECUTION})

# Where each kind of span keeps its inputs / outputs (first present key wins).
_IO_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    TOOL: ((sc.TOOL_CALL_ARGUMENTS, sc.AG2_CODE_BLOCKS), (sc.TOOL_CALL_RESULT, sc.AG2_CODE_OUTPUT)),
    CHAIN: ((sc.INPUT_MESSAGES, sc.AG2_SPEAKER_CANDIDATES), (sc.OUTPUT_MESSAGES, sc.AG2_SUMMARY, sc.AG2_SPEAKER_SELECTED)),
    UNKNOWN: ((sc.INPUT_MESSAGES, sc.AG2_HUMAN_PROMPT), (sc.OUTPUT_MESSAGES, sc.AG2_HUMAN_REPLY, ag2x.HUMAN_REPLY)),
}
_MESSAGE_IO = ((sc.INPUT_MESSAGES,), (sc.OUTPUT_MESSAGES,))


@dataclass
class Usage:
    """Token usage (and cost when known) of one model call, or a sum of them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    reasoning_output_tokens: int | None = None
    cost: float | None = None
    calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.calls += other.calls
        for name in ("cache_read_input_tokens", "cache_creation_input_tokens", "reasoning_output_tokens", "cost"):
            value = getattr(other, name)
            if value is not None:
                setattr(self, name, (getattr(self, name) or 0) + value)

    def to_mlflow(self) -> dict[str, int]:
        """The ``mlflow.chat.tokenUsage`` shape."""
        out = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "total_tokens": self.total_tokens}
        if self.cache_read_input_tokens is not None:
            out["cache_read_input_tokens"] = self.cache_read_input_tokens
        if self.cache_creation_input_tokens is not None:
            out["cache_creation_input_tokens"] = self.cache_creation_input_tokens
        return out

    def to_dict(self) -> dict[str, Any]:
        """Our breakdown shape: the MLflow keys plus calls, reasoning tokens and cost when known."""
        out: dict[str, Any] = self.to_mlflow()
        out["calls"] = self.calls
        if self.reasoning_output_tokens is not None:
            out["reasoning_output_tokens"] = self.reasoning_output_tokens
        if self.cost is not None:
            out["cost"] = round(self.cost, 12)  # a sum of float prices: drop the binary noise (0.000584, not …9999)
        return out


@dataclass
class EventRecord:
    name: str
    timestamp_ns: int
    attributes: dict[str, Any]


@dataclass
class SpanRecord:
    span_id: str  # 16 hex chars (the OTel span id; synthetic roots get one that cannot collide: all zeros)
    parent_id: str | None  # None for the root only
    name: str
    span_type: str
    start_time_ns: int
    end_time_ns: int
    attributes: dict[str, Any]  # the original OTel attributes plus MLflow's native keys
    inputs: Any = None
    outputs: Any = None
    status: str = "UNSET"  # OK | ERROR | UNSET
    status_message: str = ""
    events: list[EventRecord] = field(default_factory=list)
    usage: Usage | None = None  # model-call spans with usage only
    agent_name: str | None = None
    model: str | None = None
    synthetic: bool = False


@dataclass
class TraceRecord:
    otel_trace_id: str
    name: str
    spans: list[SpanRecord]  # parent-first; spans[0] is the root
    root_parent_span_id: str | None  # OTel parent of the root (remote, or another provider's span), if any
    complete: bool
    usage: Usage
    usage_by_agent: dict[str, Usage]
    usage_by_model: dict[str, Usage]
    session_id: str | None
    request_preview: str | None
    response_preview: str | None
    tags: dict[str, str]
    metadata: dict[str, str]

    @property
    def root(self) -> SpanRecord:
        return self.spans[0]


# --- value helpers: never raise on odd producer values ---------------------------------------------------------------
def _money(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def _first_count(attrs: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = token_count(attrs.get(key), lenient=True)
        if value is not None:
            return value
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_json(value: Any) -> Any:
    """JSON strings parsed; anything else (truncated JSON, plain text, numbers) returned as is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:  # JSONDecodeError, and odd unicode
            return value
    if isinstance(value, tuple):
        return list(value)
    return value


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _hex_span(span_id: int) -> str:
    return format(span_id, "016x")


def span_type_of(attrs: Mapping[str, Any]) -> str:
    own = ag2x.span_type(attrs)  # AG2 1.x's record_usage and hub spans
    if own is not None:
        return own
    op = attrs.get(sc.OPERATION_NAME)
    ag2_type = attrs.get(sc.AG2_SPAN_TYPE)
    if op in MODEL_OPS:
        return EMBEDDING if op == sc.OP_EMBEDDINGS else CHAT_MODEL
    if op in _WORKFLOW_OPS or ag2_type in _WORKFLOW_AG2_TYPES:
        return CHAIN
    if op == sc.OP_AGENT or ag2_type == sc.SPAN_TYPE_AGENT:
        return AGENT
    if op in (sc.OP_TOOL, sc.AG2_NATIVE_OP_EXECUTE_CODE) or ag2_type in _TOOL_AG2_TYPES:
        return TOOL
    if op == sc.OP_RETRIEVAL:
        return RETRIEVER
    if ag2_type == sc.SPAN_TYPE_LLM:
        return CHAT_MODEL
    if op == sc.AG2_NATIVE_OP_SPEAKER_SELECTION or ag2_type == sc.SPAN_TYPE_SPEAKER_SELECTION:
        return CHAIN
    return UNKNOWN


def is_model_call(attrs: Mapping[str, Any]) -> bool:
    op = attrs.get(sc.OPERATION_NAME)
    return op in MODEL_OPS or (op is None and attrs.get(sc.AG2_SPAN_TYPE) == sc.SPAN_TYPE_LLM)


def usage_of(attrs: Mapping[str, Any]) -> Usage | None:
    """Usage of one model-call span (current keys first, deprecated ones as fallback), None when it reports none."""
    inp = _first_count(attrs, sc.USAGE_INPUT_TOKENS, sc.USAGE_PROMPT_TOKENS_DEPRECATED)
    out = _first_count(attrs, sc.USAGE_OUTPUT_TOKENS, sc.USAGE_COMPLETION_TOKENS_DEPRECATED)
    if inp is None and out is None:
        return None
    cost = _money(attrs.get(sc.AG2_COST))
    if cost is None:
        cost = _money(attrs.get(sc.AG2_NATIVE_COST))
    return Usage(
        input_tokens=inp or 0,
        output_tokens=out or 0,
        cache_read_input_tokens=_first_count(attrs, sc.USAGE_CACHE_READ_INPUT_TOKENS, ag2x.CACHE_READ_INPUT_TOKENS),
        cache_creation_input_tokens=_first_count(attrs, sc.USAGE_CACHE_CREATION_INPUT_TOKENS,
                                                 ag2x.CACHE_CREATION_INPUT_TOKENS),
        reasoning_output_tokens=_first_count(attrs, sc.USAGE_REASONING_OUTPUT_TOKENS, ag2x.THINKING_TOKENS),
        cost=cost,
        calls=1,
    )


def _io(span_type: str, attrs: Mapping[str, Any]) -> tuple[Any, Any]:
    in_keys, out_keys = _IO_KEYS.get(span_type, _MESSAGE_IO)
    inputs = next((parse_json(attrs[k]) for k in in_keys if attrs.get(k) is not None), None)
    outputs = next((attrs[k] for k in out_keys if attrs.get(k) is not None), None)
    if span_type != TOOL or attrs.get(sc.AG2_TOOL_RESULT_ENCODING) == "json":
        outputs = parse_json(outputs)  # a tool's text result stays the string AG2 produced ("2" is not 2)
    if span_type in (CHAT_MODEL, AGENT, CHAIN) and in_keys[0] == sc.INPUT_MESSAGES:
        system = attrs.get(sc.SYSTEM_INSTRUCTIONS)
        if system is not None and (inputs is None or isinstance(inputs, list)):
            # One list of GenAI messages, the instructions first as a system message: the shape MLflow's trace UI
            # shows as a conversation (it reads a top-level list of {role, parts} messages)
            parts = parse_json(system)
            inputs = [{"role": "system", "parts": parts if isinstance(parts, list) else [parts]}, *(inputs or [])]
    return inputs, outputs


def chat_messages(value: Any, role: str) -> Any:
    """A root's message list as ``{"messages": [{"role", "content", ...}]}``, the shape MLflow makes a trace's
    previews from (``log_spans`` reads them off the root span: no ``start_trace`` needed) and its UI shows as a chat.

    A GenAI message (``{"role", "parts"}``) gets ``content``, the text of its text parts; its ``parts`` stay only when
    some are not text (tool calls, results), so nothing is lost. An OpenAI-shaped message (AG2 1.x) is kept as it is.
    A string (a chat's summary) becomes one message of ``role``. Anything else is returned unchanged."""
    if isinstance(value, str):
        return {"messages": [{"role": role, "content": value}]}
    if not isinstance(value, list) or not value or not all(isinstance(m, dict) and "role" in m for m in value):
        return value
    out = []
    for message in value:
        if "content" in message or not isinstance(message.get("parts"), list):
            out.append(message)
            continue
        parts = message["parts"]
        texts = [p["content"] for p in parts
                 if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("content"), str)]
        chat = {k: v for k, v in message.items() if k != "parts"}
        chat["content"] = "\n".join(texts)
        if len(texts) != len(parts):
            chat["parts"] = parts
        out.append(chat)
    return {"messages": out}


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    for part in content if isinstance(content, list) else ():
        if isinstance(part, str):
            return part
        if isinstance(part, dict) and part.get("type") in ("text", "output_text") and isinstance(part.get("text"), str):
            return part["text"]
    return ""


def _preview(value: Any, role: str) -> str | None:
    """A trace's request (``role="user"``) or response (``"assistant"``) preview of the root's inputs / outputs, by
    MLflow's own rule (``_get_truncated_preview``, 3.17), so the trace has the same previews whether the store
    derives them from the root span (``log_spans``) or is given them (``start_trace``): the text of the last
    message of that role (else of the last message) of ``{"messages": [...]}``; otherwise the value's JSON."""
    if value is None:
        return None
    text = ""
    messages = value.get("messages") if isinstance(value, dict) else None
    if isinstance(messages, list):
        chat = [m for m in messages if isinstance(m, dict) and "role" in m and "content" in m]
        if chat:
            text = _content_text(next((m for m in reversed(chat) if m.get("role") == role), chat[-1]).get("content"))
    if not text:
        try:
            text = json.dumps(value, default=str)
        except ValueError:  # circular structures cannot come from JSON, but be safe
            text = str(value)
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS - 3] + "..."


def usage_json(by_key: dict[str, Usage]) -> str:
    """JSON of a breakdown, keeping the biggest entries when it would not fit in one MLflow metadata value."""
    items = sorted(by_key.items(), key=lambda kv: (-kv[1].total_tokens, kv[0]))
    keep = len(items)
    while True:
        payload: dict[str, Any] = {k: v.to_dict() for k, v in items[:keep]}
        if keep < len(items):
            payload["_omitted"] = len(items) - keep
        text = json.dumps(payload, sort_keys=True)
        if len(text) <= MAX_METADATA_CHARS or keep == 0:
            return text
        keep //= 2


# --- the mapping -------------------------------------------------------------------------------------------------------
def usage_metadata(total: Usage, by_agent: dict[str, Usage], by_model: dict[str, Usage]) -> dict[str, str]:
    """Our trace metadata for token totals: the total, per agent, per model (JSON), and the cost when known."""
    metadata = {
        META_USAGE_TOTAL: json.dumps(total.to_dict(), sort_keys=True),
        META_USAGE_BY_AGENT: usage_json(by_agent),
        META_USAGE_BY_MODEL: usage_json(by_model),
    }
    if total.cost is not None:
        metadata[META_COST] = repr(total.cost)
    return metadata


def _span_record(span: Any, parent_id: str | None, agents: frozenset[str] = frozenset()) -> SpanRecord:
    attrs = dict(span.attributes or {})
    span_type = span_type_of(attrs)
    inputs, outputs = _io(span_type, attrs)
    record_attrs: dict[str, Any] = {k: _plain(v) for k, v in attrs.items()}
    status = span.status
    record = SpanRecord(
        span_id=_hex_span(span.context.span_id),
        parent_id=parent_id,
        name=str(span.name),
        span_type=span_type,
        start_time_ns=int(span.start_time or 0),
        end_time_ns=int(span.end_time or 0),  # 0 = never ended; fixed up by the caller
        attributes=record_attrs,
        inputs=inputs,
        outputs=outputs,
        status=getattr(getattr(status, "status_code", None), "name", "UNSET"),
        status_message=str(getattr(status, "description", None) or ""),
        events=[
            EventRecord(str(e.name), int(e.timestamp or 0), {k: _plain(v) for k, v in (e.attributes or {}).items()})
            for e in (span.events or ())
        ],
    )
    if is_model_call(attrs) or ag2x.counts_usage(attrs, agents):  # AG2 1.x: spend no chat span reports
        record.model = _text(attrs.get(sc.RESPONSE_MODEL)) or _text(attrs.get(sc.REQUEST_MODEL))
        provider = _text(attrs.get(sc.PROVIDER_NAME)) or _text(attrs.get(sc.SYSTEM_DEPRECATED))
        if record.model:
            record_attrs[MLFLOW_LLM_MODEL] = record.model
        if provider:
            record_attrs[MLFLOW_LLM_PROVIDER] = provider
        tools = _chat_tools(attrs.get(sc.TOOL_DEFINITIONS))
        if tools:
            record_attrs[MLFLOW_CHAT_TOOLS] = tools
        record.usage = usage_of(attrs)
        if record.usage is not None:
            record_attrs[MLFLOW_CHAT_USAGE] = record.usage.to_mlflow()
    elif any(k in attrs for k in (sc.USAGE_INPUT_TOKENS, sc.USAGE_OUTPUT_TOKENS, sc.USAGE_PROMPT_TOKENS_DEPRECATED,
                                  sc.USAGE_COMPLETION_TOKENS_DEPRECATED)):
        record_attrs[MLFLOW_CHAT_USAGE] = None  # a roll-up: keep it out of MLflow's aggregation (module docstring)
    return record


def _chat_tools(definitions: Any) -> list[dict[str, Any]]:
    """``gen_ai.tool.definitions`` (flat: ``{"type", "name", "description"?, "parameters"?}``) in the OpenAI shape
    MLflow's ``mlflow.chat.tools`` holds."""
    definitions = parse_json(definitions)
    tools = []
    for tool in definitions if isinstance(definitions, list) else ():
        if isinstance(tool, dict) and isinstance(tool.get("name"), str):
            function = {key: tool[key] for key in ("name", "description", "parameters") if tool.get(key) is not None}
            tools.append({"type": "function", "function": function})
    return tools


UNFINISHED_MESSAGE = "unfinished: the span never ended (written at shutdown)"


def _unfinished(record: SpanRecord) -> None:
    """A real span that never ended (the process exited inside it) is written as failed, not as a success."""
    if not record.synthetic and record.status != "ERROR":
        record.status, record.status_message = "ERROR", UNFINISHED_MESSAGE


def _agent_io_from_model_calls(records: list[SpanRecord]) -> None:
    """An agent span that records no messages (AG2 1.x's ``invoke_agent``) shows its turn: the user's message that
    started it (from its first model call's input) and its last model call's output."""
    calls: dict[str, list[SpanRecord]] = {}
    for record in records:  # parent-first, siblings in start order
        if record.span_type == CHAT_MODEL and record.parent_id is not None:
            calls.setdefault(record.parent_id, []).append(record)
    for record in records:
        own = calls.get(record.span_id)
        if record.span_type == AGENT and own and record.inputs is None and record.outputs is None:
            record.inputs = ag2x.turn_request(own[0].inputs)
            record.outputs = own[-1].outputs


def build_trace_record(
    spans: Iterable[Any],
    *,
    root_span_id: int | None = None,
    complete: bool = True,
    dropped_spans: int = 0,
) -> TraceRecord | None:
    """Map the finished ``ReadableSpan``\\ s of one (local) trace to a :class:`TraceRecord`; None when there are none.

    ``root_span_id`` names the local root (the processor knows it); ``complete=False`` marks a trace written at
    shutdown whose root never ended (its root may then be an unended span: its end time becomes the latest end seen).
    """
    by_id: dict[int, Any] = {}
    for span in spans:
        by_id.setdefault(span.context.span_id, span)
    if not by_id:
        return None
    ordered = sorted(by_id.values(), key=lambda s: (s.start_time or 0, s.context.span_id))
    first = ordered[0]
    trace_id = format(first.context.trace_id, "032x")

    def parent_int(span: Any) -> int | None:
        return span.parent.span_id if span.parent is not None else None

    tops = [s for s in ordered if parent_int(s) not in by_id]
    root_span = by_id.get(root_span_id) if root_span_id is not None else None
    if root_span is None:
        # One top: the root. Several: the one with no parent (or a remote one), if it is alone; else synthetic.
        true_roots = [s for s in tops if s.parent is None or s.parent.is_remote]
        root_span = tops[0] if len(tops) == 1 else (true_roots[0] if len(true_roots) == 1 else None)

    latest_end = max((s.end_time or s.start_time or 0) for s in ordered)
    agents = ag2x.traced_agents(s.attributes or {} for s in ordered)
    if root_span is not None:
        root = _span_record(root_span, None, agents)
        root_parent = root_span.parent
        root_parent_span_id = _hex_span(root_parent.span_id) if root_parent is not None else None
    else:
        # Several tops and no root named: a synthetic root spans them (its id, all zeros, is never a real span id).
        root = SpanRecord(
            span_id="0" * 16, parent_id=None, name=str(tops[0].name), span_type=CHAIN,
            start_time_ns=int(first.start_time or 0), end_time_ns=0, attributes={}, synthetic=True,
        )
        root_parent = tops[0].parent
        root_parent_span_id = _hex_span(root_parent.span_id) if root_parent is not None else None
    if not root.end_time_ns:
        root.end_time_ns = max(latest_end, root.start_time_ns)
        complete = False
        _unfinished(root)
    if not complete:
        root.attributes[TAG_INCOMPLETE] = True

    children: dict[int | None, list[Any]] = {}
    for span in ordered:
        if span is not root_span:
            children.setdefault(parent_int(span), []).append(span)

    # Walk parent-first. Carried down: the nearest invoke_agent's agent name, and whether an ancestor already has
    # usage (MLflow's rule: it hides ours). Spans not reachable from the root (missing parents, cycles) hang under it.
    records = [root]
    total, by_agent, by_model = Usage(), {}, {}
    root_agent = _text(root.attributes.get(sc.AGENT_NAME)) if root.span_type == AGENT else None
    root_has_usage = root.usage is not None
    visited = {root_span.context.span_id} if root_span is not None else set()
    queue: deque[tuple[Any, str, Any, bool]] = deque()
    if root_span is not None:
        queue.extend((c, root.span_id, root_agent, root_has_usage) for c in children.get(root_span.context.span_id, ()))

    def account(record: SpanRecord) -> None:
        usage = record.usage
        if usage is None:
            return
        total.add(usage)
        by_agent.setdefault(record.agent_name or UNKNOWN_KEY, Usage()).add(usage)
        by_model.setdefault(record.model or UNKNOWN_KEY, Usage()).add(usage)

    if root_has_usage:
        root.agent_name = _text(root.attributes.get(sc.AGENT_NAME))
        account(root)
    pending = iter(ordered)
    while True:
        while queue:
            span, parent_id, agent, usage_above = queue.popleft()
            if span.context.span_id in visited:
                continue
            visited.add(span.context.span_id)
            record = _span_record(span, parent_id, agents)
            own_agent = _text(record.attributes.get(sc.AGENT_NAME))
            if record.span_type == AGENT and own_agent:
                agent = own_agent
            if record.usage is not None:
                record.agent_name = own_agent or agent
                if not usage_above:
                    account(record)
            records.append(record)
            below = usage_above or record.usage is not None
            queue.extend((c, record.span_id, agent, below) for c in children.get(span.context.span_id, ()))
        orphan = next((s for s in pending if s.context.span_id not in visited), None)
        if orphan is None:
            break
        queue.append((orphan, root.span_id, root_agent, root_has_usage))

    for record in records:
        if not record.end_time_ns:
            record.end_time_ns = max(latest_end, record.start_time_ns)
            _unfinished(record)
    _agent_io_from_model_calls(records)
    root.inputs, root.outputs = chat_messages(root.inputs, "user"), chat_messages(root.outputs, "assistant")

    session_id = next(
        (str(r.attributes[sc.CONVERSATION_ID]) for r in records if r.attributes.get(sc.CONVERSATION_ID) not in (None, "")),
        None,
    )
    tags = {TAG_OTEL_TRACE_ID: trace_id}
    if not complete:
        tags[TAG_INCOMPLETE] = "true"
    if dropped_spans:
        tags[TAG_DROPPED_SPANS] = str(dropped_spans)
    metadata = usage_metadata(total, by_agent, by_model)
    if session_id:
        metadata[MLFLOW_TRACE_SESSION] = session_id[:MAX_METADATA_CHARS]
    return TraceRecord(
        otel_trace_id=trace_id,
        name=root.name,
        spans=records,
        root_parent_span_id=root_parent_span_id,
        complete=complete,
        usage=total,
        usage_by_agent=by_agent,
        usage_by_model=by_model,
        session_id=session_id,
        request_preview=_preview(root.inputs, "user"),
        response_preview=_preview(root.outputs, "assistant"),
        tags=tags,
        metadata=metadata,
    )
