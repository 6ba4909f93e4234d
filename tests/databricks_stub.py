"""A local stand-in for a Databricks workspace's MLflow tracing endpoints (stdlib ``http.server`` in a thread).

It answers exactly what MLflow 3.17.2 calls to log a trace to a workspace experiment (found by reading MLflow's
source and by logging what arrives), records every request (method, path with query, headers, body), and keeps the
uploaded span data so a test can parse it. Anything it does not know is recorded and answered 404 with Databricks'
``ENDPOINT_NOT_FOUND`` error body, so an unexpected call shows up in ``requests`` instead of being silently served.

Endpoints (MLflow 3.17.2, URI ``databricks`` / ``databricks://PROFILE``):

- ``GET  /.well-known/databricks-config`` (databricks-sdk host metadata discovery, no auth; before most calls)
- ``GET  /api/2.0/mlflow/experiments/get-by-name?experiment_name=...`` (``mlflow.set_experiment``)
- ``POST /api/2.0/mlflow/experiments/create``                      (when get-by-name says RESOURCE_DOES_NOT_EXIST)
- ``GET  /api/2.0/mlflow/experiments/get?experiment_id=...``
- ``POST /api/3.0/mlflow/traces``                                  (StartTraceV3: trace info, metadata, tags; the
  answer carries the ``mlflow.artifactLocation`` tag ``dbfs:/databricks/mlflow-tracking/<exp>/<trace id>/artifacts``)
- ``GET  /api/2.0/mlflow/traces/<trace id>/credentials-for-data-upload`` (a signed URL pointing back at this stub)
- ``PUT  /signed-upload/<trace id>/traces.json?<signature>``        (the span data, as a cloud PUT; no auth header)
- read back (``mlflow.get_trace``): ``GET /api/3.0/mlflow/traces/<trace id>`` (GetTraceInfoV3),
  ``GET /api/2.0/mlflow/traces/<trace id>/credentials-for-data-download``, ``GET /signed-download/<trace id>/...``
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class RecordedRequest:
    method: str
    path: str  # with the query string, as sent
    headers: dict[str, str]
    body: bytes
    status: int = 0  # the stub's answer
    time: float = field(default_factory=time.time)

    @property
    def route(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    def __str__(self) -> str:
        return f"{self.method} {self.route}"


_TRACE_CREDS = re.compile(r"^/api/2\.0/mlflow/traces/([^/]+)/credentials-for-data-(upload|download)$")
_TRACE_INFO = re.compile(r"^/api/3\.0/mlflow/traces/([^/]+)$")
_SIGNED = re.compile(r"^/signed-(upload|download)/([^/]+)/traces\.json$")


class DatabricksStub:
    """``with DatabricksStub() as stub:`` -> ``stub.url`` is the workspace host (``http://127.0.0.1:PORT``)."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.experiments: dict[str, dict[str, Any]] = {}  # id -> experiment
        self.trace_infos: dict[str, dict[str, Any]] = {}  # trace id -> trace_info as received (StartTraceV3)
        self.uploads: dict[str, bytes] = {}  # trace id -> uploaded span data (traces.json)
        self._lock = threading.Lock()
        self._next_experiment = 4242000000000000
        self.workspace_id = "1234567890123456"
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet: the test reads stub.requests
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = _read_chunked(self.rfile)
                request = RecordedRequest(self.command, self.path, dict(self.headers.items()), body)
                with stub._lock:
                    stub.requests.append(request)
                status, payload = stub._route(request)
                request.status = status
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="databricks-stub", daemon=True)

    # --- lifecycle ---------------------------------------------------------------------------------------------------
    def start(self) -> "DatabricksStub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> "DatabricksStub":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- what the test reads -----------------------------------------------------------------------------------------
    def calls(self) -> list[str]:
        """``METHOD /path`` of every request so far, in arrival order (trace ids replaced by ``{trace_id}``)."""
        with self._lock:
            recorded = list(self.requests)
        out = []
        for r in recorded:
            route = r.route
            for trace_id in self.trace_infos:
                route = route.replace(trace_id, "{trace_id}")
            out.append(f"{r.method} {route}")
        return out

    def uploaded_trace_data(self, trace_id: str) -> dict[str, Any]:
        return json.loads(self.uploads[trace_id])

    # --- routes ------------------------------------------------------------------------------------------------------
    def _route(self, r: RecordedRequest) -> tuple[int, Any]:
        route, method = r.route, r.method
        if method == "GET" and route == "/.well-known/databricks-config":
            # databricks-sdk's host metadata discovery (unauthenticated, on every Config()); a 404 would only cost a
            # WARNING per client, but a real workspace answers it.
            return 200, {"oidc_endpoint": f"{self.url}/oidc", "workspace_id": self.workspace_id, "cloud": "aws"}
        if method == "GET" and route == "/api/2.0/mlflow/experiments/get-by-name":
            name = (r.query.get("experiment_name") or [""])[0]
            for experiment in self.experiments.values():
                if experiment["name"] == name:
                    return 200, {"experiment": experiment}
            return 404, _error("RESOURCE_DOES_NOT_EXIST", f"Node named '{name}' does not exist.")
        if method == "POST" and route == "/api/2.0/mlflow/experiments/create":
            name = (r.json() or {}).get("name")
            with self._lock:
                experiment_id = str(self._next_experiment)
                self._next_experiment += 1
                self.experiments[experiment_id] = {
                    "experiment_id": experiment_id, "name": name, "lifecycle_stage": "active",
                    "artifact_location": f"dbfs:/databricks/mlflow-tracking/{experiment_id}",
                    "creation_time": int(time.time() * 1000), "last_update_time": int(time.time() * 1000),
                }
            return 200, {"experiment_id": experiment_id}
        if method == "GET" and route == "/api/2.0/mlflow/experiments/get":
            experiment_id = (r.query.get("experiment_id") or [""])[0]
            if experiment_id in self.experiments:
                return 200, {"experiment": self.experiments[experiment_id]}
            return 404, _error("RESOURCE_DOES_NOT_EXIST", f"No experiment with id {experiment_id}")
        if method == "POST" and route == "/api/3.0/mlflow/traces":
            info = dict(((r.json() or {}).get("trace") or {}).get("trace_info") or {})
            trace_id = info.get("trace_id") or f"tr-{uuid.uuid4().hex}"
            experiment_id = info.get("trace_location", {}).get("mlflow_experiment", {}).get("experiment_id")
            if experiment_id not in self.experiments:
                return 404, _error("RESOURCE_DOES_NOT_EXIST", f"No experiment with id {experiment_id}")
            with self._lock:
                self.trace_infos[trace_id] = info
            return 200, {"trace": {"trace_info": self._returned_info(trace_id)}}
        match = _TRACE_INFO.match(route)
        if method == "GET" and match:  # GetTraceInfoV3 (mlflow.get_trace)
            trace_id = match.group(1)
            if trace_id not in self.trace_infos:
                return 404, _error("RESOURCE_DOES_NOT_EXIST", f"Trace {trace_id} not found")
            return 200, {"trace": {"trace_info": self._returned_info(trace_id)}}
        match = _TRACE_CREDS.match(route)
        if method == "GET" and match:
            trace_id, kind = match.groups()
            if trace_id not in self.trace_infos:
                return 404, _error("RESOURCE_DOES_NOT_EXIST", f"Trace {trace_id} not found")
            signature = uuid.uuid4().hex
            return 200, {"credential_info": {
                "run_id": trace_id, "path": "traces.json", "type": "AWS_PRESIGNED_URL",
                "signed_uri": f"{self.url}/signed-{kind}/{trace_id}/traces.json?X-Amz-Signature={signature}",
            }}
        match = _SIGNED.match(route)
        if match:
            kind, trace_id = match.groups()
            if kind == "upload" and method == "PUT":
                with self._lock:
                    self.uploads[trace_id] = r.body
                return 200, b""
            if kind == "download" and method == "GET" and trace_id in self.uploads:
                return 200, self.uploads[trace_id]
        return 404, _error("ENDPOINT_NOT_FOUND", f"No API found for '{method} {route}'")


    def _returned_info(self, trace_id: str) -> dict[str, Any]:
        """The stored trace info as the workspace returns it: plus the artifact location of its span data."""
        info = self.trace_infos[trace_id]
        experiment_id = info["trace_location"]["mlflow_experiment"]["experiment_id"]
        returned = dict(info, trace_id=trace_id)
        returned["tags"] = dict(info.get("tags") or {}, **{
            "mlflow.artifactLocation": f"dbfs:/databricks/mlflow-tracking/{experiment_id}/{trace_id}/artifacts"})
        return returned


def _error(code: str, message: str) -> dict[str, str]:
    return {"error_code": code, "message": message}


def _read_chunked(stream: Any) -> bytes:
    body = b""
    while True:
        size = int(stream.readline().strip() or b"0", 16)
        if size == 0:
            stream.readline()
            return body
        body += stream.read(size)
        stream.readline()
