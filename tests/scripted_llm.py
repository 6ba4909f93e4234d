"""The suite's default model: AG2's real ``OpenAIClient`` and the ``openai`` SDK, over HTTP, to the local
OpenAI-compatible server (:mod:`tests.openai_stub`), answering from a script of :class:`ag2_otel.scripted.Step`
objects. Only the network is stood in for: the request AG2 builds, the SDK's parsing, the ``ChatCompletion`` objects,
``OpenAIWrapper``'s usage and cost all run as they do for a user.

``scripted_llm_config(script)`` replaces ``scripted_llm_config()`` + ``agent.register_model_client(ScriptedClient,
script=...)``: one process-wide server, each config entry naming its own script with a request header, so every agent
keeps its own script (a list of steps, or a function of the messages AG2 sent). ``Step.raise_error`` becomes an HTTP
500 from the server (the caller sees the openai SDK's ``InternalServerError``, as with a real provider).
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from ag2_otel.scripted import PRICE_PER_INPUT_TOKEN, PRICE_PER_OUTPUT_TOKEN, Script, ScriptCursor, Step
from tests.openai_stub import OpenAIStub, Reply, Request, completion, error_body, tool_call

API_KEY = "sk-scripted-test-key"  # a dummy: the server checks nothing
SCRIPT_HEADER = "X-Ag2-Otel-Script"
DEFAULT_MODEL = "scripted-model"
# AG2's custom pricing for a config entry: [input, output] USD per 1k tokens (ScriptedClient's prices)
PRICE = [PRICE_PER_INPUT_TOKEN * 1000, PRICE_PER_OUTPUT_TOKEN * 1000]


class _Scripted(ScriptCursor):
    """One agent's script, stepped through as ScriptedClient steps through it, counting the requests answered."""

    def __init__(self, script: Script, repeat_last: bool) -> None:
        super().__init__(script, repeat_last)
        self.calls = 0

    def next_step(self, messages: list[dict[str, Any]]) -> Step:
        with self.lock:
            self.calls += 1
        return super().next_step(messages)


def reply_for(step: Step, model: str) -> Reply:
    """The HTTP reply a provider would send for ``step``."""
    if step.raise_error is not None:
        return Reply(500, error_body(f"{type(step.raise_error).__name__}: {step.raise_error}"))
    calls = [tool_call(c.name, c.arguments, id=c.id) for c in step.tool_calls] or None
    return Reply(body=completion(step.text, model=step.response_model or model, tool_calls=calls,
                                 prompt_tokens=step.prompt_tokens, completion_tokens=step.completion_tokens,
                                 cached_tokens=step.cached_tokens, reasoning_tokens=step.reasoning_tokens,
                                 finish_reason=step.finish_reason))


class ScriptedModelServer:
    """The one local server every scripted config entry talks to."""

    def __init__(self) -> None:
        self.scripts: dict[str, _Scripted] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.stub = OpenAIStub([self._answer])

    def _answer(self, request: Request) -> Reply:
        scripted = self.scripts.get(request.header(SCRIPT_HEADER) or "")
        body = request.body if isinstance(request.body, dict) else {}
        if scripted is None:
            return Reply(400, error_body(f"no script {request.header(SCRIPT_HEADER)!r}"))
        return reply_for(scripted.next_step(list(body.get("messages") or [])), body.get("model") or DEFAULT_MODEL)

    def add(self, script: Script, repeat_last: bool) -> tuple[str, _Scripted]:
        with self._lock:
            name = f"s{next(self._ids)}"
            self.scripts[name] = _Scripted(script, repeat_last)
        return name, self.scripts[name]


_server: ScriptedModelServer | None = None
_server_lock = threading.Lock()


def server() -> ScriptedModelServer:
    global _server
    with _server_lock:
        if _server is None:
            _server = ScriptedModelServer()
        return _server


def scripted_entry(script: Script = (), *, model: str = DEFAULT_MODEL, repeat_last: bool = True,
                   **extra: Any) -> dict[str, Any]:
    """One AG2 config entry for AG2's OpenAIClient, answered from ``script``."""
    srv = server()
    name, _ = srv.add(script, repeat_last)
    entry: dict[str, Any] = {"model": model, "api_key": API_KEY, "base_url": srv.stub.base_url, "price": PRICE,
                             "default_headers": {SCRIPT_HEADER: name}}
    if _entry_takes_client_options():
        entry.update(timeout=10, max_retries=0)  # no retries of a scripted HTTP 500
    entry.update(extra)
    return entry


def _entry_takes_client_options() -> bool:
    """AG2 0.9's config entry forbids keys it does not declare (timeout, max_retries); later ones pass them on to
    the openai client."""
    try:
        from autogen.oai.client import OpenAILLMConfigEntry
    except Exception:  # noqa: BLE001
        return True
    return OpenAILLMConfigEntry.model_config.get("extra") != "forbid"


def scripted_llm_config(script: Script = (), *, model: str = DEFAULT_MODEL, repeat_last: bool = True,
                        **extra: Any) -> dict[str, Any]:
    """An llm_config whose only entry is AG2's OpenAIClient against the local server, answering from ``script``."""
    return {"config_list": [scripted_entry(script, model=model, repeat_last=repeat_last, **extra)], "cache_seed": None}


def calls_of(llm_config: dict[str, Any]) -> int:
    """How many requests the config's script has answered."""
    name = llm_config["config_list"][0]["default_headers"][SCRIPT_HEADER]
    return server().scripts[name].calls
