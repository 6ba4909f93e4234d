"""Secrets never leave the process, content capture off means no content anywhere, and OTLP over TLS with a CA file.

One real chat (AG2 on the scripted model, tool call included) with ``ag2_otel.autolog()``, in a subprocess, exporting
to three places at once: an in-memory SDK exporter, the MLflow sink (a tmp sqlite store) and OTLP through a real
rotel collector (``--debug-log traces --debug-log-verbosity detailed``) to an OTLP receiver behind it. The secrets:
``api_key`` and a ``user:password@`` ``base_url`` in the llm_config, ``DATABRICKS_TOKEN``, and an
``authorization=Bearer ...`` OTLP header. Each secret is searched for in every exported span (attributes, events,
resource), the raw bytes of every file the MLflow sink wrote (sqlite db, wal, artifacts), every request body rotel
forwarded and rotel's own debug output, and the log output (root logger at DEBUG, on stderr).

TLS: rotel's OTLP receivers have no TLS options (``rotel-agent start --help`` lists TLS flags for its exporters only),
so the TLS endpoint is the smallest real receiver: ``OtlpSink`` (http.server in an ``ssl`` context) for
http/protobuf and a ``grpc.server`` with ``ssl_server_credentials`` for gRPC, both parsing the OTLP protobuf.
The certificates (a CA and a server cert for 127.0.0.1 signed by it) are made at test time with ``cryptography``.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import logging
import os
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path

import pytest

from tests.collector import RotelCollector, free_port, wait_until
from tests.test_faults_otlp import REPO, OtlpSink

RUN_TIMEOUT_S = 180.0
DELIVERY_DEADLINE_S = 30.0

SECRETS = {
    "api_key": "sk-ag2otel-SECRET-APIKEY-7f3a9c",
    "base_url_password": "SECRET-URLPASS-4b8d",
    "databricks_token": "dapiSECRETTOKEN5d2e8b41",
    "otlp_header": "SECRET-OTLP-BEARER-91c7e2",
}
BASE_URL = f"https://llmuser:{SECRETS['base_url_password']}@llm.internal.example:8443/v1"  # scripted entry

# distinctive content: present everywhere with capture on (the positive control), nowhere with it off
CONTENT = {
    "question": "QUOKKA-QUESTION-3317 what is the capital",
    "system": "QUOKKA-SYSTEM-6620 you look words up",
    "tool_argument": "QUOKKA-ARG-5521",
    "tool_result": "QUOKKA-RESULT-7402",
    "answer": "QUOKKA-ANSWER-9034",
    "remote_question": "QUOKKA-REMOTE-QUESTION-2290",
    "remote_answer": "QUOKKA-REMOTE-ANSWER-1187",
}

# The app holds no secret and no content string in its source: all come from the environment, so a file search in
# the run directory can only find what the sinks wrote.
APP = textwrap.dedent("""
    import json, logging, os, sys
    from pathlib import Path

    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(name)s|%(levelname)s|%(message)s")
    import ag2_otel
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    ag2_otel.autolog()
    memory = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(memory))

    from autogen import ConversableAgent, register_function
    from ag2_otel.scripted import ScriptedClient, Step, ToolCall

    env = os.environ
    llm_config = {"config_list": [{"model": "scripted-model", "model_client_cls": "ScriptedClient",
                                   "api_key": env["APP_API_KEY"], "base_url": env["APP_BASE_URL"]}],
                  "cache_seed": None}
    assistant = ConversableAgent("assistant", system_message=env["APP_SYSTEM"], llm_config=llm_config)
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER",
                            is_termination_msg=lambda m: "TERMINATE" in (m.get("content") or ""))
    result_prefix = env["APP_TOOL_RESULT"]

    def lookup(query: str) -> str:
        return result_prefix + " for " + query

    register_function(lookup, caller=assistant, executor=user, name="lookup", description="Look a word up")
    assistant.register_model_client(ScriptedClient, script=[
        Step(tool_calls=[ToolCall("lookup", {"query": env["APP_TOOL_ARGUMENT"]}, id="call-q1")],
             prompt_tokens=50, completion_tokens=7),
        Step(text=env["APP_ANSWER"] + " TERMINATE", prompt_tokens=80, completion_tokens=5),
    ])
    user.initiate_chat(assistant, message=env["APP_QUESTION"], max_turns=4)

    # AG2 strips api_key and base_url from the config list it keeps and hands them to the provider's SDK client: the
    # real OpenAI client (talking to a local OpenAI-compatible endpoint) is where base_url, with its password, lives
    remote = ConversableAgent("remote", llm_config={"config_list": [{
        "model": "gpt-4o-mini", "api_key": env["APP_API_KEY"], "base_url": env["APP_OPENAI_BASE_URL"]}],
        "cache_seed": None})
    user.initiate_chat(remote, message=env["APP_REMOTE_QUESTION"], max_turns=1)
    flushed = ag2_otel.flush(30)
    spans = memory.get_finished_spans()
    Path(env["APP_SPANS_OUT"]).write_text("\\n".join(json.dumps(json.loads(s.to_json())) for s in spans))
    trace_ids = sorted({format(s.context.trace_id, "032x") for s in spans})
    print("CHAT_DONE " + json.dumps({"spans": len(spans), "trace_ids": trace_ids, "flushed": flushed}), flush=True)
""")


def app_env(run_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MLFLOW_", "AG2_OTEL_", "DATABRICKS_"))}
    env.update({
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        "MLFLOW_TRACKING_URI": f"sqlite:///{run_dir / 'mlflow.db'}",
        "MLFLOW_MODEL_CATALOG_URI": "",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "ag2-otel-security",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "DATABRICKS_HOST": "https://dbc-0000.cloud.databricks.example",
        "DATABRICKS_TOKEN": SECRETS["databricks_token"],
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer {SECRETS['otlp_header']}",
        "APP_API_KEY": SECRETS["api_key"],
        "APP_BASE_URL": BASE_URL,
        "APP_SPANS_OUT": str(run_dir / "spans.jsonl"),
        "APP_QUESTION": CONTENT["question"],
        "APP_SYSTEM": CONTENT["system"],
        "APP_TOOL_ARGUMENT": CONTENT["tool_argument"],
        "APP_TOOL_RESULT": CONTENT["tool_result"],
        "APP_ANSWER": CONTENT["answer"],
        "APP_REMOTE_QUESTION": CONTENT["remote_question"],
    })
    env.update(extra)
    return env


class AppRun:
    def __init__(self, run_dir: Path, env: dict[str, str]):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "app.py").write_text(APP)
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "app.py"], cwd=run_dir, env=env, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S)
        self.seconds = time.monotonic() - started
        self.returncode, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr
        (run_dir.parent / "app.stderr.txt").write_text(proc.stderr)  # outside run_dir: not one of the sink's files
        assert proc.returncode == 0, proc.stderr[-4000:]
        done = [line for line in proc.stdout.splitlines() if line.startswith("CHAT_DONE ")]
        assert done, proc.stdout[-2000:] + proc.stderr[-4000:]
        self.result = json.loads(done[0][len("CHAT_DONE "):])
        self.spans = [json.loads(line) for line in (run_dir / "spans.jsonl").read_text().splitlines() if line]
        self.trace_ids = self.result["trace_ids"]
        assert len(self.trace_ids) == 2  # the scripted chat and the OpenAI-client chat
        self.spans_per_trace = {t: sum(1 for s in self.spans if s["context"]["trace_id"] == "0x" + t)
                                for t in self.trace_ids}

    def at_sink(self, sink: OtlpSink) -> bool:
        return all(sink.span_count(t) >= n for t, n in self.spans_per_trace.items())

    def log_lines(self, prefix: str = "") -> str:
        return "\n".join(line for line in self.stderr.splitlines() if line.startswith(prefix))


def count(haystack: str | bytes, needle: str) -> int:
    if isinstance(haystack, bytes):
        return haystack.count(needle.encode())
    return haystack.count(needle)


def files_bytes(root: Path, skip: tuple[str, ...] = ("app.py", "spans.jsonl")) -> bytes:
    """Every byte of every file under ``root`` (the sqlite db and its -wal/-journal, artifacts), except ``skip``."""
    chunks = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name not in skip:
            chunks.append(path.read_bytes())
    return b"".join(chunks)


@pytest.fixture
def sink():
    receiver = OtlpSink()
    yield receiver
    receiver.close()


class FakeOpenAI:
    """A local OpenAI-compatible ``POST /v1/chat/completions`` (the model, like the scripted client, is the only
    stand-in): AG2's real OpenAI client sends its request, with the api_key, here. Keeps the request headers."""

    def __init__(self):
        self.headers: list[dict[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.headers.append(dict(self.headers.items()))
                body = json.dumps({
                    "id": "chatcmpl-remote-1", "object": "chat.completion", "created": 1700000000,
                    "model": "gpt-4o-mini",
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {
                        "role": "assistant", "content": CONTENT["remote_answer"] + " TERMINATE"}}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://llmuser:{SECRETS['base_url_password']}@127.0.0.1:{self.port}/v1"

    def credentials_seen(self) -> int:
        """Requests that carried the api_key (Bearer) or the base_url's password (httpx sends URL userinfo as Basic)."""
        seen = 0
        for headers in self.headers:
            auth = headers.get("Authorization", "")
            if auth.startswith("Basic "):
                auth = base64.b64decode(auth[6:]).decode(errors="replace")
            seen += SECRETS["api_key"] in auth or SECRETS["base_url_password"] in auth
        return seen

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def llm():
    server = FakeOpenAI()
    yield server
    server.close()


@pytest.fixture
def rotel_debug(sink, tmp_path):
    """rotel forwarding to ``sink`` and printing every span it receives (detailed) to its output file."""
    collector = RotelCollector(tmp_path / "rotel", f"{sink.url}/v1/traces",
                               extra_args=("--debug-log", "traces", "--debug-log-verbosity", "detailed"))
    collector.start()
    yield collector
    collector.stop()


def rotel_output(collector: RotelCollector) -> str:
    texts = []
    for name in ("rotel.out", "rotel.log"):
        path = collector.workdir / name
        if path.exists():
            texts.append(path.read_text(errors="replace"))
    return "\n".join(texts)


def places(run: AppRun, run_dir: Path, sink: OtlpSink, collector: RotelCollector) -> dict[str, str | bytes]:
    return {
        "in-memory spans": json.dumps(run.spans),
        "MLflow store files": files_bytes(run_dir),
        "collector forwarded (OTLP bodies)": sink.raw(),
        "collector forwarded (headers)": json.dumps(sink.headers),
        "rotel debug output": rotel_output(collector),
        "log ag2_otel": run.log_lines("ag2_otel"),
        "log opentelemetry": run.log_lines("opentelemetry"),
        "log mlflow": run.log_lines("mlflow"),
        ALL_LOGS: run.stderr,
    }


ALL_LOGS = "log (all, stderr)"
# measured: the OpenAI SDK's HTTP client logs every request URL at INFO, user:password included
# ("httpx2|INFO|HTTP Request: POST http://llmuser:SECRET...@127.0.0.1:PORT/v1/chat/completions"): not ours, reported
THIRD_PARTY_URL_LOGGERS = {"httpx", "httpx2"}


def secret_log_lines(run: AppRun) -> dict[str, int]:
    """Logger name -> number of stderr lines holding any secret (the app logs as ``name|LEVEL|message``)."""
    found: dict[str, int] = {}
    for line in run.stderr.splitlines():
        if any(secret in line for secret in SECRETS.values()):
            name = line.split("|", 1)[0]
            found[name] = found.get(name, 0) + 1
    return found


def counts_table(where: dict[str, str | bytes], needles: dict[str, str]) -> dict[str, dict[str, int]]:
    return {place: {name: count(text, needle) for name, needle in needles.items()} for place, text in where.items()}


def print_table(title: str, table: dict[str, dict[str, int]]) -> None:
    print(f"\n{title}")
    for place, row in table.items():
        print(f"  {place:<36} " + "  ".join(f"{name}={n}" for name, n in row.items()))


# ==================================================================================================================
# secrets, content capture on
# ==================================================================================================================
def test_secrets_are_never_exported_or_logged(tmp_path, sink, rotel_debug, llm):
    run_dir = tmp_path / "run"
    run = AppRun(run_dir, app_env(run_dir, OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
                                  OTEL_EXPORTER_OTLP_ENDPOINT=rotel_debug.grpc_endpoint,
                                  APP_OPENAI_BASE_URL=llm.base_url))
    spans = run.result["spans"]
    wait_until(lambda: run.at_sink(sink), DELIVERY_DEADLINE_S, "both chats at the OTLP sink")
    wait_until(lambda: CONTENT["remote_answer"] in rotel_output(rotel_debug), DELIVERY_DEADLINE_S,
               "rotel's debug output of the spans")
    where = places(run, run_dir, sink, rotel_debug)

    secrets = counts_table(where, SECRETS)
    content = counts_table(where, CONTENT)
    print(f"\nrun {run.seconds:.2f}s, {spans} spans in {run.spans_per_trace}, sink requests {sink.requests}, "
          f"MLflow files {[p.name for p in run_dir.rglob('*') if p.is_file()]}; the LLM endpoint got credentials "
          f"{llm.credentials_seen()} time(s); stderr lines with a secret, by logger: {secret_log_lines(run)}")
    print_table("secret occurrences (must all be 0)", secrets)
    print_table("content occurrences (capture on: the search must find these)", content)

    # the secrets were live: the OpenAI client (httpx) turned the base_url's user:password into Basic auth, and our
    # instrumentation read host and port from that same URL
    assert llm.credentials_seen() >= 1
    remote = [s for s in run.spans if s["name"] == "chat gpt-4o-mini"]
    assert remote and remote[0]["attributes"]["server.address"] == "127.0.0.1"
    assert remote[0]["attributes"]["server.port"] == llm.port
    assert remote[0]["attributes"]["gen_ai.usage.input_tokens"] == 11
    assert all(sink.span_count(t) == n for t, n in run.spans_per_trace.items())
    # positive control: content is where the secrets were searched for (so a 0 below means something)
    for place in ("in-memory spans", "MLflow store files", "collector forwarded (OTLP bodies)", "rotel debug output"):
        for name in ("question", "tool_argument", "tool_result", "answer", "remote_question", "remote_answer"):
            assert content[place][name] > 0, (place, name, content[place])

    leaks = {place: {k: n for k, n in row.items() if n} for place, row in secrets.items() if place != ALL_LOGS}
    leaks = {place: row for place, row in leaks.items() if row}
    assert not leaks, leaks
    assert set(secret_log_lines(run)) <= THIRD_PARTY_URL_LOGGERS, secret_log_lines(run)
    # rotel does not pass the application's authorization header on to the next hop
    assert not any("authorization" in {k.lower() for k in h} for h in sink.headers), sink.headers


# ==================================================================================================================
# content capture off
# ==================================================================================================================
def test_content_capture_off_records_no_message_or_tool_text(tmp_path, sink, rotel_debug, llm):
    run_dir = tmp_path / "run"
    run = AppRun(run_dir, app_env(run_dir, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                                  OTEL_EXPORTER_OTLP_ENDPOINT=rotel_debug.http_endpoint,
                                  OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="NO_CONTENT",
                                  APP_OPENAI_BASE_URL=llm.base_url))
    spans = run.result["spans"]
    wait_until(lambda: run.at_sink(sink), DELIVERY_DEADLINE_S, "both chats at the OTLP sink")
    where = places(run, run_dir, sink, rotel_debug)
    content = counts_table(where, CONTENT)
    secrets = counts_table(where, SECRETS)
    print(f"\nrun {run.seconds:.2f}s, {spans} spans, sink requests {sink.requests}")
    print_table("content occurrences, capture off (exported places must be 0)", content)
    print_table("secret occurrences", secrets)

    # still traced, with the usage, only without content
    assert all(sink.span_count(t) == n for t, n in run.spans_per_trace.items())
    assert [s["attributes"]["gen_ai.usage.input_tokens"] for s in run.spans if s["name"].startswith("chat ")] == \
        [50, 80, 11]
    tool = [s for s in run.spans if s["name"] == "execute_tool lookup"]
    assert tool and tool[0]["attributes"]["gen_ai.tool.name"] == "lookup"
    assert not any(key.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.system_instructions",
                                   "gen_ai.tool.call.arguments", "gen_ai.tool.call.result"))
                   for s in run.spans for key in s["attributes"]), run.spans
    exported = ("in-memory spans", "MLflow store files", "collector forwarded (OTLP bodies)", "rotel debug output",
                "log ag2_otel", "log opentelemetry", "log mlflow")
    found = {place: {k: n for k, n in content[place].items() if n} for place in exported}
    assert not any(found.values()), found
    assert not any(any(row.values()) for place, row in secrets.items() if place != ALL_LOGS), secrets
    assert set(secret_log_lines(run)) <= THIRD_PARTY_URL_LOGGERS, secret_log_lines(run)


# ==================================================================================================================
# configuration objects, ConfigError messages and `ag2-otel doctor` (in-process, caplog at DEBUG)
# ==================================================================================================================
CONFIG_SECRETS = {
    "otlp_header": SECRETS["otlp_header"],
    "databricks_token": SECRETS["databricks_token"],
    "otlp_endpoint_password": "SECRET-ENDPOINT-PW-61a0",
    "mlflow_uri_password": "SECRET-MLFLOW-PW-2c5e",
}


@pytest.fixture
def secret_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("OTEL_", "AG2_OTEL_", "DATABRICKS_")):
            monkeypatch.delenv(name)
    closed = free_port()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer {CONFIG_SECRETS['otlp_header']}")
    monkeypatch.setenv("DATABRICKS_TOKEN", CONFIG_SECRETS["databricks_token"])
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT",
                       f"http://otlpuser:{CONFIG_SECRETS['otlp_endpoint_password']}@127.0.0.1:{closed}")
    return monkeypatch


def test_settings_and_config_errors_never_show_a_secret(secret_env, caplog):
    from ag2_otel.config import ConfigError, load_settings

    caplog.set_level(logging.DEBUG, logger="ag2_otel")
    settings = load_settings()
    shown = {"repr": repr(settings), "masked": json.dumps(settings.masked())}
    assert settings.otlp_header_names == ("authorization",) and settings.databricks_token_set

    errors = {}
    bad_values = {  # each bad value holds a secret; the error must name the variable and hide the secret
        "OTEL_EXPORTER_OTLP_HEADERS": f"Bearer {CONFIG_SECRETS['otlp_header']}",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": f"authorization=x,{CONFIG_SECRETS['otlp_header']}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://u:{CONFIG_SECRETS['otlp_endpoint_password']}@host:notaport",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"ftp://u:{CONFIG_SECRETS['otlp_endpoint_password']}@host:4317",
    }
    for name, value in bad_values.items():
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(name, value)
            with pytest.raises(ConfigError) as raised:  # measured before the fix: a bare ValueError for "notaport"
                load_settings()
        errors[name] = str(raised.value)
        assert name in errors[name], errors[name]
    shown.update(errors)
    shown["ag2_otel log"] = caplog.text
    table = counts_table(shown, CONFIG_SECRETS)
    print_table("secret occurrences in Settings / ConfigError / logs (must be 0)", table)
    assert not any(any(row.values()) for row in table.values()), table


def test_doctor_masks_every_secret(secret_env, caplog):
    from ag2_otel import doctor

    closed = free_port()
    secret_env.setenv("MLFLOW_TRACKING_URI", f"http://mluser:{CONFIG_SECRETS['mlflow_uri_password']}@127.0.0.1:{closed}")
    caplog.set_level(logging.DEBUG, logger="ag2_otel")
    out = StringIO()
    assert doctor.run(out) == 1  # nothing answers: the problems are listed
    table = counts_table({"doctor output": out.getvalue(), "ag2_otel log": caplog.text}, CONFIG_SECRETS)
    print_table("secret occurrences in `ag2-otel doctor`", table)
    assert "otlpuser:***@" in out.getvalue()  # the OTLP endpoint is masked
    assert not any(any(row.values()) for row in table.values()), table


# ==================================================================================================================
# OTLP over TLS with a CA file (OTEL_EXPORTER_OTLP_CERTIFICATE)
# ==================================================================================================================
def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost signed by it, and an unrelated second CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def ca(cn):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn)).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, encipher_only=False, decipher_only=False),
                               critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        return key, cert

    ca_key, ca_cert = ca("ag2-otel test CA")
    _, other_ca_cert = ca("some other CA")
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca_cert.subject)
        .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256()))
    files = {"ca": directory / "ca.pem", "other_ca": directory / "other-ca.pem", "cert": directory / "server.pem",
             "key": directory / "server-key.pem"}
    files["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files["other_ca"].write_bytes(other_ca_cert.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    return files


class GrpcTlsSink(OtlpSink):
    """The same receiver over gRPC with TLS (``grpc.server`` + ``ssl_server_credentials``)."""

    def __init__(self, key_pem: bytes, cert_pem: bytes):  # noqa: D107 - no HTTP server here
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        self.lock = threading.Lock()
        self.bodies, self.headers, self.spans, self.requests = [], [], {}, 0
        sink = self

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # noqa: N802 - the generated name
                sink.record(request.SerializeToString(), dict(context.invocation_metadata()), request)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), self.server)
        self.port = self.server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key_pem, cert_pem)]))
        self.scheme = "https"
        self.server.start()

    def close(self) -> None:
        self.server.stop(grace=None)


@pytest.fixture
def tls_sink(request, tmp_path):
    files = make_certificates(tmp_path)
    if request.param == "grpc":
        sink = GrpcTlsSink(files["key"].read_bytes(), files["cert"].read_bytes())
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(files["cert"], files["key"])
        sink = OtlpSink(ssl_context=context)
    sink.files = files
    sink.protocol = request.param
    yield sink
    sink.close()


def export_once(protocol: str, endpoint: str, monkeypatch, **env: str):
    """The exporter autolog builds (config.build_otlp_span_exporter, env only), one real span batch, its result."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ag2_otel.config import build_otlp_span_exporter, load_settings

    for name in list(os.environ):
        if name.startswith("OTEL_EXPORTER_OTLP"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    exporter = build_otlp_span_exporter(load_settings())
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("tls").start_as_current_span("tls-probe"):
        pass
    provider.shutdown()
    try:
        return exporter.export(memory.get_finished_spans())
    finally:
        exporter.shutdown()


REQUESTS_BUNDLE_VARS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.mark.parametrize("tls_sink", ["grpc", "http/protobuf"], indirect=True)
def test_otlp_over_tls_with_a_ca_file(tls_sink, tmp_path, monkeypatch):
    from opentelemetry.sdk.trace.export import SpanExportResult

    from tests.test_faults_otlp import SPANS_PER_CHAT, App
    from tests.test_faults_otlp import app_env as otlp_only_env

    protocol, files = tls_sink.protocol, tls_sink.files
    endpoint = f"https://127.0.0.1:{tls_sink.port}"
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (set on this box) override the session's CA file, which is how
    # the SDK's HTTP exporter applies OTEL_EXPORTER_OTLP_CERTIFICATE: see the xfail test below. Unset them here.
    for name in REQUESTS_BUNDLE_VARS:
        monkeypatch.delenv(name, raising=False)
    # negative controls first (in-process, 1 s timeout): without the CA, or with another CA, the handshake fails
    untrusted = export_once(protocol, endpoint, monkeypatch)
    wrong_ca = export_once(protocol, endpoint, monkeypatch, OTEL_EXPORTER_OTLP_CERTIFICATE=str(files["other_ca"]))
    assert untrusted == SpanExportResult.FAILURE and wrong_ca == SpanExportResult.FAILURE
    assert tls_sink.requests == 0

    # the application: autolog() with OTEL_EXPORTER_OTLP_CERTIFICATE, a real chat, its trace arrives over TLS
    env = otlp_only_env(tmp_path, OTEL_EXPORTER_OTLP_PROTOCOL=protocol, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                        OTEL_EXPORTER_OTLP_CERTIFICATE=str(files["ca"]), OTEL_BSP_SCHEDULE_DELAY="100")
    app = App(tmp_path, {k: v for k, v in env.items() if k not in REQUESTS_BUNDLE_VARS})
    try:
        chats = app.chats(1)
        flushed = app.do("flush")
        wait_until(lambda: tls_sink.span_count(chats[0]["trace_id"]) >= SPANS_PER_CHAT, DELIVERY_DEADLINE_S,
                   "the chat at the TLS receiver")
        exit_s = app.exit()
    finally:
        app.kill()
    print(f"\n[{protocol} over TLS] no CA: {untrusted.name}, other CA: {wrong_ca.name}; with the CA file: "
          f"{tls_sink.span_count(chats[0]['trace_id'])} spans in {tls_sink.requests} request(s), flush "
          f"{flushed['wall_s']:.2f}s, exit {exit_s:.2f}s")
    assert app.process.returncode == 0, app.stderr[-4000:]
    assert tls_sink.span_count(chats[0]["trace_id"]) == SPANS_PER_CHAT


@pytest.mark.parametrize("tls_sink", ["http/protobuf"], indirect=True)
def test_otlp_certificate_is_honoured_when_a_requests_ca_bundle_is_set(tls_sink, monkeypatch):
    from opentelemetry.sdk.trace.export import SpanExportResult

    system_bundle = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", system_bundle)
    result = export_once("http/protobuf", f"https://127.0.0.1:{tls_sink.port}", monkeypatch,
                         OTEL_EXPORTER_OTLP_CERTIFICATE=str(tls_sink.files["ca"]))
    print(f"\n[http/protobuf over TLS, REQUESTS_CA_BUNDLE={system_bundle}] with the CA file: {result.name}, "
          f"{tls_sink.requests} request(s) received")
    assert result == SpanExportResult.SUCCESS and tls_sink.requests == 1
