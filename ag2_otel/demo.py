"""``ag2-otel demo``: a multi-agent scenario (tool use, then a group chat) on the scripted model — no API key, no
network — traced with ``ag2_otel.autolog()`` into MLflow, then read back and printed as a tree with latencies and a
token table. ``ag2-otel demo --ag2x``: the calculator in AG2 1.x (``import ag2``), its real OpenAI client and the openai
SDK answered by an in-process transport (the SDK parses the same JSON a provider sends into its ``ChatCompletion``)."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import time
from typing import Annotated, Any, TextIO

from .scripted import ScriptCursor, ScriptedClient, Step, ToolCall, completion_body, scripted_llm_config


def _terminates(message: dict[str, Any]) -> bool:
    return (message.get("content") or "").rstrip().endswith("TERMINATE")


def tool_use_chat() -> Any:
    """The calculator round trip of AG2's and MLflow's docs."""
    from autogen import ConversableAgent, register_function

    assistant = ConversableAgent(
        "assistant", system_message="You are a helpful AI assistant. You can help with simple calculations. "
        "Return 'TERMINATE' when the task is done.", llm_config=scripted_llm_config("gpt-4o-mini"))
    user_proxy = ConversableAgent("user_proxy", llm_config=False, is_termination_msg=_terminates,
                                  human_input_mode="NEVER")

    def calculator(a: int, b: int, operator: Annotated[str, "operator"]) -> int:
        return {"+": a + b, "-": a - b, "*": a * b, "/": int(a / b)}[operator]

    register_function(calculator, caller=assistant, executor=user_proxy, name="calculator",
                      description="A simple calculator")
    assistant.register_model_client(ScriptedClient, script=[
        Step(tool_calls=[ToolCall("calculator", {"a": 232, "b": 32, "operator": "-"})], prompt_tokens=152, completion_tokens=24),
        Step(tool_calls=[ToolCall("calculator", {"a": 13312, "b": 200, "operator": "/"})], prompt_tokens=188, completion_tokens=25),
        Step(tool_calls=[ToolCall("calculator", {"a": 44232, "b": 66, "operator": "+"})], prompt_tokens=224, completion_tokens=25),
        Step(tool_calls=[ToolCall("calculator", {"a": 44298, "b": 5, "operator": "*"})], prompt_tokens=260, completion_tokens=24),
        Step(text="(44232 + 13312 / (232 - 32)) * 5 = 221490. TERMINATE", prompt_tokens=296, completion_tokens=22,
             cached_tokens=128),
    ])
    return user_proxy.initiate_chat(assistant, message="What is (44232 + 13312 / (232 - 32)) * 5?", max_turns=10,
                                    silent=True)


def group_chat() -> Any:
    """A planner, a writer and a critic taking turns (round robin), run by a GroupChatManager."""
    from autogen import ConversableAgent, GroupChat, GroupChatManager

    def agent(name: str, model: str, steps: list[Step]) -> ConversableAgent:
        a = ConversableAgent(name, system_message=f"You are the {name}.", llm_config=scripted_llm_config(model),
                             human_input_mode="NEVER", is_termination_msg=_terminates)
        a.register_model_client(ScriptedClient, script=steps)
        return a

    planner = agent("planner", "gpt-4o", [Step("Plan: 1) outline 2) draft 3) review.", prompt_tokens=310, completion_tokens=40)])
    writer = agent("writer", "gpt-4o-mini", [Step("Draft: tracing makes agents observable.", prompt_tokens=420, completion_tokens=85)])
    critic = agent("critic", "gpt-4o", [Step("Looks good. TERMINATE", prompt_tokens=530, completion_tokens=12)])
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER", is_termination_msg=_terminates)
    chat = GroupChat(agents=[user, planner, writer, critic], messages=[], max_round=6,
                     speaker_selection_method="round_robin")
    manager = GroupChatManager(chat, llm_config=False, is_termination_msg=_terminates, silent=True)
    return user.initiate_chat(manager, message="Write one sentence on why tracing matters.", silent=True)


SCENARIOS = (("tool use: calculator round trip", tool_use_chat), ("group chat: planner, writer, critic", group_chat))

AG2X_QUESTION = "What is (44232 + 13312 / (232 - 32)) * 5?"
AG2X_SCRIPT = [
    Step(tool_calls=[ToolCall("calculator", {"a": 232, "b": 32, "operator": "-"})], prompt_tokens=152, completion_tokens=24),
    Step(tool_calls=[ToolCall("calculator", {"a": 13312, "b": 200, "operator": "/"})], prompt_tokens=188, completion_tokens=25),
    Step(tool_calls=[ToolCall("calculator", {"a": 44232, "b": 66, "operator": "+"})], prompt_tokens=224, completion_tokens=25),
    Step(tool_calls=[ToolCall("calculator", {"a": 44298, "b": 5, "operator": "*"})], prompt_tokens=260, completion_tokens=24),
    Step(text="(44232 + 13312 / (232 - 32)) * 5 = 221490.", prompt_tokens=296, completion_tokens=22, cached_tokens=128),
]


def scripted_openai_config(script: list[Step], model: str = "gpt-4o-mini") -> Any:
    """AG2 1.x's OpenAIConfig whose HTTP client answers in process from ``script``: AG2's OpenAI client and the openai
    SDK run as with a provider (the SDK builds its ``ChatCompletion`` from the JSON), only the network is not used."""
    import json

    import httpx2  # the HTTP library of the openai SDK AG2 1.x installs (OpenAIConfig.http_client)
    from ag2.config import OpenAIConfig

    cursor = ScriptCursor(script)

    def answer(request: Any) -> Any:
        body = json.loads(request.content or b"{}")
        step = cursor.next_step(list(body.get("messages") or []))
        return httpx2.Response(200, json=completion_body(step, body.get("model") or model))

    return OpenAIConfig(model=model, api_key="demo-no-key", max_retries=0,
                        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)))


def ag2x_calculator() -> Any:
    """The seed's calculator in the AG2 1.x API: one agent running its own tool loop."""
    import asyncio

    from ag2 import Agent

    def calculator(a: int, b: int, operator: str) -> int:
        """A simple calculator"""
        return {"+": a + b, "-": a - b, "*": a * b, "/": int(a / b)}[operator]

    agent = Agent("assistant", "You are a helpful AI assistant. You can help with simple calculations.",
                  config=scripted_openai_config(list(AG2X_SCRIPT)), tools=[calculator])
    return asyncio.run(agent.ask(AG2X_QUESTION))


AG2X_SCENARIOS = (("AG2 1.x: calculator (Agent.ask, its own tool loop)", ag2x_calculator),)


def _tree(trace: Any) -> list[tuple[int, Any]]:
    spans = trace.data.spans
    ids = {s.span_id for s in spans}
    children: dict[Any, list[Any]] = {}
    for span in spans:
        children.setdefault(span.parent_id if span.parent_id in ids else None, []).append(span)
    out: list[tuple[int, Any]] = []

    def walk(span: Any, depth: int) -> None:
        out.append((depth, span))
        for child in sorted(children.get(span.span_id, []), key=lambda s: s.start_time_ns):
            walk(child, depth + 1)

    for root in sorted(children.get(None, []), key=lambda s: s.start_time_ns):
        walk(root, 0)
    return out


def print_trace(trace: Any, out: TextIO) -> None:
    out.write(f"\ntrace {trace.info.trace_id}\n")
    for depth, span in _tree(trace):
        ms = (span.end_time_ns - span.start_time_ns) / 1e6
        usage = span.get_attribute("mlflow.chat.tokenUsage")
        tokens = f"  {usage['input_tokens']}→{usage['output_tokens']} tok" if usage else ""
        status = "" if str(span.status.status_code).endswith("OK") or "UNSET" in str(span.status.status_code) else \
            f"  [{span.status.status_code}]"
        label = f"{'  ' * depth}{span.name} ({span.span_type})"
        out.write(f"  {label:<58} {ms:9.2f} ms{tokens}{status}\n")


def print_usage(usage: dict[str, Any], out: TextIO) -> None:
    rows = [("agent", name, u) for name, u in sorted(usage.get("by_agent", {}).items())]
    rows += [("model", name, u) for name, u in sorted(usage.get("by_model", {}).items())]
    rows.append(("total", "", usage.get("total", {})))
    out.write(f"\n  {'by':<6} {'name':<14} {'calls':>5} {'input':>7} {'output':>7} {'total':>7} {'cost $':>10}\n")
    for kind, name, u in rows:
        cost = u.get("cost")
        out.write(f"  {kind:<6} {name:<14} {u.get('calls', ''):>5} {u.get('input_tokens', 0):>7} "
                  f"{u.get('output_tokens', 0):>7} {u.get('total_tokens', 0):>7} "
                  f"{(f'{cost:.6f}' if isinstance(cost, (int, float)) else '-'):>10}\n")


def run(out: TextIO = sys.stdout, ag2x: bool = False) -> int:
    import mlflow

    import ag2_otel

    scenarios = AG2X_SCENARIOS if ag2x else SCENARIOS

    for name in ("autogen", "autogen.oai.client"):  # AG2 logs an INFO line per scripted client it meets
        logging.getLogger(name).setLevel(logging.WARNING)
    out.write("ag2-otel demo: AG2 on a scripted model (no API key), traced into MLflow\n")
    out.write(f"  tracking URI: {mlflow.get_tracking_uri()}\n")
    out.flush()
    ag2_otel.autolog()
    experiment = mlflow.set_experiment("ag2-otel-demo")
    for index, (title, scenario) in enumerate(scenarios, 1):
        out.write(f"[{index}/{len(scenarios)}] {title} ...")
        out.flush()
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # AG2 prints every message; the demo prints the trace instead
            scenario()
        out.write(f" done in {time.perf_counter() - started:.2f} s\n")
        ag2_otel.flush()
        trace_id = mlflow.get_last_active_trace_id()
        trace = mlflow.get_trace(trace_id)
        print_trace(trace, out)
        print_usage(ag2_otel.get_token_usage(trace_id), out)
        out.write(f"  MLflow token_usage: {trace.info.token_usage}\n\n")
    uri = mlflow.get_tracking_uri()
    out.write(f"Open the traces: mlflow ui --backend-store-uri {uri}  (experiment '{experiment.name}', "
              f"id {experiment.experiment_id}, Traces tab)\n")
    return 0
