"""Attribute builders: AG2 objects in, span attributes out.

Only duck typing on AG2 objects (names, configs, responses), so one code path serves ag2 0.9 → 0.14. Secrets: from an
llm_config entry we read the model, the provider, the host/port of base_url and the whitelisted request parameters
below — never api_key, headers, credentials or any other key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .. import semconv as k
from ..mapping.counts import token_count
from .content import (
    parse_arguments,
    plain_message,
    instructions_json,
    messages_json,
    output_messages_json,
    to_json,
    to_text,
)

# AG2 api_type → gen_ai.provider.name (the conventions' well-known values)
_PROVIDERS = {
    "openai": "openai", "azure": "azure.ai.openai", "anthropic": "anthropic", "google": "gcp.gemini",
    "vertexai": "gcp.vertex_ai", "bedrock": "aws.bedrock", "mistral": "mistral_ai", "groq": "groq",
    "cohere": "cohere", "ollama": "ollama", "deepseek": "deepseek", "cerebras": "cerebras", "together": "together",
    "responses": "openai",
}

# request parameter in AG2/OpenAI config → gen_ai.request.* suffix; nothing outside this table is recorded
_REQUEST_PARAMS = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens", "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty", "seed": "seed", "stop": "stop_sequences", "n": "choice.count",
}


_MAX_ID_CHARS = 256  # ids, model names, finish reasons: from the model server, bounded and made valid UTF-8


def _short_text(value: Any) -> str:
    """An identifier-like attribute value: str() of ``value`` (never raising), cut to _MAX_ID_CHARS, valid UTF-8."""
    if not isinstance(value, str):
        try:
            value = str(value)
        except Exception:  # noqa: BLE001 - a hostile __str__ must not break the trace
            value = f"<unprintable {type(value).__name__}>"
        if not isinstance(value, str):
            value = f"<unprintable {type(value).__name__}>"
    return to_text(value, _MAX_ID_CHARS)


def _has(obj: Any, name: str) -> bool:
    if isinstance(obj, Mapping):
        return name in obj
    return hasattr(obj, name)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def name_of(agent: Any) -> str | None:
    name = getattr(agent, "name", None)
    return name if isinstance(name, str) else None


# --- conversations ----------------------------------------------------------------------------------------------

def workflow_start(entry: str, participants: list[Any], max_turns: Any = None, max_rounds: Any = None) -> dict:
    attrs: dict[str, Any] = {
        k.OPERATION_NAME: k.OP_WORKFLOW,
        k.WORKFLOW_NAME: entry,
        k.AG2_ENTRY_POINT: entry,
        k.AG2_SPAN_TYPE: k.SPAN_TYPE_CONVERSATION,
    }
    names = [n for n in (name_of(a) for a in participants[:64]) if n]
    if names:
        attrs[k.AG2_PARTICIPANTS] = names
    if isinstance(max_turns, int):
        attrs[k.AG2_MAX_TURNS] = max_turns
    if isinstance(max_rounds, int):
        attrs[k.AG2_MAX_ROUNDS] = max_rounds
    return attrs


def chat_result(result: Any) -> dict:
    """Attributes from a ChatResult, read without touching it (AG2's return values are never mutated)."""
    attrs: dict[str, Any] = {}
    chat_id = getattr(result, "chat_id", None)
    if chat_id is not None:
        attrs[k.CONVERSATION_ID] = str(chat_id)  # AG2's own id for this chat; never one we invent
    history = getattr(result, "chat_history", None)
    if isinstance(history, list):
        attrs[k.AG2_TURNS] = len(history)
    return attrs


def chat_result_content(result: Any, max_chars: int) -> dict:
    summary = getattr(result, "summary", None)
    if summary is None:
        return {}
    return {
        k.AG2_SUMMARY: to_text(summary, max_chars),
        k.OUTPUT_MESSAGES: output_messages_json([{"role": "assistant", "content": summary}], ["stop"], max_chars),
    }


def initial_message_content(message: Any, max_chars: int) -> dict:
    if message is None or callable(message):
        return {}
    return {k.INPUT_MESSAGES: messages_json([message], max_chars)}


# --- agent turns ------------------------------------------------------------------------------------------------

def agent_turn(agent: Any, sender: Any) -> dict:
    attrs: dict[str, Any] = {
        k.OPERATION_NAME: k.OP_AGENT,
        k.AG2_SPAN_TYPE: k.SPAN_TYPE_AGENT,
    }
    name = name_of(agent)
    if name:
        attrs[k.AGENT_NAME] = name
        attrs[k.AGENT_ID] = f"{name}@{id(agent):x}"  # AG2 agents carry no id; name + object identity is stable per run
    description = getattr(agent, "description", None)
    # AG2 defaults the description to the system message, which is content: only a description of its own is metadata
    if isinstance(description, str) and description and description != getattr(agent, "system_message", None):
        attrs[k.AGENT_DESCRIPTION] = description[:512]
    sender_name = name_of(sender)
    if sender_name:
        attrs[k.AG2_SENDER] = sender_name
    return attrs


def agent_turn_content(agent: Any, messages: Any, sender: Any, max_chars: int) -> dict:
    """The incoming message only (not the history: per-turn cost stays O(1)) and the agent's instructions."""
    attrs: dict[str, Any] = {}
    if messages is None and sender is not None:
        history = getattr(agent, "_oai_messages", {}).get(sender)
        messages = history
    if messages:
        attrs[k.INPUT_MESSAGES] = messages_json(messages[-1:], max_chars)
    system = getattr(agent, "system_message", None)
    if isinstance(system, str) and system:
        attrs[k.SYSTEM_INSTRUCTIONS] = instructions_json(system, max_chars)
    return attrs


def reply_content(reply: Any, max_chars: int) -> dict:
    if reply is None:
        return {}
    return {k.OUTPUT_MESSAGES: output_messages_json([reply], ["stop"], max_chars)}


# --- model calls --------------------------------------------------------------------------------------------------

def first_config(wrapper: Any) -> Mapping:
    config_list = getattr(wrapper, "_config_list", None)
    if isinstance(config_list, list) and config_list and isinstance(config_list[0], Mapping):
        return config_list[0]
    return {}


def provider_of(entry: Mapping) -> str:
    client_cls = entry.get("model_client_cls")
    if isinstance(client_cls, str) and client_cls:
        return client_cls  # a custom ModelClient (AG2 still fills api_type="openai"): its class name is truer
    api_type = entry.get("api_type")
    if isinstance(api_type, str) and api_type:
        return _PROVIDERS.get(api_type.lower(), api_type.lower())
    return "openai"


def _client_base_url(wrapper: Any) -> str | None:
    """AG2 moves base_url out of the config list into the provider SDK client (an OpenAI client keeps it)."""
    clients = getattr(wrapper, "_clients", None) or []
    sdk_client = getattr(clients[0], "_oai_client", None) if clients else None
    url = getattr(sdk_client, "base_url", None)
    return str(url) if url is not None else None


def llm_request(wrapper: Any, config: Mapping) -> tuple[str | None, dict]:
    entry = first_config(wrapper)
    model = config.get("model") or entry.get("model")
    attrs: dict[str, Any] = {
        k.OPERATION_NAME: k.OP_CHAT,
        k.PROVIDER_NAME: provider_of(entry),
        k.AG2_SPAN_TYPE: k.SPAN_TYPE_LLM,
    }
    if isinstance(model, str):
        attrs[k.REQUEST_MODEL] = model
    for source in (entry, config):
        for key, suffix in _REQUEST_PARAMS.items():
            value = source.get(key)
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                attrs[k.REQUEST_PREFIX + suffix] = value
            elif key == "stop" and isinstance(value, list):
                attrs[k.REQUEST_PREFIX + suffix] = [str(v) for v in value[:16]]
    base_url = config.get("base_url") or entry.get("base_url") or _client_base_url(wrapper)
    if isinstance(base_url, str) and base_url:
        try:
            parts = urlsplit(base_url)  # hostname/port only: user:password in the URL never leaves this function
            if parts.hostname:
                attrs[k.SERVER_ADDRESS] = parts.hostname
            if parts.port:
                attrs[k.SERVER_PORT] = parts.port
        except ValueError:
            pass
    agent = config.get("agent")
    if name_of(agent):
        attrs[k.AGENT_NAME] = name_of(agent)
    return (model if isinstance(model, str) else None), attrs


def tool_definitions(tools: Any) -> list[dict[str, Any]]:
    """The tools a model call offers as the conventions' flat definitions ``{"type", "name", "description"?,
    "parameters"?}``, from OpenAI's ``{"type": "function", "function": {...}}`` (chat), flat entries (Responses API)
    or the deprecated ``functions`` list."""
    out: list[dict[str, Any]] = []
    for tool in list(tools)[:_MAX_TOOLS]:
        tool = plain_message(tool)
        if not isinstance(tool, Mapping):
            out.append({"type": "function", "name": _short_text(tool)})
            continue
        function = plain_message(tool.get("function"))
        spec = function if isinstance(function, Mapping) else tool
        definition: dict[str, Any] = {"type": _short_text(tool.get("type") or "function"),
                                      "name": _short_text(spec.get("name") or "")}
        if spec.get("description") is not None:
            definition["description"] = spec.get("description")
        if spec.get("parameters") is not None:
            definition["parameters"] = spec.get("parameters")
        out.append(definition)
    return out


_MAX_TOOLS = 128


def llm_request_content(config: Mapping, max_chars: int, max_messages: int, entry: Mapping | None = None) -> dict:
    """Content of a model call's request. ``entry``: the client's config entry, where AG2 keeps the tools it merges
    into the request inside ``create``."""
    attrs: dict[str, Any] = {}
    messages = config.get("messages")
    if isinstance(messages, list) and messages:
        first = messages[0]
        skip = 1 if isinstance(first, Mapping) and first.get("role") == "system" else 0
        total = len(messages) - skip  # the history grows every turn: slice only the recorded tail, never all of it
        if max_messages > 0:
            tail = messages[max(skip, len(messages) - max_messages):]
        else:  # as rest[-max_messages:] always did
            tail = messages[skip:][-max_messages:]
        if skip:
            attrs[k.SYSTEM_INSTRUCTIONS] = instructions_json(first.get("content"), max_chars)
        attrs[k.INPUT_MESSAGES] = messages_json(tail, max_chars)
        attrs[k.AG2_INPUT_MESSAGES_TOTAL] = total
        if len(tail) < total:
            attrs[k.AG2_INPUT_MESSAGES_OMITTED] = total - len(tail)
    tools = config.get("tools") or (entry or {}).get("tools") or config.get("functions")
    if isinstance(tools, list) and tools:
        attrs[k.TOOL_DEFINITIONS] = to_json(tool_definitions(tools), max_chars)
    return attrs


def _usage_numbers(usage: Any) -> dict:
    attrs: dict[str, Any] = {}
    inp = _get(usage, "prompt_tokens", None)
    if inp is None:
        inp = _get(usage, "input_tokens", None)
    out = _get(usage, "completion_tokens", None)
    if out is None:
        out = _get(usage, "output_tokens", None)
    inp, out = token_count(inp), token_count(out)  # negative, bool, str, float: not a count, not recorded
    if inp is not None:
        attrs[k.USAGE_INPUT_TOKENS] = inp
    if out is not None:
        attrs[k.USAGE_OUTPUT_TOKENS] = out
    cached = _get(_get(usage, "prompt_tokens_details", None), "cached_tokens", None)
    if cached is None:
        cached = _get(_get(usage, "input_tokens_details", None), "cached_tokens", None)  # Responses API
    if cached is None:
        cached = _get(usage, "cache_read_input_tokens", None)
    cached = token_count(cached)
    if cached:
        attrs[k.USAGE_CACHE_READ_INPUT_TOKENS] = cached
    created = _get(usage, "cache_creation_input_tokens", None)
    if created is None:
        created = _get(_get(usage, "prompt_tokens_details", None), "cache_write_tokens", None)  # openai >= 2
    created = token_count(created)
    if created:
        attrs[k.USAGE_CACHE_CREATION_INPUT_TOKENS] = created
    reasoning = _get(_get(usage, "completion_tokens_details", None), "reasoning_tokens", None)
    if reasoning is None:
        reasoning = _get(_get(usage, "output_tokens_details", None), "reasoning_tokens", None)  # Responses API
    reasoning = token_count(reasoning)
    if reasoning:
        attrs[k.USAGE_REASONING_OUTPUT_TOKENS] = reasoning
    return attrs


def llm_response(wrapper: Any, response: Any) -> dict:
    attrs: dict[str, Any] = {}
    model = _get(response, "model", None)
    if isinstance(model, str):  # the server's strings: bounded and valid UTF-8, as content is
        attrs[k.RESPONSE_MODEL] = _short_text(model)
    response_id = _get(response, "id", None)
    if isinstance(response_id, str):
        attrs[k.RESPONSE_ID] = _short_text(response_id)
    reasons = finish_reasons(response)
    if reasons:
        attrs[k.RESPONSE_FINISH_REASONS] = reasons
    if _has(response, "usage"):
        # the response speaks for itself: a missing (None) or empty usage is recorded as no usage, never as 0 tokens
        usage = _get(response, "usage", None)
        if usage is not None:
            attrs.update(_usage_numbers(usage))
    else:
        # a custom client whose response has no usage attribute at all: ask the client, as OpenAIWrapper itself does
        clients = getattr(wrapper, "_clients", None) or []
        index = _get(response, "config_id", 0) or 0
        if isinstance(index, int) and 0 <= index < len(clients):
            attrs.update(_usage_numbers(type(clients[index]).get_usage(response) or {}))
    cost = _get(response, "cost", None)
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        attrs[k.AG2_COST] = float(cost)
    return attrs


# The Responses API (AG2's api_type "responses") answers with output items instead of choices.
_RESPONSES_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


def _responses_output(response: Any) -> tuple[dict[str, Any], str]:
    """A Responses API ``Response``: one assistant message whose parts follow the output items in order."""
    parts: list[dict[str, Any]] = []
    called = False
    for item in (_get(response, "output", None) or [])[:_MAX_OUTPUT_ITEMS]:
        kind = _get(item, "type", None)
        if kind == "message":
            for piece in _get(item, "content", None) or ():
                piece_type = _get(piece, "type", None)
                text = _get(piece, "refusal" if piece_type == "refusal" else "text", None)
                if isinstance(text, str) and text:
                    parts.append({"type": "text", "content": text})
        elif kind == "function_call":
            called = True
            parts.append({"type": "tool_call", "id": _get(item, "call_id", None), "name": _get(item, "name", None),
                          "arguments": parse_arguments(_get(item, "arguments", None))})
        elif kind == "reasoning":
            texts = [_get(p, "text", None) for p in (_get(item, "summary", None) or _get(item, "content", None) or ())]
            text = "\n\n".join(t for t in texts if isinstance(t, str) and t)
            if text:
                parts.append({"type": "reasoning", "content": text})
        elif kind is not None:  # a built-in tool call (web search, shell, ...): named, not expanded
            parts.append({"type": "tool_call", "id": _get(item, "call_id", None) or _get(item, "id", None),
                          "name": _short_text(kind), "arguments": None})
    incomplete = _get(_get(response, "incomplete_details", None), "reason", None)
    if incomplete:
        reason = _RESPONSES_INCOMPLETE.get(incomplete, _short_text(incomplete))
    else:
        reason = "tool_calls" if called else "stop"
    return {"role": "assistant", "parts": parts, "finish_reason": reason}, reason


_MAX_OUTPUT_ITEMS = 64


def _is_responses_api(response: Any) -> bool:
    return not _get(response, "choices", None) and isinstance(_get(response, "output", None), list)


def _choice_message(choice: Any) -> Any:
    """A choice's message as AG2's client returned it; a legacy text completion's choice has ``text`` instead."""
    message = _get(choice, "message", None)
    if message is None and isinstance(_get(choice, "text", None), str):
        return {"role": "assistant", "content": _get(choice, "text", None)}
    return message


def finish_reasons(response: Any) -> list[str]:
    if _is_responses_api(response):
        return [_responses_output(response)[1]]
    choices = _get(response, "choices", None) or []
    return [_short_text(_get(c, "finish_reason", None)) for c in choices[:16] if _get(c, "finish_reason", None)]


_THINKING_PREFIX = "[Thinking]\n"  # how AG2's AnthropicClient folds thinking blocks into the answer's text


def _with_reasoning(message: Any, reasoning: str) -> Any:
    """The message with the reasoning text the provider SDK reported (``provider_tap``) as its own part: AG2's
    Anthropic client prefixes the answer with it (``"[Thinking]\\n{thinking}\\n\\n{text}"``), taken off exactly; AG2's
    stream assembly drops it (OpenAI-compatible ``reasoning_content``)."""
    plain = plain_message(message)
    if not isinstance(plain, Mapping) or plain.get("reasoning_content") or plain.get("reasoning"):
        return message
    text = plain.get("content")
    prefix = _THINKING_PREFIX + reasoning
    if isinstance(text, str) and text.startswith(prefix):
        text = text[len(prefix):]
        text = text[2:] if text.startswith("\n\n") else text
    return {**plain, "content": text, "reasoning_content": reasoning}


def llm_response_content(response: Any, max_chars: int, reasoning: Mapping[int, str] | None = None) -> dict:
    """``gen_ai.output.messages`` of a model call: one assistant message per choice, whatever object the client
    returned (openai's ChatCompletion, AG2's copy of it that its other clients build, a custom client's dicts or
    namespaces, a Responses API ``Response``). ``reasoning``: per choice index, reasoning text AG2 did not keep
    apart (from the provider SDK's own reply)."""
    if _is_responses_api(response):
        return {k.OUTPUT_MESSAGES: to_json([_responses_output(response)[0]], max_chars)}
    choices = _get(response, "choices", None) or []
    if not choices:
        return {}
    messages = [_choice_message(c) for c in choices[:16]]
    for index, text in (reasoning or {}).items():
        if isinstance(index, int) and 0 <= index < len(messages) and isinstance(text, str) and text:
            messages[index] = _with_reasoning(messages[index], text)
    reasons = [_get(c, "finish_reason", None) for c in choices[:16]]
    return {k.OUTPUT_MESSAGES: output_messages_json(messages, reasons, max_chars)}


def usage_fingerprint(summary: Any) -> tuple:
    """A cheap snapshot of OpenAIWrapper's usage summary, to tell a cache hit (total moves, actual does not)."""
    if not isinstance(summary, Mapping):
        return (None,)
    tokens = sum(v.get("total_tokens", 0) for v in summary.values() if isinstance(v, Mapping))
    return (summary.get("total_cost"), tokens)


# --- tools, handoffs, code, human input, speaker selection -------------------------------------------------------------

def tool_call(agent: Any, func_call: Any, call_id: Any) -> tuple[str, dict]:
    name = _get(func_call, "name", None) or "unknown"
    attrs: dict[str, Any] = {
        k.OPERATION_NAME: k.OP_TOOL,
        k.TOOL_NAME: str(name),
        k.TOOL_TYPE: "function",
        k.AG2_SPAN_TYPE: k.SPAN_TYPE_TOOL,
    }
    if call_id is not None:  # chosen by the model: bounded and valid UTF-8
        attrs[k.TOOL_CALL_ID] = _short_text(call_id)
    for tool in getattr(agent, "_tools", None) or ():
        if getattr(tool, "name", None) == name and isinstance(getattr(tool, "description", None), str):
            attrs[k.TOOL_DESCRIPTION] = tool.description[:1024]
            break
    agent_name = name_of(agent)
    if agent_name:
        attrs[k.AGENT_NAME] = agent_name
    return str(name), attrs


def tool_arguments_content(func_call: Any, max_chars: int) -> dict:
    arguments = _get(func_call, "arguments", None)
    if arguments is None:
        return {}
    return {k.TOOL_CALL_ARGUMENTS: to_text(arguments, max_chars)}


def tool_result_content(result: Any, max_chars: int) -> dict:
    """The tool's result as AG2 produced it: a string as it is (``"2"`` stays the string ``"2"``); anything else as
    bounded JSON, marked so that a reader (the MLflow mapping) knows to parse it back."""
    content = _get(result, "content", None)
    if content is None:
        return {}
    if isinstance(content, str):
        return {k.TOOL_CALL_RESULT: to_text(content, max_chars)}
    return {k.TOOL_CALL_RESULT: to_json(content, max_chars), k.AG2_TOOL_RESULT_ENCODING: "json"}


def handoff(kind: str, source_agent: Any, target: Any) -> tuple[str, dict]:
    display = getattr(target, "display_name", None)
    target_name = display() if callable(display) else str(target)
    tool = f"transfer_to_{target_name}".replace(" ", "_")
    attrs = {
        k.OPERATION_NAME: k.OP_TOOL,
        k.TOOL_NAME: tool,
        k.TOOL_TYPE: "extension",
        k.TRANSFER_MODE: "pass_control",
        k.TRANSFER_TARGET_NAME: target_name,
        k.AG2_SPAN_TYPE: k.SPAN_TYPE_HANDOFF,
        "ag2.handoff.kind": kind,
    }
    if name_of(source_agent):
        attrs[k.AGENT_NAME] = name_of(source_agent)
    return tool, attrs


def speaker_selection(groupchat: Any, last_speaker: Any) -> dict:
    method = getattr(groupchat, "speaker_selection_method", None)
    if callable(method):
        method = f"callable:{getattr(method, '__name__', type(method).__name__)}"
    attrs: dict[str, Any] = {k.AG2_SPAN_TYPE: k.SPAN_TYPE_SPEAKER_SELECTION, k.AG2_SPEAKER_METHOD: str(method)}
    agents = getattr(groupchat, "agents", None) or []
    attrs[k.AG2_SPEAKER_CANDIDATES] = [n for n in (name_of(a) for a in agents[:64]) if n]
    if name_of(last_speaker):
        attrs[k.AG2_SENDER] = name_of(last_speaker)
    return attrs


def code_blocks_content(code_blocks: Any, max_chars: int) -> dict:
    blocks = []
    for block in list(code_blocks or [])[:32]:
        if isinstance(block, (tuple, list)) and len(block) == 2:
            blocks.append({"language": block[0], "code": block[1]})
        else:
            blocks.append({"language": _get(block, "language", None), "code": _get(block, "code", None)})
    return {k.AG2_CODE_BLOCKS: to_json(blocks, max_chars)}


def code_languages(code_blocks: Any) -> list[str]:
    langs = []
    for block in list(code_blocks or [])[:32]:
        lang = block[0] if isinstance(block, (tuple, list)) and block else _get(block, "language", None)
        if isinstance(lang, str) and lang not in langs:
            langs.append(lang)
    return langs
