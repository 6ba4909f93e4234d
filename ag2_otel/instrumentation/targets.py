"""Every AG2 method we wrap, in one table. Class-level patches (wrapt), so agents created before or after
``instrument()`` are traced alike; ``uninstrument()`` restores each original.

A row whose module or attribute is missing in the installed AG2 version is skipped (logged at debug level): the
table covers ag2 0.9.1 → 0.14.x, and newer names only exist in newer releases. A row with ``unless_module`` is a
fallback for older releases: it is skipped when that module exists (AG2 reports the same thing there itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import wrappers as w
from .telemetry import Telemetry

AGENT = "autogen.agentchat.conversable_agent"
GROUP = "autogen.agentchat.groupchat"
PATTERNS = "autogen.agentchat.group.multi_agent_chat"
CHATS = "autogen.agentchat.chat"
CLIENT = "autogen.oai.client"
EVENTS = "autogen.events.agent_events"
TRANSITIONS = "autogen.agentchat.group.events.transition_events"
GROUP_UTILS = "autogen.agentchat.group.group_utils"
RUN_RESPONSE = "autogen.io.run_response"


@dataclass(frozen=True)
class Target:
    module: str
    attribute: str  # "Class.method" or a module-level function
    wrapper: Callable[[Telemetry], Callable]  # factory: Telemetry -> wrapt wrapper
    what: str  # the span (or effect) it produces
    unless_module: str | None = None  # skip this row when that module exists


def _sync(plan):
    return lambda tel: w.sync_wrapper(tel, plan)


def _async(plan):
    return lambda tel: w.async_wrapper(tel, plan)


def _aliases(function: str, modules: tuple[str, ...], wrapper, what: str) -> list[Target]:
    """A module-level function re-exported elsewhere: every name a user (or AG2 itself) may call it by."""
    return [Target(m, function, wrapper, what) for m in modules]


TARGETS: tuple[Target, ...] = (
    # conversations
    Target(AGENT, "ConversableAgent.initiate_chat", _sync(w.plan_initiate_chat), "invoke_workflow initiate_chat"),
    Target(AGENT, "ConversableAgent.a_initiate_chat", _async(w.plan_a_initiate_chat), "invoke_workflow a_initiate_chat"),
    *_aliases("initiate_chats", (CHATS, AGENT, "autogen.agentchat", "autogen"), _sync(w.plan_initiate_chats),
              "invoke_workflow initiate_chats (sequential chats under one parent)"),
    *_aliases("a_initiate_chats", (CHATS, AGENT, "autogen.agentchat"), _async(w.plan_a_initiate_chats),
              "invoke_workflow a_initiate_chats"),
    *_aliases("initiate_group_chat", (PATTERNS, "autogen.agentchat", "autogen.agentchat.group"),
              _sync(w.plan_initiate_group_chat), "invoke_workflow initiate_group_chat (patterns)"),
    *_aliases("a_initiate_group_chat", (PATTERNS, "autogen.agentchat", "autogen.agentchat.group"),
              _async(w.plan_a_initiate_group_chat), "invoke_workflow a_initiate_group_chat"),
    Target(AGENT, "ConversableAgent.run", lambda tel: w.entry_point_wrapper("run"), "names the conversation 'run'"),
    Target(AGENT, "ConversableAgent.a_run", lambda tel: w.async_entry_point_wrapper("a_run"), "names it 'a_run'"),
    *_aliases("run_group_chat", (PATTERNS, "autogen.agentchat", "autogen.agentchat.group"),
              lambda tel: w.entry_point_wrapper("run_group_chat"), "names the conversation 'run_group_chat'"),
    *_aliases("a_run_group_chat", (PATTERNS, "autogen.agentchat", "autogen.agentchat.group"),
              lambda tel: w.async_entry_point_wrapper("a_run_group_chat"), "names it 'a_run_group_chat'"),
    # stepped runs (ag2 0.14; absent in older releases): all four return an iterator at once (a_* included, so the
    # sync entry-point wrapper names them); the iterator starts the worker thread at its first step, in the call's
    # context (the iterator rows below)
    Target(AGENT, "ConversableAgent.run_iter", lambda tel: w.entry_point_wrapper("run_iter"), "names it 'run_iter'"),
    Target(AGENT, "ConversableAgent.a_run_iter", lambda tel: w.entry_point_wrapper("a_run_iter"),
           "names it 'a_run_iter'"),
    *_aliases("run_group_chat_iter", (PATTERNS, "autogen.agentchat"),
              lambda tel: w.entry_point_wrapper("run_group_chat_iter"), "names it 'run_group_chat_iter'"),
    *_aliases("a_run_group_chat_iter", (PATTERNS, "autogen.agentchat"),
              lambda tel: w.entry_point_wrapper("a_run_group_chat_iter"), "names it 'a_run_group_chat_iter'"),
    *[Target(RUN_RESPONSE, f"{cls}.__init__", w.iter_response_wrapper,
             "no span: the worker thread started at the first step runs in the entry point's context")
      for cls in ("RunIterResponse", "AsyncRunIterResponse")],
    # agent turns (a GroupChatManager's turn is the group chat: invoke_workflow group_chat)
    Target(AGENT, "ConversableAgent.generate_reply", _sync(w.plan_generate_reply), "invoke_agent {agent}"),
    Target(AGENT, "ConversableAgent.a_generate_reply", _async(w.plan_a_generate_reply), "invoke_agent {agent}"),
    Target(AGENT, "ConversableAgent.generate_oai_reply", w.executor_context_wrapper,
           "no span: carries the turn's context into a_generate_oai_reply's executor thread"),
    # model calls
    Target(CLIENT, "OpenAIWrapper.create", w.llm_wrapper, "chat {model} (CLIENT) + gen_ai.client.* metrics"),
    # tools, handoffs, code, human input, speaker selection, termination
    Target(AGENT, "ConversableAgent.execute_function", _sync(w.plan_execute_function), "execute_tool {name}"),
    Target(AGENT, "ConversableAgent.a_execute_function", _async(w.plan_execute_function), "execute_tool {name}"),
    *[Target(TRANSITIONS, f"{event}TransitionEvent.__init__",
             lambda tel, kind=event: w.handoff_wrapper(tel, w.event_handoff(kind)),
             "execute_tool transfer_to_{target} with gen_ai.transfer.*")
      for event in ("OnConditionLLM", "ReplyResult", "OnContextCondition", "AfterWorks")],
    # ag2 < 0.10 sends no transition events: the same handoffs, read where those versions resolve them (same spans,
    # same parents); skipped where the events exist, so a handoff is never reported twice
    Target(AGENT, "ConversableAgent.generate_tool_calls_reply", lambda tel: w.handoff_wrapper(tel, w.tool_handoffs),
           "execute_tool transfer_to_{target}: ReplyResult / LLM OnCondition (ag2 < 0.10)", unless_module=TRANSITIONS),
    Target(GROUP_UTILS, "_run_oncontextconditions", lambda tel: w.handoff_wrapper(tel, w.context_handoffs),
           "execute_tool transfer_to_{target}: OnContextCondition (ag2 < 0.10)", unless_module=TRANSITIONS),
    Target(GROUP_UTILS, "determine_next_agent", lambda tel: w.handoff_wrapper(tel, w.after_work_handoffs),
           "execute_tool transfer_to_{target}: an agent's after-work (ag2 < 0.10)", unless_module=TRANSITIONS),
    Target(AGENT, "ConversableAgent.execute_code_blocks", _sync(w.plan_execute_code), "execute_tool execute_code"),
    Target("autogen.coding.local_commandline_code_executor", "LocalCommandLineCodeExecutor.execute_code_blocks",
           _sync(w.plan_execute_code), "execute_tool execute_code"),
    Target("autogen.coding.docker_commandline_code_executor", "DockerCommandLineCodeExecutor.execute_code_blocks",
           _sync(w.plan_execute_code), "execute_tool execute_code"),
    Target(AGENT, "ConversableAgent.get_human_input", _sync(w.plan_human_input), "await_human_input"),
    Target(AGENT, "ConversableAgent.a_get_human_input", _async(w.plan_human_input), "await_human_input"),
    Target(GROUP, "GroupChat.select_speaker", _sync(w.plan_select_speaker), "speaker_selection"),
    Target(GROUP, "GroupChat.a_select_speaker", _async(w.plan_select_speaker), "speaker_selection"),
    Target(EVENTS, "TerminationEvent.__init__", w.termination_event_wrapper,
           "ag2.workflow.termination_reason on the conversation span"),
)

# AG2 modules that start worker threads (run, run_group_chat, sequential runs, async-in-thread): their `threading`
# name is pointed at a shim whose Thread carries the creator's context (see context_carry.py).
THREAD_MODULES: tuple[str, ...] = (AGENT, PATTERNS)
