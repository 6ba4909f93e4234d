"""The benchmark conversation, shared by bench.py and profile_sink.py.

Two agents on the in-process scripted model (no network): ``user`` opens with one message and executes tools;
``assistant`` answers every turn from a script that alternates a tool call (``add``) and a text reply. Nobody
terminates early: ``initiate_chat(max_turns=N)`` runs exactly N round trips (2N messages), which is checked.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

NO_LIMIT = 10**9  # max_consecutive_auto_reply: AG2's default (100) would end a 1000-turn chat early


def add(a: int, b: int) -> int:
    """The executor's trivial tool."""
    return a + b


def build(instrument_agent: Callable[[Any], Any] | None = None) -> tuple[Any, Any]:
    """Fresh (user, assistant) for one conversation; ``instrument_agent`` is applied to both (AG2's own tracing)."""
    from autogen import ConversableAgent, register_function

    from ag2_otel.scripted import ScriptedClient, Step, ToolCall, scripted_llm_config

    assistant = ConversableAgent(
        "assistant", system_message="You are a helpful assistant. Use the add tool for arithmetic.",
        llm_config=scripted_llm_config("gpt-4o-mini"), human_input_mode="NEVER",
        max_consecutive_auto_reply=NO_LIMIT, is_termination_msg=lambda m: False)
    user = ConversableAgent(
        "user", llm_config=False, human_input_mode="NEVER", max_consecutive_auto_reply=NO_LIMIT,
        default_auto_reply="Thanks. Next one, please.", is_termination_msg=lambda m: False)
    register_function(add, caller=assistant, executor=user, name="add", description="Add two integers.")

    counter = itertools.count()

    def script(messages: list[dict[str, Any]]) -> Step:
        i = next(counter)
        prompt = 120 + 30 * min(len(messages), 40)
        if i % 2 == 0:
            return Step(tool_calls=[ToolCall("add", {"a": i, "b": 1})], prompt_tokens=prompt, completion_tokens=18)
        return Step(text=f"The result is {i}. Anything else I can add up for you?", prompt_tokens=prompt,
                    completion_tokens=14)

    # after register_function: AG2 rebuilds the client when a tool is registered
    assistant.register_model_client(ScriptedClient, script=script)
    if instrument_agent is not None:
        instrument_agent(assistant)
        instrument_agent(user)
    return user, assistant


def chat(user: Any, assistant: Any, turns: int) -> Any:
    result = user.initiate_chat(assistant, message="Please add 1 and 1.", max_turns=turns, silent=True)
    if len(result.chat_history) != 2 * turns:
        raise RuntimeError(f"expected {2 * turns} messages, got {len(result.chat_history)}: the chat ended early")
    return result


def quiet_ag2() -> None:
    import logging

    for name in ("autogen", "autogen.oai.client", "ag2_otel", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
