"""A local OpenAI-compatible HTTP server (stdlib only) for driving AG2's real ``OpenAIWrapper`` through the real
``openai`` client: ``POST /v1/chat/completions`` answers from a script of :class:`Reply` objects, one per request.

Each reply is a status code and a JSON body, optionally delayed (a delay makes the client time out; the delay waits
on an event that :meth:`OpenAIStub.close` sets, so a sleeping handler never holds up the test's teardown). Every
request is recorded (path, headers, parsed body) so a test can see what the client actually sent.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ids = itertools.count(1)


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # a JSON-able value; None: a normal chat completion built by completion()
    delay: float = 0.0  # seconds the server waits before answering (cut short by close())


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: Any


_MISSING = object()


def completion(text: str = "hello", *, model: str = "gpt-4o-mini", usage: Any = _MISSING, prompt_tokens: int = 17,
               completion_tokens: int = 4, finish_reason: str = "stop") -> dict[str, Any]:
    """An OpenAI chat.completion body. ``usage`` overrides the usage object (``None`` sends ``"usage": null``); the
    sentinel default sends real numbers from prompt_tokens/completion_tokens; pass ``usage=completion.OMIT`` to leave
    the key out altogether."""
    body: dict[str, Any] = {
        "id": f"chatcmpl-stub-{next(_ids)}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
    }
    if usage is _MISSING:
        body["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens}
    elif usage is not completion.OMIT:  # type: ignore[attr-defined]
        body["usage"] = usage
    return body


completion.OMIT = object()  # type: ignore[attr-defined]


def error_body(message: str = "The server had an error while processing your request.") -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}


@dataclass
class OpenAIStub:
    """``with OpenAIStub([Reply(...), ...]) as stub: stub.base_url`` → ``http://127.0.0.1:PORT/v1``. When the script
    runs out, the last reply repeats."""

    script: list[Reply] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._position = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep the test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                reply = stub._next(Request(self.path, dict(self.headers.items()), body))
                if reply.delay:
                    stub._closing.wait(reply.delay)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    reply = Reply(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
                payload = json.dumps(completion() if reply.body is None else reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (timeout) and closed the socket
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="openai-stub", daemon=True)
        self._thread.start()

    def _next(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            if not self.script:
                return Reply()
            reply = self.script[min(self._position, len(self.script) - 1)]
            self._position += 1
            return reply

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def llm_config(self, api_key: str, *, model: str = "gpt-4o-mini", timeout: float = 5.0) -> dict[str, Any]:
        """An AG2 llm_config for this server: no cache, no retries, a short timeout."""
        entry = {"model": model, "api_key": api_key, "base_url": self.base_url, "timeout": timeout, "max_retries": 0}
        return {"config_list": [entry], "cache_seed": None}

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "OpenAIStub":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
