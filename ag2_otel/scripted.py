"""A scripted AG2 model client: real usage numbers through AG2's own ``OpenAIWrapper``, no network, no API key.

Used by the offline demo and the benchmarks (the tests' default LLM is AG2's real OpenAIClient against a local
OpenAI-compatible server). It returns the objects AG2's OpenAIClient returns (openai's ``ChatCompletion``), so the
demo records exactly what a user of the real client sees. AG2 calls it exactly as it calls a provider client, so usage, cost
and caching flow through ``OpenAIWrapper.create`` as in production::

    llm_config = {"config_list": [{"model": "scripted-model", "model_client_cls": "ScriptedClient"}]}
    agent = ConversableAgent("assistant", llm_config=llm_config)
    agent.register_model_client(ScriptedClient, script=[Step(text="hello", prompt_tokens=12, completion_tokens=3)])

Register the client after ``register_for_llm``: AG2 rebuilds the client when a tool is registered.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

PRICE_PER_INPUT_TOKEN = 0.000001
PRICE_PER_OUTPUT_TOKEN = 0.000002

_ids = itertools.count(1)
_ids_lock = threading.Lock()


def _next_id(prefix: str) -> str:
    with _ids_lock:
        return f"{prefix}-{next(_ids)}"


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None


@dataclass
class Step:
    """One scripted model answer: text and/or tool calls, with the usage the 'provider' reports."""

    text: str | None = None
    tool_calls: Sequence[ToolCall] = ()
    prompt_tokens: int = 10
    completion_tokens: int = 5
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    finish_reason: str | None = None
    raise_error: BaseException | None = None
    response_model: str | None = None


Script = Sequence[Step | str] | Callable[[list[dict[str, Any]]], Step | str]


class ScriptCursor:
    """Steps through a script: a list of steps in order (then the last one again, or TERMINATE), or a function of
    the messages sent. Shared by ScriptedClient and the tests' local OpenAI-compatible server."""

    def __init__(self, script: Script = (), repeat_last: bool = True) -> None:
        self.script, self.repeat_last = script, repeat_last
        self.position = 0
        self.lock = threading.Lock()

    def next_step(self, messages: list[dict[str, Any]]) -> Step:
        if callable(self.script):  # outside the lock: a script may wait for a concurrent call
            step = self.script(messages)
        else:
            with self.lock:
                if not self.script:
                    step = Step(text="TERMINATE")
                elif self.position < len(self.script):
                    step = self.script[self.position]
                    self.position += 1
                elif self.repeat_last:
                    step = self.script[-1]
                else:
                    step = Step(text="TERMINATE")
        return Step(text=step) if isinstance(step, str) else step


def completion_body(step: Step, model: str) -> dict[str, Any]:
    """The chat completion (OpenAI's JSON shape) a provider answers for ``step``: what ScriptedClient validates into
    a ``ChatCompletion`` and what the AG2 1.x demo's transport serves to the real openai SDK."""
    message: dict[str, Any] = {"role": "assistant", "content": step.text}
    if step.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id or _next_id("call"),
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments),
                },
            }
            for call in step.tool_calls
        ]
    finish_reason = step.finish_reason or ("tool_calls" if step.tool_calls else "stop")
    usage: dict[str, Any] = {
        "prompt_tokens": step.prompt_tokens,
        "completion_tokens": step.completion_tokens,
        "total_tokens": step.prompt_tokens + step.completion_tokens,
    }
    if step.cached_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": step.cached_tokens}
    if step.reasoning_tokens:
        usage["completion_tokens_details"] = {"reasoning_tokens": step.reasoning_tokens}
    return {
        "id": _next_id("chatcmpl"),
        "model": step.response_model or model,
        "object": "chat.completion",
        "created": int(time.time()),
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": usage,
    }


class ScriptedClient:
    """Implements AG2's ModelClient protocol (create, message_retrieval, cost, get_usage)."""

    def __init__(self, config: dict[str, Any], script: Script = (), repeat_last: bool = True, **_: Any) -> None:
        self.model = config.get("model", "scripted-model")
        self._cursor = ScriptCursor(script, repeat_last)
        self.calls = 0

    def _next_step(self, messages: list[dict[str, Any]]) -> Step:
        return self._cursor.next_step(messages)

    def create(self, params: dict[str, Any]) -> Any:
        self.calls += 1
        step = self._next_step(list(params.get("messages") or []))
        if step.raise_error is not None:
            raise step.raise_error
        # the same object OpenAIClient returns (openai's ChatCompletion; AG2's own copy of it without openai)
        return _chat_completion_type().model_validate(completion_body(step, self.model))

    def message_retrieval(self, response: Any) -> list[Any]:
        """As OpenAIClient: the message object when it calls tools, else its text."""
        return [
            choice.message if choice.message.tool_calls or choice.message.function_call else choice.message.content
            for choice in response.choices
        ]

    def cost(self, response: Any) -> float:
        usage = response.usage
        return usage.prompt_tokens * PRICE_PER_INPUT_TOKEN + usage.completion_tokens * PRICE_PER_OUTPUT_TOKEN

    @staticmethod
    def get_usage(response: Any) -> dict[str, Any]:
        usage = response.usage
        return {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "cost": getattr(response, "cost", None),
            "model": response.model,
        }


def _chat_completion_type() -> type:
    """openai's ChatCompletion (what AG2's OpenAIClient returns), else the copy AG2 ships for its other clients."""
    try:
        from openai.types.chat import ChatCompletion
    except ImportError:
        from autogen.oai.oai_models import ChatCompletion
    return ChatCompletion


def scripted_llm_config(model: str = "scripted-model", **extra: Any) -> dict[str, Any]:
    """An llm_config whose only entry is served by :class:`ScriptedClient`."""
    return {"config_list": [{"model": model, "model_client_cls": "ScriptedClient", **extra}], "cache_seed": None}
