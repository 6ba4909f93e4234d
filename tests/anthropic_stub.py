"""A local Anthropic Messages-API server (stdlib only) for driving AG2's real ``AnthropicClient`` through the real
``anthropic`` SDK: ``POST /v1/messages``, non-streaming and streaming.

A scripted reply is a ``message`` body built by :func:`message` (thinking, text and tool_use blocks, stop reason,
usage with ``cache_read_input_tokens`` / ``cache_creation_input_tokens``). With ``"stream": true`` in the request the
same message is served as the SSE event sequence the real API sends: ``message_start`` (the message with empty content
and the input-side usage), per block ``content_block_start`` / ``content_block_delta`` (``text_delta``,
``input_json_delta``, ``thinking_delta`` + ``signature_delta``) / ``content_block_stop``, a ``ping``,
``message_delta`` (stop reason and output usage) and ``message_stop``.

Needs an API key (``x-api-key``, or ``Authorization: Bearer`` as anthropic 2.x sends it) and the
``anthropic-version`` header, as the API does. The script machinery, delays and request
recording are :class:`tests.openai_stub.ScriptedServer`'s.
"""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any, Iterable

from tests.openai_stub import Reply, Request, ScriptedServer, ScriptItem

__all__ = ["AnthropicStub", "Reply", "Request", "message", "text_block", "thinking_block", "tool_use", "events",
           "error_body"]

_ids = itertools.count(1)


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def thinking_block(thinking: str, signature: str = "sig-stub") -> dict[str, Any]:
    return {"type": "thinking", "thinking": thinking, "signature": signature}


def tool_use(name: str, input: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": id or f"toolu_stub_{next(_ids)}", "name": name, "input": input}


def message(text: str | None = "hello", *, tool_uses: Iterable[dict] = (), thinking: str | None = None,
            content: list[dict] | None = None, model: str = "claude-sonnet-4-5-20250929",
            stop_reason: str | None = None, input_tokens: int = 21, output_tokens: int = 6,
            cache_read_input_tokens: int | None = None, cache_creation_input_tokens: int | None = None,
            id: str | None = None) -> dict[str, Any]:
    """A Messages API ``message``. Content blocks: ``content`` as given, else thinking, text, then the tool_use blocks.
    ``stop_reason`` defaults to ``tool_use`` when there are tool uses, else ``end_turn``."""
    if content is None:
        content = []
        if thinking is not None:
            content.append(thinking_block(thinking))
        if text is not None:
            content.append(text_block(text))
        content.extend(tool_uses)
    usage: dict[str, Any] = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    if cache_read_input_tokens is not None:
        usage["cache_read_input_tokens"] = cache_read_input_tokens
    if cache_creation_input_tokens is not None:
        usage["cache_creation_input_tokens"] = cache_creation_input_tokens
    has_tool = any(block.get("type") == "tool_use" for block in content)
    return {"id": id or f"msg_stub_{next(_ids)}", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason or ("tool_use" if has_tool else "end_turn"),
            "stop_sequence": None, "usage": usage}


def error_body(message: str = "Internal server error", type: str = "api_error") -> dict[str, Any]:
    return {"type": "error", "error": {"type": type, "message": message}}


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def events(body: dict[str, Any], *, piece: int = 5) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) sequence the real API streams for the message ``body``."""
    usage = body.get("usage") or {}
    start_usage = {key: value for key, value in usage.items() if key != "output_tokens"}
    start_usage["output_tokens"] = 1  # the API reports a provisional output count at message_start
    start = {**body, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    out: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(body.get("content") or []):
        kind = block.get("type")
        if kind == "text":
            opening: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"], piece)]
        elif kind == "thinking":
            opening = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"], piece)]
            deltas.append({"type": "signature_delta", "signature": block.get("signature", "")})
        elif kind == "tool_use":
            opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": ""}]
            deltas += [{"type": "input_json_delta", "partial_json": p}
                       for p in _pieces(json.dumps(block["input"]), piece)]
        else:  # anything else is sent whole
            opening, deltas = block, []
        out.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": opening}))
        if index == 0:
            out.append(("ping", {"type": "ping"}))
        out += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
        out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    out.append(("message_delta", {"type": "message_delta",
                                  "delta": {"stop_reason": body.get("stop_reason"), "stop_sequence": None},
                                  "usage": {"output_tokens": usage.get("output_tokens", 0)}}))
    out.append(("message_stop", {"type": "message_stop"}))
    return out


class AnthropicStub(ScriptedServer):
    """``with AnthropicStub([Reply(body=message(...)), ...]) as stub: stub.base_url`` → ``http://127.0.0.1:PORT``
    (the SDK appends ``/v1/messages``)."""

    thread_name = "anthropic-stub"

    def __init__(self, script: list[ScriptItem] | None = None) -> None:
        super().__init__(script)

    @property
    def base_url(self) -> str:
        return self.root_url

    def route(self, request: Request, reply: Reply | None) -> tuple[int, Any, list[bytes] | None]:
        if request.method != "POST" or request.route.rstrip("/") != "/v1/messages":
            return 404, error_body(f"no route {request.path}", "not_found_error"), None
        assert reply is not None
        bearer = (request.header("authorization") or "").startswith("Bearer ")
        if not request.header("x-api-key") and not bearer:  # anthropic<1 sends x-api-key, 2.x a bearer token
            return 401, error_body("x-api-key header is required", "authentication_error"), None
        if not request.header("anthropic-version"):
            return 400, error_body("anthropic-version header is required", "invalid_request_error"), None
        if reply.stream is not None:
            return reply.status, None, [_event(name, data) for name, data in reply.stream]
        body = message() if reply.body is None else reply.body
        if request.streaming and reply.status == 200 and isinstance(body, dict) and body.get("type") == "message":
            return 200, None, [_event(name, data) for name, data in events(copy.deepcopy(body))]
        return reply.status, body, None

    def llm_config(self, api_key: str, *, model: str = "claude-sonnet-4-5", timeout: int = 5,
                   **entry: Any) -> dict[str, Any]:
        """An AG2 ``api_type: "anthropic"`` llm_config for this server (no cache); ``entry`` adds config-entry keys
        (``stream=True``, ``thinking={...}``)."""
        config = {"api_type": "anthropic", "model": model, "api_key": api_key, "base_url": self.base_url,
                  "timeout": timeout, **entry}
        return {"config_list": [config], "cache_seed": None}


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()
