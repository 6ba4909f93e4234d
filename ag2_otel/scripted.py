"""A scripted AG2 model client: real usage numbers through AG2's own ``OpenAIWrapper``, no network, no API key.

Used by the demo, the tests and the benchmarks. AG2 calls it exactly as it calls a provider client, so usage, cost
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
from dataclasses import dataclass, field
from types import SimpleNamespace
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


class ScriptedClient:
    """Implements AG2's ModelClient protocol (create, message_retrieval, cost, get_usage)."""

    def __init__(self, config: dict[str, Any], script: Script = (), repeat_last: bool = True, **_: Any) -> None:
        self.model = config.get("model", "scripted-model")
        self._script = script
        self._repeat_last = repeat_last
        self._position = 0
        self._lock = threading.Lock()
        self.calls = 0

    def _next_step(self, messages: list[dict[str, Any]]) -> Step:
        if callable(self._script):
            step = self._script(messages)
        else:
            with self._lock:
                if not self._script:
                    step = Step(text="TERMINATE")
                elif self._position < len(self._script):
                    step = self._script[self._position]
                    self._position += 1
                elif self._repeat_last:
                    step = self._script[-1]
                else:
                    step = Step(text="TERMINATE")
        return Step(text=step) if isinstance(step, str) else step

    def create(self, params: dict[str, Any]) -> Any:
        self.calls += 1
        step = self._next_step(list(params.get("messages") or []))
        if step.raise_error is not None:
            raise step.raise_error
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
        usage = SimpleNamespace(
            prompt_tokens=step.prompt_tokens,
            completion_tokens=step.completion_tokens,
            total_tokens=step.prompt_tokens + step.completion_tokens,
            prompt_tokens_details=SimpleNamespace(cached_tokens=step.cached_tokens) if step.cached_tokens else None,
            completion_tokens_details=(
                SimpleNamespace(reasoning_tokens=step.reasoning_tokens) if step.reasoning_tokens else None
            ),
        )
        return SimpleNamespace(
            id=_next_id("chatcmpl"),
            model=step.response_model or self.model,
            object="chat.completion",
            choices=[SimpleNamespace(index=0, message=message, finish_reason=finish_reason)],
            usage=usage,
            cost=None,
        )

    def message_retrieval(self, response: Any) -> list[Any]:
        out = []
        for choice in response.choices:
            message = dict(choice.message)
            out.append(message["content"] if "tool_calls" not in message else message)
        return out

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
            "cost": response.cost,
            "model": response.model,
        }


def scripted_llm_config(model: str = "scripted-model", **extra: Any) -> dict[str, Any]:
    """An llm_config whose only entry is served by :class:`ScriptedClient`."""
    return {"config_list": [{"model": model, "model_client_cls": "ScriptedClient", **extra}], "cache_seed": None}
