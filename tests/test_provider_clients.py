"""AG2's other model client classes through their real provider SDKs (issue #10): ``GroqClient`` (groq),
``TogetherClient`` (together), ``CerebrasClient`` (cerebras-cloud-sdk), ``MistralAIClient`` (mistralai),
``OllamaClient`` (ollama), ``GeminiClient`` (google-genai, Gemini API key path), ``CohereClient`` (cohere) and
``BedrockClient`` (boto3 bedrock-runtime Converse), each talking HTTP to a local server of ``tests/provider_stubs.py``
that speaks the provider's wire protocol. Only the network is replaced: ``OpenAIWrapper`` builds AG2's client class,
the SDK parses the bytes into its own objects, AG2 converts them to its ``ChatCompletion``, and the ``chat {model}``
span must say what the server answered: the text as a text part, the tool calls as ``tool_call`` parts (id, name,
parsed arguments), the usage the server reported, the provider name.

How each client reaches the local server (what a user would do to point it at a gateway):

- groq: the config entry's ``base_url`` (AG2 passes it to ``groq.Groq``);
- ollama: the config entry's ``client_host``;
- together, cerebras, gemini, bedrock: the SDK's own environment variable (``TOGETHER_BASE_URL``,
  ``CEREBRAS_BASE_URL``, ``GOOGLE_GEMINI_BASE_URL``, ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``): AG2 passes no URL;
- cohere: ``CO_API_URL``, which the SDK reads when ``cohere`` is imported, so the chat runs in a child process
  started with it (``autogen`` imports ``cohere`` long before any test could set it);
- mistral: no override reaches the SDK (AG2 builds ``Mistral(api_key=...)``, the SDK reads no variable): the test
  sets ``server_url`` on the SDK object AG2 built, the only stand-in here beyond the network.

Each SDK section skips where its package is not installed (``pytest.importorskip`` in the section's fixture).

What AG2's client classes drop before our wrapper sees the response is asserted as AG2 leaves it, and said so:
Groq/Together/Cerebras/Mistral/Cohere map every finish reason other than tool calls to ``stop``; Together, Cerebras,
Groq, Ollama, Gemini, Cohere and Bedrock report the requested model, not the served one; Gemini and Ollama invent
tool call ids (the span records AG2's id, the one the tool message answers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ag2_otel import semconv as k
from tests.helpers import by_name
from tests.provider_stubs import Reply, tool_call

API_KEY = "sk-provider-SECRET-5d2a"
QUESTION = "What is 232 - 32?"
ARGS = {"a": 232, "b": 32, "op": "-"}
ROOT = Path(__file__).resolve().parents[1]


# --- harness ---------------------------------------------------------------------------------------------------------

def ag2_sdk(module: str, ag2_name: str):
    """The SDK module, else skip; also skip when AG2 itself could not import its client for it (AG2 records that in
    ``autogen.oai.client.<name>_import_exception``, e.g. together>=2 lacks the ``together.error`` AG2 0.14 imports)."""
    sdk = pytest.importorskip(module)
    import autogen.oai.client as ag2_client

    problem = getattr(ag2_client, f"{ag2_name}_import_exception", None)
    if problem is not None:
        pytest.skip(f"AG2 cannot use {module} here: {problem}")
    return sdk


@pytest.fixture
def traced(instrument):
    return instrument(capture_content=True)


def calculator(a: int, b: int, op: str) -> int:
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def calculator_agents(llm_config: dict):
    from autogen import ConversableAgent, register_function

    assistant = ConversableAgent("assistant", llm_config=llm_config, system_message="You are a calculator.",
                                 human_input_mode="NEVER")
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER")
    register_function(calculator, caller=assistant, executor=user, name="calculator",
                      description="A simple calculator")
    return user, assistant


def run_calculator(llm_config: dict, *, prepare=None):
    """user → assistant (the provider) → tool call → user runs it → assistant answers; two model calls."""
    user, assistant = calculator_agents(llm_config)
    if prepare is not None:
        prepare(assistant)
    return user.initiate_chat(assistant, message=QUESTION, max_turns=2, silent=True)


def out(*parts: dict, finish_reason: str) -> dict[str, Any]:
    return {"role": "assistant", "parts": list(parts), "finish_reason": finish_reason}


def text(content: str) -> dict[str, Any]:
    return {"type": "text", "content": content}


def call_part(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": arguments}


def output_messages(span) -> Any:
    assert k.OUTPUT_MESSAGES in span.attributes, f"{span.name} has no {k.OUTPUT_MESSAGES}"
    return json.loads(span.attributes[k.OUTPUT_MESSAGES])


def assert_usage(span, input_tokens: int, output_tokens: int) -> None:
    assert span.attributes[k.USAGE_INPUT_TOKENS] == input_tokens
    assert span.attributes[k.USAGE_OUTPUT_TOKENS] == output_tokens


def assert_no_secret(spans, *secrets: str) -> None:
    assert spans
    for span in spans:
        dump = json.dumps([span.name, span.status.description or "", dict(span.attributes or {}),
                           [[e.name, dict(e.attributes or {})] for e in span.events]], default=str)
        for secret in (API_KEY, *secrets):
            assert secret not in dump, span.name


def tool_calls_in(result) -> list[dict]:
    """The tool calls AG2 put in the chat history (the assistant's message), in order."""
    return [c for m in result.chat_history for c in (m.get("tool_calls") or [])]


def assert_calculator_chat(spans, result, *, model: str, provider: str, call_id: str | None, answer: str,
                           usages: list[tuple[int, int]], first_text: str | None = None) -> None:
    """Two ``chat {model}`` spans: the tool call (id as AG2 recorded it in the history, which is the server's id
    unless ``call_id`` is None) then the text answer; one ``execute_tool calculator`` span with the result "200"."""
    chats = by_name(spans, f"chat {model}")
    assert len(chats) == 2, [s.name for s in spans]
    (history_call,) = tool_calls_in(result)
    if call_id is not None:
        assert history_call["id"] == call_id
    first_parts = [text(first_text)] if first_text else []
    assert output_messages(chats[0]) == [out(*first_parts, call_part(history_call["id"], "calculator", ARGS),
                                             finish_reason="tool_calls")]
    assert output_messages(chats[1]) == [out(text(answer), finish_reason="stop")]
    for span, (inp, outp) in zip(chats, usages):
        assert span.attributes[k.PROVIDER_NAME] == provider
        assert span.attributes[k.REQUEST_MODEL] == model
        assert_usage(span, inp, outp)
    assert list(chats[0].attributes[k.RESPONSE_FINISH_REASONS]) == ["tool_calls"]
    assert list(chats[1].attributes[k.RESPONSE_FINISH_REASONS]) == ["stop"]
    (tool,) = by_name(spans, "execute_tool calculator")
    assert tool.attributes[k.TOOL_CALL_ID] == history_call["id"]
    assert json.loads(tool.attributes[k.TOOL_CALL_ARGUMENTS]) == ARGS
    assert tool.attributes[k.TOOL_CALL_RESULT] == "200"
    assert result.chat_history[-1]["content"] == answer


# --- Groq (groq SDK; base_url from the config entry) -----------------------------------------------------------------

@pytest.fixture
def groq_sdk():
    return ag2_sdk("groq", "groq")


def test_groq_plain_create(groq_sdk, traced, span_exporter):
    from autogen import OpenAIWrapper

    from tests.provider_stubs import GroqStub, groq_completion

    body = groq_completion("Paris.", prompt_tokens=31, completion_tokens=3)
    with GroqStub([Reply(body=body)]) as stub:
        returned = OpenAIWrapper(**stub.llm_config(API_KEY)).create(
            messages=[{"role": "user", "content": "Capital of France?"}])
        requests = list(stub.requests)
    assert len(requests) == 1 and requests[0].header("authorization") == f"Bearer {API_KEY}"
    assert requests[0].body["messages"] == [{"role": "user", "content": "Capital of France?"}]
    assert returned.choices[0].message.content == "Paris."
    spans = span_exporter.get_finished_spans()
    (span,) = by_name(spans, "chat llama-3.3-70b-versatile")
    assert output_messages(span) == [out(text("Paris."), finish_reason="stop")]
    assert span.attributes[k.PROVIDER_NAME] == "groq"
    assert span.attributes[k.RESPONSE_ID] == body["id"]
    assert_usage(span, 31, 3)
    assert_no_secret(spans)


def test_groq_calculator_chat(groq_sdk, traced, span_exporter):
    from tests.provider_stubs import GroqStub, groq_completion

    call = tool_call("calculator", ARGS, "call_groq_1")
    first = groq_completion(None, tool_calls=[call], prompt_tokens=180, completion_tokens=22)
    second = groq_completion("232 - 32 = 200.", prompt_tokens=230, completion_tokens=9)
    with GroqStub([Reply(body=first), Reply(body=second)]) as stub:
        result = run_calculator(stub.llm_config(API_KEY))
        requests = list(stub.requests)
    assert len(requests) == 2
    assert requests[0].body["tools"][0]["function"]["name"] == "calculator"
    assert requests[1].body["messages"][-1] == {"role": "tool", "tool_call_id": "call_groq_1", "content": "200"}
    spans = span_exporter.get_finished_spans()
    assert_calculator_chat(spans, result, model="llama-3.3-70b-versatile", provider="groq", call_id="call_groq_1",
                           answer="232 - 32 = 200.", usages=[(180, 22), (230, 9)])
    chats = by_name(spans, "chat llama-3.3-70b-versatile")
    assert [c.attributes[k.RESPONSE_ID] for c in chats] == [first["id"], second["id"]]
    assert_no_secret(spans)


# --- Together (together SDK 1.x; TOGETHER_BASE_URL) -------------------------------------------------------------------

@pytest.fixture
def together_sdk():
    return ag2_sdk("together", "together")  # AG2 0.14 imports together.error: together 1.x only


def test_together_calculator_chat(together_sdk, traced, span_exporter, monkeypatch):
    from tests.provider_stubs import TogetherStub, together_completion

    call = tool_call("calculator", ARGS, "call_together_1")
    first = together_completion(None, tool_calls=[call], prompt_tokens=150, completion_tokens=25)
    second = together_completion("It is 200.", prompt_tokens=205, completion_tokens=6)
    with TogetherStub([Reply(body=first), Reply(body=second)]) as stub:
        monkeypatch.setenv("TOGETHER_BASE_URL", stub.base_url)
        result = run_calculator(stub.llm_config(API_KEY))
        requests = list(stub.requests)
    assert len(requests) == 2 and all(r.header("authorization") == f"Bearer {API_KEY}" for r in requests)
    # AG2 sends the tool result back as a user message (TogetherClient rewrites role "tool")
    assert requests[1].body["messages"][-1]["role"] == "user"
    spans = span_exporter.get_finished_spans()
    model = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
    assert_calculator_chat(spans, result, model=model, provider="together", call_id="call_together_1",
                           answer="It is 200.", usages=[(150, 25), (205, 6)])
    chats = by_name(spans, f"chat {model}")
    assert [c.attributes[k.RESPONSE_ID] for c in chats] == [first["id"], second["id"]]
    assert_no_secret(spans)


# --- Cerebras (cerebras-cloud-sdk; CEREBRAS_BASE_URL) ----------------------------------------------------------------

@pytest.fixture
def cerebras_sdk():
    return ag2_sdk("cerebras.cloud.sdk", "cerebras")


def test_cerebras_calculator_chat(cerebras_sdk, traced, span_exporter, monkeypatch):
    from tests.provider_stubs import CerebrasStub, cerebras_completion

    call = tool_call("calculator", ARGS, "call_cerebras_1")
    first = cerebras_completion(None, tool_calls=[call], prompt_tokens=140, completion_tokens=19)
    second = cerebras_completion("The answer is 200.", prompt_tokens=190, completion_tokens=7)
    with CerebrasStub([Reply(body=first), Reply(body=second)]) as stub:
        monkeypatch.setenv("CEREBRAS_BASE_URL", stub.root_url)
        result = run_calculator(stub.llm_config(API_KEY))
        requests = stub.chat_requests
    assert len(requests) == 2 and all(r.header("authorization") == f"Bearer {API_KEY}" for r in requests)
    spans = span_exporter.get_finished_spans()
    assert_calculator_chat(spans, result, model="llama3.1-8b", provider="cerebras", call_id="call_cerebras_1",
                           answer="The answer is 200.", usages=[(140, 19), (190, 7)])
    chats = by_name(spans, "chat llama3.1-8b")
    assert [c.attributes[k.RESPONSE_ID] for c in chats] == [first["id"], second["id"]]
    assert_no_secret(spans)


# --- Mistral (mistralai 2.x; no endpoint override: server_url set on the SDK object AG2 built) -----------------------

@pytest.fixture
def mistral_sdk():
    return ag2_sdk("mistralai", "mistral")


def _point_mistral_at(stub):
    def prepare(assistant):
        (client,) = assistant.client._clients  # AG2's MistralAIClient, built when the tools were registered
        client._client.sdk_configuration.server_url = stub.root_url
    return prepare


def test_mistral_calculator_chat(mistral_sdk, traced, span_exporter):
    from tests.provider_stubs import MistralStub, mistral_completion

    call = tool_call("calculator", ARGS, "mCalc0001")
    first = mistral_completion(None, tool_calls=[call], prompt_tokens=160, completion_tokens=30)
    second = mistral_completion("232 - 32 = 200", prompt_tokens=215, completion_tokens=10)
    with MistralStub([Reply(body=first), Reply(body=second)]) as stub:
        result = run_calculator(stub.llm_config(API_KEY), prepare=_point_mistral_at(stub))
        requests = list(stub.requests)
    assert len(requests) == 2 and all(r.header("authorization") == f"Bearer {API_KEY}" for r in requests)
    assert requests[1].body["messages"][-1]["role"] == "tool"
    spans = span_exporter.get_finished_spans()
    assert_calculator_chat(spans, result, model="mistral-small-latest", provider="mistral_ai", call_id="mCalc0001",
                           answer="232 - 32 = 200", usages=[(160, 30), (215, 10)])
    chats = by_name(spans, "chat mistral-small-latest")
    assert [c.attributes[k.RESPONSE_ID] for c in chats] == [first["id"], second["id"]]
    assert [c.attributes[k.RESPONSE_MODEL] for c in chats] == ["mistral-small-latest"] * 2
    assert_no_secret(spans)


# --- Ollama (ollama SDK; client_host from the config entry) ----------------------------------------------------------

@pytest.fixture
def ollama_sdk():
    pytest.importorskip("fix_busted_json")  # AG2's OllamaClient needs it beside ollama
    return ag2_sdk("ollama", "ollama")


def test_ollama_calculator_chat(ollama_sdk, traced, span_exporter):
    from tests.provider_stubs import OllamaStub, ollama_chat, ollama_tool_call

    first = ollama_chat("", tool_calls=[ollama_tool_call("calculator", ARGS)], prompt_eval_count=120, eval_count=21)
    second = ollama_chat("That is 200.", prompt_eval_count=170, eval_count=6)
    with OllamaStub([Reply(body=first), Reply(body=second)]) as stub:
        # AG2's OllamaLLMConfigEntry defaults to native_tool_calls=False (tools described in the prompt, the reply's
        # text parsed for a JSON call); True uses Ollama's own tool calling, the API's tool_calls field
        result = run_calculator(stub.llm_config(native_tool_calls=True))
        requests = list(stub.requests)
    assert len(requests) == 2
    assert requests[0].body["tools"][0]["function"]["name"] == "calculator"
    spans = span_exporter.get_finished_spans()
    # Ollama's tool calls carry no id: AG2 invents one ("ollama_func_N"); the span records AG2's
    assert tool_calls_in(result)[0]["id"].startswith("ollama_func_")
    assert_calculator_chat(spans, result, model="llama3.1", provider="ollama", call_id=None, answer="That is 200.",
                           usages=[(120, 21), (170, 6)])
    chats = by_name(spans, "chat llama3.1")
    # AG2 uses Ollama's created_at as the response id
    assert [c.attributes[k.RESPONSE_ID] for c in chats] == [first["created_at"], second["created_at"]]
    assert_no_secret(spans)


def test_ollama_manual_tool_calling_chat(ollama_sdk, traced, span_exporter):
    """AG2's default for Ollama (native_tool_calls=False): the tools are described in the prompt and the model's text
    reply, a JSON list of calls, becomes AG2's tool calls (content blanked)."""
    from tests.provider_stubs import OllamaStub, ollama_chat

    first = ollama_chat(json.dumps([{"name": "calculator", "arguments": ARGS}]), prompt_eval_count=300, eval_count=33)
    second = ollama_chat("That is 200.", prompt_eval_count=350, eval_count=6)
    with OllamaStub([Reply(body=first), Reply(body=second)]) as stub:
        result = run_calculator(stub.llm_config())
        requests = list(stub.requests)
    assert len(requests) == 2 and not requests[0].body.get("tools")  # the ollama SDK sends "tools": []
    assert "calculator" in json.dumps(requests[0].body["messages"])  # described in the prompt instead
    spans = span_exporter.get_finished_spans()
    assert tool_calls_in(result)[0]["id"].startswith("ollama_manual_func_")
    assert_calculator_chat(spans, result, model="llama3.1", provider="ollama", call_id=None, answer="That is 200.",
                           usages=[(300, 33), (350, 6)])
    assert_no_secret(spans)


# --- Gemini API (google-genai, api key; GOOGLE_GEMINI_BASE_URL) ------------------------------------------------------

@pytest.fixture
def gemini_sdk():
    pytest.importorskip("vertexai")  # AG2's gemini module imports it (google-cloud-aiplatform) even for the API key
    return ag2_sdk("google.genai", "gemini")


def test_gemini_calculator_chat(gemini_sdk, traced, span_exporter, monkeypatch):
    from tests.provider_stubs import GeminiStub, gemini_function_call, gemini_response

    first = gemini_response(None, function_calls=[gemini_function_call("calculator", ARGS)], prompt_tokens=110,
                            candidates_tokens=14)
    second = gemini_response("232 - 32 = 200.", prompt_tokens=150, candidates_tokens=8)
    with GeminiStub([Reply(body=first), Reply(body=second)]) as stub:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", stub.root_url)
        result = run_calculator(stub.llm_config(API_KEY))
        requests = list(stub.requests)
    assert len(requests) == 2 and all(r.header("x-goog-api-key") == API_KEY for r in requests)
    assert [stub.model_of(r) for r in requests] == ["gemini-2.5-flash"] * 2
    decls = requests[0].body["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in decls] == ["calculator"]
    spans = span_exporter.get_finished_spans()
    # Gemini's function calls carry no id: AG2 invents a number; the span records AG2's
    assert tool_calls_in(result)[0]["id"].isdigit()
    assert_calculator_chat(spans, result, model="gemini-2.5-flash", provider="gcp.gemini", call_id=None,
                           answer="232 - 32 = 200.", usages=[(110, 14), (150, 8)])
    assert_no_secret(spans)


# --- Bedrock (boto3 bedrock-runtime Converse; AWS_ENDPOINT_URL_BEDROCK_RUNTIME) --------------------------------------

AWS_SECRET = "aws-SECRET-key-9f3e-stub"


@pytest.fixture
def boto3_sdk(monkeypatch):
    boto3 = ag2_sdk("boto3", "bedrock")
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)  # no ~/.aws profile of the machine takes part
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return boto3


def test_bedrock_calculator_chat(boto3_sdk, traced, span_exporter, monkeypatch):
    from tests.provider_stubs import BedrockStub, bedrock_converse, bedrock_tool_use

    model = "anthropic.claude-3-5-sonnet-20240620-v1:0"
    first = bedrock_converse("I'll use the calculator.", tool_uses=[bedrock_tool_use("calculator", ARGS,
                                                                                      "tooluse_bedrock_1")],
                             input_tokens=420, output_tokens=55)
    second = bedrock_converse("232 - 32 = 200.", input_tokens=500, output_tokens=12)
    with BedrockStub([Reply(body=first), Reply(body=second)]) as stub:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", stub.root_url)
        result = run_calculator(stub.llm_config(model, aws_secret_key=AWS_SECRET))
        requests = list(stub.requests)
        request_ids = list(stub.request_ids)
    assert len(requests) == 2
    assert [stub.model_of(r) for r in requests] == [model] * 2
    assert all("Credential=AKIASTUBSTUBSTUB0000/" in r.header("authorization") for r in requests)  # SigV4-signed
    assert requests[0].body["toolConfig"]["tools"][0]["toolSpec"]["name"] == "calculator"
    spans = span_exporter.get_finished_spans()
    assert_calculator_chat(spans, result, model=model, provider="aws.bedrock", call_id="tooluse_bedrock_1",
                           answer="232 - 32 = 200.", usages=[(420, 55), (500, 12)],
                           first_text="I'll use the calculator.")
    chats = by_name(spans, f"chat {model}")
    assert [c.attributes[k.RESPONSE_ID] for c in chats] == request_ids  # x-amzn-RequestId
    assert_no_secret(spans, AWS_SECRET)


# --- Cohere (cohere v2 chat; CO_API_URL read at import: the chat runs in a child process) ----------------------------

COHERE_CHILD = textwrap.dedent('''
    import json, sys
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from tests.genai_schema import SchemaCheckedSpanExporter
    from ag2_otel import Ag2Instrumentor
    from tests.test_provider_clients import run_calculator

    exporter = SchemaCheckedSpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    Ag2Instrumentor().instrument(tracer_provider=provider, capture_content=True)
    config = json.loads(sys.argv[1])
    result = run_calculator(config)
    spans = [{"name": s.name, "start": s.start_time, "end": s.end_time, "status": s.status.description or "",
              "attributes": dict(s.attributes or {}),
              "events": [[e.name, dict(e.attributes or {})] for e in s.events]}
             for s in exporter.get_finished_spans()]
    print("RESULT " + json.dumps({"spans": spans, "history": result.chat_history,
                                  "schema_problems": exporter.content_problems}, default=str))
''')


class _ChildSpan:
    """The fields of a finished span the child process reported, shaped like a ReadableSpan for the helpers."""

    class _Status:
        def __init__(self, description: str) -> None:
            self.description = description

    def __init__(self, data: dict) -> None:
        self.name = data["name"]
        self.start_time, self.end_time = data["start"], data["end"]
        self.attributes = data["attributes"]
        self.status = self._Status(data["status"])
        self.events = []


class _ChildResult:
    def __init__(self, history: list[dict]) -> None:
        self.chat_history = history


@pytest.fixture
def cohere_sdk():
    return ag2_sdk("cohere", "cohere")


def test_cohere_calculator_chat(cohere_sdk, tmp_path):
    from tests.provider_stubs import CohereStub, cohere_chat, cohere_tool_call

    call = cohere_tool_call("calculator", ARGS, "calculator_cohere_1")
    first = cohere_chat(tool_calls=[call], tool_plan="I will subtract with the calculator.", input_tokens=130,
                        output_tokens=28)
    second = cohere_chat("232 minus 32 is 200.", input_tokens=175, output_tokens=11)
    with CohereStub([Reply(body=first), Reply(body=second)]) as stub:
        env = {**os.environ, "CO_API_URL": stub.root_url, "PYTHONPATH": str(ROOT)}
        config = {"config_list": [{"api_type": "cohere", "model": "command-r-plus", "api_key": API_KEY}],
                  "cache_seed": None}
        child = subprocess.run([sys.executable, "-c", COHERE_CHILD, json.dumps(config)], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=540)
        requests = list(stub.requests)
    lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
    assert child.returncode == 0 and lines, child.stderr[-3000:]
    report = json.loads(lines[-1][len("RESULT "):])
    assert report["schema_problems"] == []
    assert len(requests) == 2 and all(r.header("authorization") == f"Bearer {API_KEY}" for r in requests)
    assert requests[0].body["tools"][0]["function"]["name"] == "calculator"
    assert requests[1].body["messages"][-1]["role"] == "tool"
    spans = [_ChildSpan(s) for s in report["spans"]]
    # AG2 keeps Cohere's tool_plan as the assistant text beside the tool call
    assert_calculator_chat(spans, _ChildResult(report["history"]), model="command-r-plus", provider="cohere",
                           call_id="calculator_cohere_1", answer="232 minus 32 is 200.",
                           usages=[(130, 28), (175, 11)], first_text="I will subtract with the calculator.")
    chats = by_name(spans, "chat command-r-plus")
    assert [c.attributes[k.RESPONSE_ID] for c in chats] == [first["id"], second["id"]]
    assert_no_secret(spans)
