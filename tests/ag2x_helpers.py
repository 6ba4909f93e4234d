"""AG2 1.x test helpers: its ``OpenAIConfig`` against the local OpenAI-compatible server (tests/scripted_llm.py), the
seed's calculator in the 1.x API, MLflow read-back. Import only where ``ag2`` 1.x is importable."""

from __future__ import annotations

import uuid

import mlflow
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ag2_otel.scripted import Step, ToolCall
from tests.scripted_llm import API_KEY, DEFAULT_MODEL, SCRIPT_HEADER, server

QUESTION = "What is (44232 + 13312 / (232 - 32)) * 5?"
ANSWER = "The result is 44298."
INSTRUCTIONS = "You are a helpful AI assistant. You can help with simple calculations."
SCRIPT = [
    Step(tool_calls=[ToolCall("calculator", {"a": 232, "b": 32, "operator": "-"}, id="call-1")],
         prompt_tokens=120, completion_tokens=21),
    Step(tool_calls=[ToolCall("calculator", {"a": 13312, "b": 200, "operator": "/"}, id="call-2")],
         prompt_tokens=160, completion_tokens=22),
    Step(text=ANSWER, prompt_tokens=200, completion_tokens=9, cached_tokens=50, reasoning_tokens=3),
]
TOTAL = {"input_tokens": 480, "output_tokens": 52, "total_tokens": 532, "cache_read_input_tokens": 50}
PER_CALL = [
    {"input_tokens": 120, "output_tokens": 21, "total_tokens": 141},
    {"input_tokens": 160, "output_tokens": 22, "total_tokens": 182},
    {"input_tokens": 200, "output_tokens": 9, "total_tokens": 209, "cache_read_input_tokens": 50},
]


def calculator(a: int, b: int, operator: str) -> int:
    """A simple calculator"""
    return {"+": a + b, "-": a - b, "*": a * b, "/": int(a / b) if b else 0}[operator]


def openai_config(script=(), *, streaming: bool = False, model: str = DEFAULT_MODEL):
    """AG2 1.x's OpenAIConfig for the real openai SDK over HTTP to the local server, answering from ``script``."""
    from ag2.config import OpenAIConfig

    name, _ = server().add(list(script), True)
    return OpenAIConfig(model=model, api_key=API_KEY, base_url=server().stub.base_url, streaming=streaming,
                        default_headers={SCRIPT_HEADER: name}, max_retries=0)


def calculator_agent(script=SCRIPT, *, streaming: bool = False, name: str = "assistant", **kwargs):
    from ag2 import Agent

    return Agent(name, INSTRUCTIONS, config=openai_config(script, streaming=streaming), tools=[calculator], **kwargs)


def memory_provider() -> TracerProvider:
    """A TracerProvider whose finished spans stay in memory (``provider.exporter``)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.exporter = exporter
    return provider


def use_local_store(tmp_path) -> str:
    """A fresh local sqlite store and experiment; returns the previous tracking URI."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment(f"ag2x-{uuid.uuid4().hex[:8]}")
    return previous


def mlflow_trace_of(otel_trace_id: int):
    """The MLflow trace of one OTel trace (ours: ``tr-`` + the OTel trace id), read back from the store."""
    return mlflow.get_trace(f"tr-{otel_trace_id:032x}")


def token_usages(trace) -> list[dict]:
    """``mlflow.chat.tokenUsage`` of the spans that carry one, in start order."""
    spans = sorted(trace.data.spans, key=lambda s: s.start_time_ns)
    return [s.get_attribute("mlflow.chat.tokenUsage") for s in spans if s.get_attribute("mlflow.chat.tokenUsage")]
