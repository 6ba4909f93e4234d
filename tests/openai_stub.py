"""A local OpenAI-compatible HTTP server (stdlib only) for driving AG2's real client classes through the real
``openai`` SDK: a stand-in for the network only, never for the objects AG2 and the SDK build.

Routes (every request is recorded: method, path with query, headers, parsed body):

- ``POST /v1/chat/completions``: chat completions, non-streaming and streaming. With ``"stream": true`` the same
  scripted completion is served as ``text/event-stream`` chunks the way the real API streams it (role delta, content /
  reasoning_content / refusal pieces, tool calls as index/id/name then argument deltas, one finish chunk per choice,
  ``data: [DONE]``); with ``stream_options.include_usage`` every chunk carries ``"usage": null`` and a last chunk with
  ``choices: []`` carries the usage.
- ``POST /openai/deployments/{deployment}/chat/completions?api-version=...``: Azure OpenAI, served the same way
  (needs the ``api-key`` header and the ``api-version`` query, as Azure does).
- ``POST /v1/responses`` (non-streaming) and ``GET /v1/responses/{id}`` (returns a response served before): the
  Responses API that AG2's ``api_type: "responses"`` client calls.

The script is a list of :class:`Reply` objects or functions of the :class:`Request` (returning a ``Reply`` or a JSON
body), one per POST; when it runs out the last item repeats. A reply is a status code and a JSON body, optionally
delayed (a delay makes the client time out; it waits on an event that :meth:`OpenAIStub.close` sets, so a sleeping
handler never holds up the test's teardown). ``Reply(stream=[...])`` sends exactly those SSE data items instead.

Body builders: :func:`completion` (with :func:`tool_call`, :func:`choice`, :func:`usage_body`), :func:`chunks` (what the
stream of a completion looks like), :func:`response` (with :func:`message_item`, :func:`function_call_item`,
:func:`reasoning_item`), :func:`error_body`.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Union
from urllib.parse import parse_qs, urlsplit

_ids = itertools.count(1)
CREATED = 1_700_000_000


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # a JSON-able value; None: the route's default body (a chat completion / a response)
    delay: float = 0.0  # seconds the server waits before answering (cut short by close())
    stream: list[Any] | None = None  # SSE items sent as is (dicts become JSON), regardless of the request


@dataclass
class Request:
    path: str  # as sent, query included
    headers: dict[str, str]
    body: Any
    method: str = "POST"

    @property
    def route(self) -> str:
        """The path without the query."""
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, str]:
        return {key: values[-1] for key, values in parse_qs(urlsplit(self.path).query).items()}

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)

    @property
    def streaming(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("stream") is True


ScriptItem = Union[Reply, Callable[[Request], Any]]
_MISSING = object()


# --- chat completion bodies ---------------------------------------------------------------------------------------

def tool_call(name: str, arguments: Any, id: str | None = None) -> dict[str, Any]:
    """One tool call of an assistant message; ``arguments`` is sent as is when a string, else JSON-encoded."""
    return {
        "id": id or f"call_stub_{next(_ids)}",
        "type": "function",
        "function": {"name": name, "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)},
    }


def choice(text: str | None = "hello", *, index: int = 0, tool_calls: Iterable[dict] | None = None,
           refusal: str | None = None, reasoning_content: str | None = None,
           finish_reason: str | None = None) -> dict[str, Any]:
    """One choice of a chat.completion. ``finish_reason`` defaults to ``tool_calls`` when there are tool calls, else
    ``stop``. ``reasoning_content`` is the extra message field vLLM/DeepSeek-style servers send."""
    calls = list(tool_calls or ())
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": refusal}
    if reasoning_content is not None:
        message["reasoning_content"] = reasoning_content
    if calls:
        message["tool_calls"] = calls
    return {"index": index, "message": message, "logprobs": None,
            "finish_reason": finish_reason or ("tool_calls" if calls else "stop")}


def usage_body(prompt_tokens: int = 17, completion_tokens: int = 4, *, cached_tokens: int | None = None,
          reasoning_tokens: int | None = None) -> dict[str, Any]:
    """A chat completion usage object, with ``prompt_tokens_details`` / ``completion_tokens_details`` when given."""
    body: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                            "total_tokens": prompt_tokens + completion_tokens}
    if cached_tokens is not None:
        body["prompt_tokens_details"] = {"cached_tokens": cached_tokens, "audio_tokens": 0}
    if reasoning_tokens is not None:
        body["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens, "audio_tokens": 0,
                                             "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    return body


def completion(text: str | None = "hello", *, model: str = "gpt-4o-mini", usage: Any = _MISSING,
               prompt_tokens: int = 17, completion_tokens: int = 4, finish_reason: str | None = None,
               tool_calls: Iterable[dict] | None = None, refusal: str | None = None,
               reasoning_content: str | None = None, choices: list[dict] | None = None,
               cached_tokens: int | None = None, reasoning_tokens: int | None = None,
               id: str | None = None) -> dict[str, Any]:
    """An OpenAI chat.completion body. One choice from text/tool_calls/refusal/reasoning_content/finish_reason, or
    ``choices=[choice(...), ...]`` for n>1. ``usage`` overrides the usage object (``None`` sends ``"usage": null``);
    the sentinel default sends real numbers from prompt_tokens/completion_tokens (and cached_tokens/reasoning_tokens
    as details); pass ``usage=completion.OMIT`` to leave the key out altogether."""
    if choices is None:
        choices = [choice(text, tool_calls=tool_calls, refusal=refusal, reasoning_content=reasoning_content,
                          finish_reason=finish_reason)]
    body: dict[str, Any] = {
        "id": id or f"chatcmpl-stub-{next(_ids)}",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": choices,
        "system_fingerprint": "fp_stub",
    }
    if usage is _MISSING:
        body["usage"] = usage_body(prompt_tokens, completion_tokens, cached_tokens=cached_tokens,
                                   reasoning_tokens=reasoning_tokens)
    elif usage is not completion.OMIT:  # type: ignore[attr-defined]
        body["usage"] = usage
    return body


completion.OMIT = object()  # type: ignore[attr-defined]


def error_body(message: str = "The server had an error while processing your request.") -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}


def _pieces(text: str, size: int = 4) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def chunks(body: dict[str, Any], *, include_usage: bool = False, piece: int = 4) -> list[dict[str, Any]]:
    """The chat.completion.chunk objects the real API streams for the completion ``body``: per choice a role delta,
    reasoning_content / content / refusal in ``piece``-character deltas, each tool call as one delta with index, id,
    type and name (empty arguments) followed by argument deltas, then a finish chunk; with ``include_usage`` every
    chunk has ``"usage": null`` and a last chunk with no choices carries the body's usage."""
    out: list[dict[str, Any]] = []

    def emit(choices: list[dict[str, Any]]) -> None:
        chunk = {"id": body["id"], "object": "chat.completion.chunk", "created": body.get("created", CREATED),
                 "model": body["model"], "system_fingerprint": body.get("system_fingerprint"), "choices": choices}
        if include_usage:
            chunk["usage"] = None
        out.append(chunk)

    def delta(index: int, d: dict[str, Any], finish_reason: str | None = None) -> None:
        emit([{"index": index, "delta": d, "logprobs": None, "finish_reason": finish_reason}])

    for ch in body["choices"]:
        index, message = ch["index"], ch["message"]
        calls = message.get("tool_calls") or []
        # the opening delta: "" for each field that is going to stream, null for the others
        first: dict[str, Any] = {"role": "assistant", "content": "" if message.get("content") is not None else None,
                                 "refusal": "" if message.get("refusal") is not None else None}
        delta(index, first)
        if message.get("reasoning_content"):
            for part in _pieces(message["reasoning_content"], piece):
                delta(index, {"reasoning_content": part})
        if message.get("content"):
            for part in _pieces(message["content"], piece):
                delta(index, {"content": part})
        if message.get("refusal"):
            for part in _pieces(message["refusal"], piece):
                delta(index, {"refusal": part})
        for position, call in enumerate(calls):
            fn = call["function"]
            delta(index, {"tool_calls": [{"index": position, "id": call["id"], "type": "function",
                                          "function": {"name": fn["name"], "arguments": ""}}]})
            for part in _pieces(fn["arguments"], piece):
                delta(index, {"tool_calls": [{"index": position, "function": {"arguments": part}}]})
        delta(index, {}, ch.get("finish_reason"))
    if include_usage:
        last = {"id": body["id"], "object": "chat.completion.chunk", "created": body.get("created", CREATED),
                "model": body["model"], "system_fingerprint": body.get("system_fingerprint"), "choices": [],
                "usage": body.get("usage")}
        out.append(last)
    return out


# --- Responses API bodies -----------------------------------------------------------------------------------------

def message_item(text: str, id: str | None = None) -> dict[str, Any]:
    return {"type": "message", "id": id or f"msg_stub_{next(_ids)}", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def function_call_item(name: str, arguments: Any, call_id: str | None = None) -> dict[str, Any]:
    return {"type": "function_call", "id": f"fc_stub_{next(_ids)}", "call_id": call_id or f"call_stub_{next(_ids)}",
            "name": name, "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
            "status": "completed"}


def reasoning_item(summary: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": f"rs_stub_{next(_ids)}", "summary": [{"type": "summary_text", "text": summary}]}


def response(text: str | None = "hello", *, items: list[dict] | None = None, model: str = "gpt-4o-mini",
             input_tokens: int = 17, output_tokens: int = 4, cached_tokens: int = 0, reasoning_tokens: int = 0,
             id: str | None = None) -> dict[str, Any]:
    """A Responses API ``response`` object; ``items`` is the output list (default: one message with ``text``)."""
    output = items if items is not None else ([message_item(text)] if text is not None else [])
    return {
        "id": id or f"resp_stub_{next(_ids)}", "object": "response", "created_at": CREATED, "status": "completed",
        "model": model, "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "error": None, "incomplete_details": None, "instructions": None, "metadata": {}, "temperature": 1.0,
        "top_p": 1.0, "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
        "text": {"format": {"type": "text"}}, "truncation": "disabled",
        "usage": {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": cached_tokens},
                  "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
                  "total_tokens": input_tokens + output_tokens},
    }


# --- the server ---------------------------------------------------------------------------------------------------

def _sse(items: Iterable[Any]) -> list[bytes]:
    """``data: {json}\\n\\n`` per item (a str is sent as the data as is), then ``data: [DONE]``."""
    events = [f"data: {item if isinstance(item, str) else json.dumps(item)}\n\n".encode() for item in items]
    return events + [b"data: [DONE]\n\n"]


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: 50 conversations connecting at once overflowed it and a client
    # got "Connection reset by peer" (seen in tests/test_load.py on a loaded 2-core box)
    request_queue_size = 256
    daemon_threads = True


class ScriptedServer:
    """The HTTP machinery shared by the provider stubs: a threading server on 127.0.0.1, a script of replies (or
    functions of the request), every request recorded. A subclass implements :meth:`route`."""

    thread_name = "llm-stub"

    def __init__(self, script: list[ScriptItem] | None = None) -> None:
        self.script: list[ScriptItem] = list(script or [])
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._position = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep the test output quiet
                pass

            def _request(self, method: str) -> Request:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                return Request(self.path, dict(self.headers.items()), body, method)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                request = self._request("POST")
                reply = stub._next(request)
                if reply.delay:
                    stub._closing.wait(reply.delay)
                stub._answer(self, request, reply)

            def do_GET(self) -> None:  # noqa: N802
                request = self._request("GET")
                with stub._lock:
                    stub.requests.append(request)
                stub._answer(self, request, None)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.thread_name, daemon=True)
        self._thread.start()

    # -- script ---------------------------------------------------------------------------------------------------
    def _next(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            if not self.script:
                return Reply()
            item = self.script[min(self._position, len(self.script) - 1)]
            self._position += 1
        if callable(item) and not isinstance(item, Reply):
            item = item(request)
        return item if isinstance(item, Reply) else Reply(body=item)

    # -- answering ------------------------------------------------------------------------------------------------
    def route(self, request: Request, reply: Reply | None) -> tuple[int, Any, list[bytes] | None]:
        """(status, JSON body, SSE events or None) for ``request``; ``reply`` is None for a GET."""
        raise NotImplementedError

    def _answer(self, handler: BaseHTTPRequestHandler, request: Request, reply: Reply | None) -> None:
        try:
            status, body, events = self.route(request, reply)
        except Exception as exc:  # a broken script must show up in the test, not hang the client
            status, body, events = 500, error_body(f"stub failed: {exc!r}"), None
        try:
            handler.send_response(status)
            if events is None:
                payload = json.dumps(body).encode()
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(payload)))
                handler.end_headers()
                handler.wfile.write(payload)
                return
            handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
            handler.send_header("Cache-Control", "no-cache")
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            for event in events:  # one HTTP chunk per event, flushed, as a real server streams
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                handler.wfile.flush()
            handler.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client gave up (timeout) and closed the socket
            pass

    # -- lifecycle ------------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _not_found(path: str) -> tuple[int, Any, None]:
    return 404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}}, None


class OpenAIStub(ScriptedServer):
    """``with OpenAIStub([Reply(...), ...]) as stub: stub.base_url`` → ``http://127.0.0.1:PORT/v1``. When the script
    runs out, the last reply repeats. ``stub.responses`` holds every Responses API object served, by id."""

    thread_name = "openai-stub"

    def __init__(self, script: list[ScriptItem] | None = None, requests: list[Request] | None = None) -> None:
        self.responses: dict[str, Any] = {}
        super().__init__(script)
        if requests is not None:
            self.requests = requests

    def route(self, request: Request, reply: Reply | None) -> tuple[int, Any, list[bytes] | None]:
        path = request.route.rstrip("/")
        parts = path.split("/")
        if request.method == "GET":
            if len(parts) == 4 and parts[:3] == ["", "v1", "responses"] and parts[3] in self.responses:
                return 200, self.responses[parts[3]], None
            return _not_found(request.path)
        assert reply is not None
        azure = len(parts) == 6 and parts[:3] == ["", "openai", "deployments"] and parts[4:] == ["chat", "completions"]
        if azure:
            if not request.header("api-key"):
                return 401, {"error": {"code": "401", "message": "Access denied due to missing subscription key."}}, None
            if "api-version" not in request.query:
                return 404, {"error": {"code": "404", "message": "Resource not found"}}, None
        if path == "/v1/chat/completions" or azure:
            return self._chat(request, reply)
        if path == "/v1/responses":
            body = response() if reply.body is None else reply.body
            if reply.status == 200 and isinstance(body, dict) and isinstance(body.get("id"), str):
                self.responses[body["id"]] = body
            return reply.status, body, None
        return _not_found(request.path)

    def _chat(self, request: Request, reply: Reply) -> tuple[int, Any, list[bytes] | None]:
        if reply.stream is not None:
            return reply.status, None, _sse(reply.stream)
        body = completion() if reply.body is None else reply.body
        if (request.streaming and reply.status == 200 and isinstance(body, dict)
                and body.get("object") == "chat.completion"):
            options = request.body.get("stream_options") or {}
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return 200, None, _sse(chunks(copy.deepcopy(body), include_usage=include_usage))
        return reply.status, body, None

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def llm_config(self, api_key: str, *, model: str = "gpt-4o-mini", timeout: float = 5.0,
                   **entry: Any) -> dict[str, Any]:
        """An AG2 llm_config for this server: no cache, no retries, a short timeout; ``entry`` adds config-entry keys
        (``stream=True``, ``api_type="responses"``, ...)."""
        config = {"model": model, "api_key": api_key, "base_url": self.base_url, "timeout": timeout,
                  "max_retries": 0, **entry}
        return {"config_list": [config], "cache_seed": None}

    def azure_llm_config(self, api_key: str, *, model: str = "gpt-4o-mini", api_version: str = "2024-10-21",
                         timeout: float = 5.0, **entry: Any) -> dict[str, Any]:
        """An AG2 ``api_type: "azure"`` llm_config: ``base_url`` is the stub root (AG2 hands it to AzureOpenAI as
        ``azure_endpoint``; the deployment is the model name)."""
        config = {"api_type": "azure", "model": model, "api_key": api_key, "base_url": self.root_url,
                  "api_version": api_version, "timeout": timeout, "max_retries": 0, **entry}
        return {"config_list": [config], "cache_seed": None}
