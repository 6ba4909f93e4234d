"""Local servers (stdlib only) speaking the wire protocols of the provider SDKs behind AG2's other client classes:
a stand-in for the network only. AG2's own ``GroqClient``, ``TogetherClient``, ``CerebrasClient``,
``MistralAIClient``, ``OllamaClient``, ``GeminiClient``, ``CohereClient`` and ``BedrockClient`` call the real SDKs
(``groq``, ``together``, ``cerebras-cloud-sdk``, ``mistralai``, ``ollama``, ``google-genai``, ``cohere``, ``boto3``),
which send HTTP here and parse these bytes into their own response objects.

One server class per protocol, each with the routes that SDK calls (every request is recorded: method, path, headers,
parsed body) and body builders for a plain text answer and tool calls with usage:

========== ===================================================== ======================================================
stub        route                                                 reply body
========== ===================================================== ======================================================
Groq        ``POST /openai/v1/chat/completions``                  chat.completion + ``x_groq`` (:func:`groq_completion`)
Together    ``POST /v1/chat/completions``                         chat.completion (:func:`together_completion`)
Cerebras    ``POST /v1/chat/completions``, ``GET /v1/tcp_warming`` chat.completion + ``time_info``
Mistral     ``POST /v1/chat/completions``                         Mistral's ChatCompletionResponse
Ollama      ``POST /api/chat``                                    Ollama's ChatResponse (``done_reason``, eval counts)
Gemini      ``POST /v1beta/models/{model}:generateContent``       GenerateContentResponse (candidates, usageMetadata)
Cohere      ``POST /v2/chat``                                     Cohere v2 chat response (billed_units)
Bedrock     ``POST /model/{modelId}/converse``                    Converse output/stopReason/usage + x-amzn-RequestId
========== ===================================================== ======================================================

Each server checks the credential header its API wants (a missing key answers 401 as the API does) and, for
Bedrock, that the request is SigV4-signed (an ``AWS4-HMAC-SHA256`` Authorization header); signatures are not
verified. The script machinery (a list of :class:`Reply` or functions of the request, the last one repeating) is
:class:`tests.openai_stub.ScriptedServer`'s.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Iterable
from urllib.parse import unquote

from tests.openai_stub import CREATED, Reply, Request, ScriptedServer, ScriptItem, completion, tool_call

__all__ = [
    "Reply", "Request", "tool_call",
    "GroqStub", "TogetherStub", "CerebrasStub", "MistralStub", "OllamaStub", "GeminiStub", "CohereStub",
    "BedrockStub",
    "groq_completion", "together_completion", "cerebras_completion", "mistral_completion", "ollama_chat",
    "ollama_tool_call", "gemini_response", "gemini_function_call", "cohere_chat", "cohere_tool_call",
    "bedrock_converse", "bedrock_tool_use",
]

_ids = itertools.count(1)


def _error(status: int, message: str) -> tuple[int, Any, None]:
    return status, {"error": {"message": message, "type": "invalid_request_error"}}, None


class _ProviderStub(ScriptedServer):
    """A ScriptedServer whose replies may carry response headers (``Reply.stream`` is not used by these stubs)."""

    thread_name = "provider-stub"

    def headers_for(self, request: Request, reply: Reply | None, body: Any) -> dict[str, str]:
        return {}

    def _answer(self, handler, request: Request, reply: Reply | None) -> None:
        try:
            status, body, events = self.route(request, reply)
        except Exception as exc:  # a broken script must show up in the test, not hang the client
            status, body, events = 500, {"error": {"message": f"stub failed: {exc!r}"}}, None
        if events is not None:  # not used by these protocols; keep the parent's behaviour anyway
            return super()._answer(handler, request, reply)
        try:
            payload = json.dumps(body).encode()
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            for name, value in self.headers_for(request, reply, body).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:  # the client gave up and closed the socket
            pass

    def _reply_body(self, reply: Reply | None, default: Any) -> tuple[int, Any]:
        assert reply is not None
        return reply.status, (default if reply.body is None else reply.body)

    def _bearer(self, request: Request) -> bool:
        auth = request.header("authorization") or ""
        return auth.startswith("Bearer ") and len(auth) > len("Bearer ")


# --- OpenAI-compatible chat completions (Groq, Together, Cerebras, Mistral) -------------------------------------------

def groq_completion(text: str | None = "hello", *, tool_calls: Iterable[dict] | None = None,
                    model: str = "llama-3.3-70b-versatile", prompt_tokens: int = 17, completion_tokens: int = 4,
                    finish_reason: str | None = None, id: str | None = None) -> dict[str, Any]:
    """Groq's chat.completion: OpenAI's shape plus ``x_groq.id`` and Groq's timing fields in ``usage``."""
    body = completion(text, tool_calls=tool_calls, model=model, prompt_tokens=prompt_tokens,
                      completion_tokens=completion_tokens, finish_reason=finish_reason,
                      id=id or f"chatcmpl-groq-{next(_ids)}")
    body["usage"].update({"queue_time": 0.01, "prompt_time": 0.002, "completion_time": 0.03, "total_time": 0.032})
    body["x_groq"] = {"id": f"req_stub_{next(_ids)}"}
    return body


def together_completion(text: str | None = "hello", *, tool_calls: Iterable[dict] | None = None,
                        model: str = "meta-llama/Llama-3.3-70B-Instruct-Turbo", prompt_tokens: int = 17,
                        completion_tokens: int = 4, finish_reason: str | None = None,
                        id: str | None = None) -> dict[str, Any]:
    """Together's chat.completion (OpenAI's shape, ``prompt: []``, choices with ``seed``)."""
    body = completion(text, tool_calls=tool_calls, model=model, prompt_tokens=prompt_tokens,
                      completion_tokens=completion_tokens, finish_reason=finish_reason,
                      id=id or f"together-{next(_ids)}")
    body.pop("system_fingerprint", None)
    body["prompt"] = []
    for item in body["choices"]:
        item["seed"] = 1234
        item["message"].pop("refusal", None)
    return body


def cerebras_completion(text: str | None = "hello", *, tool_calls: Iterable[dict] | None = None,
                        model: str = "llama3.1-8b", prompt_tokens: int = 17, completion_tokens: int = 4,
                        finish_reason: str | None = None, id: str | None = None) -> dict[str, Any]:
    """Cerebras' chat.completion: OpenAI's shape plus ``time_info``."""
    body = completion(text, tool_calls=tool_calls, model=model, prompt_tokens=prompt_tokens,
                      completion_tokens=completion_tokens, finish_reason=finish_reason,
                      id=id or f"chatcmpl-cerebras-{next(_ids)}")
    for item in body["choices"]:
        item["message"].pop("refusal", None)
    body["time_info"] = {"queue_time": 0.0001, "prompt_time": 0.001, "completion_time": 0.01, "total_time": 0.012,
                         "created": CREATED}
    return body


def mistral_completion(text: str | None = "hello", *, tool_calls: Iterable[dict] | None = None,
                       model: str = "mistral-small-latest", prompt_tokens: int = 17, completion_tokens: int = 4,
                       finish_reason: str | None = None, id: str | None = None) -> dict[str, Any]:
    """Mistral's ChatCompletionResponse: OpenAI's shape; a tool call's ``arguments`` is a JSON string, as the API
    sends it."""
    calls = list(tool_calls or ())
    message: dict[str, Any] = {"role": "assistant", "content": "" if text is None and calls else text,
                               "tool_calls": calls or None, "prefix": False}
    return {
        "id": id or f"mistral-{next(_ids):08x}",
        "object": "chat.completion",
        "model": model,
        "created": CREATED,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
        "choices": [{"index": 0, "message": message,
                     "finish_reason": finish_reason or ("tool_calls" if calls else "stop")}],
    }


class _ChatCompletionsStub(_ProviderStub):
    path = "/v1/chat/completions"
    default_body = staticmethod(completion)

    def route(self, request: Request, reply: Reply | None) -> tuple[int, Any, None]:
        if request.method == "GET":
            return _error(404, f"no route {request.path}")
        if request.route.rstrip("/") != self.path:
            return _error(404, f"no route {request.path}")
        if not self._bearer(request):
            return _error(401, "Invalid API Key")
        status, body = self._reply_body(reply, self.default_body())
        return status, body, None


class GroqStub(_ChatCompletionsStub):
    """``GroqClient`` passes the config entry's ``base_url`` to ``groq.Groq``: ``llm_config`` points it here."""

    thread_name = "groq-stub"
    path = "/openai/v1/chat/completions"
    default_body = staticmethod(groq_completion)

    def llm_config(self, api_key: str, model: str = "llama-3.3-70b-versatile", **extra: Any) -> dict[str, Any]:
        return {"config_list": [{"api_type": "groq", "model": model, "api_key": api_key, "base_url": self.root_url,
                                 **extra}], "cache_seed": None}


class TogetherStub(_ChatCompletionsStub):
    """``TogetherClient`` builds ``together.Together(api_key=...)`` with no base URL: the SDK reads
    ``TOGETHER_BASE_URL`` (set it to :attr:`base_url`)."""

    thread_name = "together-stub"
    default_body = staticmethod(together_completion)

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def llm_config(self, api_key: str, model: str = "meta-llama/Llama-3.3-70B-Instruct-Turbo",
                   **extra: Any) -> dict[str, Any]:
        return {"config_list": [{"api_type": "together", "model": model, "api_key": api_key, **extra}],
                "cache_seed": None}


class CerebrasStub(_ChatCompletionsStub):
    """``CerebrasClient`` builds ``Cerebras(api_key=..., max_retries=5)`` with no base URL: the SDK reads
    ``CEREBRAS_BASE_URL`` (set it to :attr:`root_url`). The SDK's TCP warm-up ``GET /v1/tcp_warming`` is answered."""

    thread_name = "cerebras-stub"
    default_body = staticmethod(cerebras_completion)

    def route(self, request: Request, reply: Reply | None) -> tuple[int, Any, None]:
        if request.method == "GET" and request.route == "/v1/tcp_warming":
            return 200, "ok", None
        return super().route(request, reply)

    def llm_config(self, api_key: str, model: str = "llama3.1-8b", **extra: Any) -> dict[str, Any]:
        return {"config_list": [{"api_type": "cerebras", "model": model, "api_key": api_key, **extra}],
                "cache_seed": None}

    @property
    def chat_requests(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST"]


class MistralStub(_ChatCompletionsStub):
    """``MistralAIClient`` builds ``mistralai.Mistral(api_key=...)`` with no server URL, and the SDK reads no
    environment variable for one: the test points the SDK object AG2 built here (``sdk_configuration.server_url``)."""

    thread_name = "mistral-stub"
    default_body = staticmethod(mistral_completion)

    def llm_config(self, api_key: str, model: str = "mistral-small-latest", **extra: Any) -> dict[str, Any]:
        return {"config_list": [{"api_type": "mistral", "model": model, "api_key": api_key, **extra}],
                "cache_seed": None}


# --- Ollama ----------------------------------------------------------------------------------------------------------

def ollama_tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """An Ollama tool call: no id, ``arguments`` an object (not a JSON string)."""
    return {"function": {"name": name, "arguments": arguments}}


def ollama_chat(text: str = "hello", *, tool_calls: Iterable[dict] | None = None, model: str = "llama3.1",
                prompt_eval_count: int = 17, eval_count: int = 4, done_reason: str = "stop",
                created_at: str | None = None) -> dict[str, Any]:
    """Ollama's ``/api/chat`` reply (``stream: false``)."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    calls = list(tool_calls or ())
    if calls:
        message["tool_calls"] = calls
    return {
        "model": model,
        "created_at": created_at or f"2026-11-29T10:00:{next(_ids) % 60:02d}.123456Z",
        "message": message,
        "done": True,
        "done_reason": done_reason,
        "total_duration": 1_200_000,
        "load_duration": 100_000,
        "prompt_eval_count": prompt_eval_count,
        "prompt_eval_duration": 300_000,
        "eval_count": eval_count,
        "eval_duration": 800_000,
    }


class OllamaStub(_ProviderStub):
    """``OllamaClient`` uses ``ollama.Client(host=client_host)`` when the entry has ``client_host``."""

    thread_name = "ollama-stub"

    def route(self, request: Request, reply: Reply | None) -> tuple[int, Any, None]:
        if request.method != "POST" or request.route != "/api/chat":
            return 404, {"error": f"no route {request.path}"}, None
        if request.body.get("stream") is not False:
            return 400, {"error": "the stub serves stream=false only"}, None
        status, body = self._reply_body(reply, ollama_chat())
        return status, body, None

    def llm_config(self, model: str = "llama3.1", **extra: Any) -> dict[str, Any]:
        return {"config_list": [{"api_type": "ollama", "model": model, "client_host": self.root_url, **extra}],
                "cache_seed": None}


# --- Gemini API (google-genai, api-key path) ---------------------------------------------------------------------------

def gemini_function_call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"functionCall": {"name": name, "args": args}}


def gemini_response(text: str | None = "hello", *, function_calls: Iterable[dict] = (),
                    model_version: str = "gemini-2.5-flash", prompt_tokens: int = 17, candidates_tokens: int = 4,
                    thoughts_tokens: int | None = None, finish_reason: str = "STOP",
                    response_id: str | None = None) -> dict[str, Any]:
    """A ``GenerateContentResponse`` (the REST JSON, camelCase): one candidate whose parts are the text, then the
    function calls."""
    parts: list[dict[str, Any]] = []
    if text is not None:
        parts.append({"text": text})
    parts.extend(function_calls)
    usage: dict[str, Any] = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": candidates_tokens,
                             "totalTokenCount": prompt_tokens + candidates_tokens + (thoughts_tokens or 0),
                             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}]}
    if thoughts_tokens is not None:
        usage["thoughtsTokenCount"] = thoughts_tokens
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish_reason, "index": 0}],
        "usageMetadata": usage,
        "modelVersion": model_version,
        "responseId": response_id or f"gemini-resp-{next(_ids)}",
    }


class GeminiStub(_ProviderStub):
    """The Gemini API (``generativelanguage``) path of ``google.genai.Client(api_key=...)``. AG2 passes no base URL:
    the SDK reads ``GOOGLE_GEMINI_BASE_URL`` (set it to :attr:`root_url`). Needs the ``x-goog-api-key`` header."""

    thread_name = "gemini-stub"

    def route(self, request: Request, reply: Reply | None) -> tuple[int, Any, None]:
        route = request.route
        if request.method != "POST" or not route.startswith("/v1beta/models/") or not route.endswith(
                ":generateContent"):
            return 404, {"error": {"code": 404, "message": f"no route {request.path}", "status": "NOT_FOUND"}}, None
        if not request.header("x-goog-api-key"):
            return 403, {"error": {"code": 403, "message": "Method doesn't allow unregistered callers",
                                   "status": "PERMISSION_DENIED"}}, None
        status, body = self._reply_body(reply, gemini_response())
        return status, body, None

    def model_of(self, request: Request) -> str:
        return unquote(request.route[len("/v1beta/models/"):-len(":generateContent")])

    def llm_config(self, api_key: str, model: str = "gemini-2.5-flash", **extra: Any) -> dict[str, Any]:
        return {"config_list": [{"api_type": "google", "model": model, "api_key": api_key, **extra}],
                "cache_seed": None}


# --- Cohere v2 chat --------------------------------------------------------------------------------------------------

def cohere_tool_call(name: str, arguments: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    return {"id": id or f"calculator_{next(_ids)}_stub", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


def cohere_chat(text: str | None = "hello", *, tool_calls: Iterable[dict] | None = None, tool_plan: str | None = None,
                input_tokens: int = 17, output_tokens: int = 4, finish_reason: str | None = None,
                id: str | None = None) -> dict[str, Any]:
    """Cohere's ``POST /v2/chat`` reply: ``message.content`` text items or ``tool_plan`` + ``tool_calls``;
    ``usage.billed_units`` (what AG2 reads) and ``usage.tokens``."""
    calls = list(tool_calls or ())
    message: dict[str, Any] = {"role": "assistant"}
    if calls:
        message["tool_plan"] = tool_plan if tool_plan is not None else "I will use the calculator."
        message["tool_calls"] = calls
    else:
        message["content"] = [{"type": "text", "text": text}]
    return {
        "id": id or f"cohere-{next(_ids)}",
        "finish_reason": finish_reason or ("TOOL_CALL" if calls else "COMPLETE"),
        "message": message,
        "usage": {"billed_units": {"input_tokens": input_tokens, "output_tokens": output_tokens},
                  "tokens": {"input_tokens": input_tokens + 200, "output_tokens": output_tokens}},
    }


class CohereStub(_ProviderStub):
    """``CohereClient`` builds ``cohere.ClientV2(api_key=...)`` with no base URL: the SDK takes ``CO_API_URL`` as
    its default ``base_url`` — read when ``cohere`` is imported, so it must be in the environment of the process
    before that import (set it to :attr:`root_url`)."""

    thread_name = "cohere-stub"

    def route(self, request: Request, reply: Reply | None) -> tuple[int, Any, None]:
        if request.method != "POST" or request.route != "/v2/chat":
            return 404, {"message": f"no route {request.path}"}, None
        if not self._bearer(request):
            return 401, {"message": "no api key supplied"}, None
        status, body = self._reply_body(reply, cohere_chat())
        return status, body, None


# --- Amazon Bedrock Converse ------------------------------------------------------------------------------------------

def bedrock_tool_use(name: str, input: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    return {"toolUse": {"toolUseId": id or f"tooluse_stub{next(_ids)}", "name": name, "input": input}}


def bedrock_converse(text: str | None = "hello", *, tool_uses: Iterable[dict] = (), input_tokens: int = 17,
                     output_tokens: int = 4, stop_reason: str | None = None) -> dict[str, Any]:
    """A ``Converse`` response body: the assistant message's content blocks (text, then toolUse), ``stopReason``,
    ``usage``, ``metrics``."""
    uses = list(tool_uses)
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"text": text})
    content.extend(uses)
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason or ("tool_use" if uses else "end_turn"),
        "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens,
                  "totalTokens": input_tokens + output_tokens},
        "metrics": {"latencyMs": 321},
    }


class BedrockStub(_ProviderStub):
    """``bedrock-runtime`` Converse over HTTP: ``POST /model/{modelId}/converse``. AG2 passes no endpoint: botocore
    reads ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` (set it to :attr:`root_url`). Every reply carries an
    ``x-amzn-RequestId`` (botocore's ``ResponseMetadata.RequestId``, AG2's response id); ``request_ids`` lists them."""

    thread_name = "bedrock-stub"

    def __init__(self, script: list[ScriptItem] | None = None) -> None:
        self.request_ids: list[str] = []
        super().__init__(script)

    def route(self, request: Request, reply: Reply | None) -> tuple[int, Any, None]:
        parts = request.route.split("/")
        if request.method != "POST" or len(parts) != 4 or parts[1] != "model" or parts[3] != "converse":
            return 404, {"message": f"no route {request.path}"}, None
        if not (request.header("authorization") or "").startswith("AWS4-HMAC-SHA256 Credential="):
            return 403, {"message": "Missing Authentication Token"}, None
        status, body = self._reply_body(reply, bedrock_converse())
        return status, body, None

    def headers_for(self, request: Request, reply: Reply | None, body: Any) -> dict[str, str]:
        request_id = f"b1e2d3c4-0000-4000-8000-{next(_ids):012d}"
        self.request_ids.append(request_id)
        return {"x-amzn-RequestId": request_id}

    @staticmethod
    def model_of(request: Request) -> str:
        return unquote(request.route.split("/")[2])

    def llm_config(self, model: str = "anthropic.claude-3-5-sonnet-20240620-v1:0", **extra: Any) -> dict[str, Any]:
        return {"config_list": [{"api_type": "bedrock", "model": model, "aws_region": "us-east-1",
                                 "aws_access_key": "AKIASTUBSTUBSTUB0000", "aws_secret_key": extra.pop(
                                     "aws_secret_key", "stub-secret-key"), **extra}],
                "cache_seed": None}
