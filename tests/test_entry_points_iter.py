"""Stepped runs (``run_iter``, ``a_run_iter``, ``run_group_chat_iter``, ``a_run_group_chat_iter``): one conversation
span per run, named after the entry point, parented to the span current at the call, in the caller's trace; it ends
with AG2's chat, also when the caller stops iterating early. And a pattern's conversation span carries the
termination reason of its group chat. Real AG2 on the scripted model."""

from __future__ import annotations

import asyncio
import time

import pytest
from opentelemetry.trace import StatusCode

from ag2_otel import semconv as k
from tests.helpers import attrs, by_name, children, span_tree
from tests.test_instrumentation_basic import CALCULATOR_SCRIPT, CALCULATOR_TREE, make_calculator_agents
from tests.test_instrumentation_groups import PATTERN_TREE, _triage_pattern, workflow


def _has_iter() -> bool:
    from autogen import ConversableAgent

    return hasattr(ConversableAgent, "run_iter")


needs_iter = pytest.mark.skipif(not _has_iter(), reason="this AG2 has no run_iter / run_group_chat_iter")


def _wait_for(span_exporter, predicate, timeout=10.0):
    """The finished spans once ``predicate(spans)`` holds; the last list seen when the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        spans = span_exporter.get_finished_spans()
        if predicate(spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.01)


def _named(name):
    return lambda spans: any(s.name == name for s in spans)


def _calculator_tree(entry: str) -> list[str]:
    return ["  " + line.replace("initiate_chat", entry) for line in CALCULATOR_TREE]


def _assert_under(spans, outer, conversation_name):
    (conversation,) = by_name(spans, conversation_name)
    assert conversation.parent is not None and conversation.parent.span_id == outer.get_span_context().span_id
    assert {s.context.trace_id for s in spans} == {outer.get_span_context().trace_id}
    return conversation


# --- run_iter / a_run_iter -------------------------------------------------------------------------------------------

@needs_iter
def test_run_iter_is_one_conversation_under_the_callers_span(instrument, span_exporter, tracer_provider):
    instrument()
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    with tracer_provider.get_tracer("app").start_as_current_span("user request") as outer:
        events = list(user.run_iter(assistant, message="compute", max_turns=6))
    assert events  # AG2 stepped through the chat's events

    spans = _wait_for(span_exporter, lambda s: len(s) == 1 + len(CALCULATOR_TREE))
    assert span_tree(spans) == ["user request"] + _calculator_tree("run_iter")
    conversation = _assert_under(spans, outer, workflow("run_iter"))
    a = attrs(conversation)
    assert a[k.AG2_ENTRY_POINT] == a[k.WORKFLOW_NAME] == "run_iter"
    assert a[k.AG2_PARTICIPANTS] == ["user", "assistant"]
    assert by_name(spans, workflow("initiate_chat")) == []  # one span per conversation, not two levels


@needs_iter
def test_run_iter_parent_is_the_call_not_where_it_is_iterated(instrument, span_exporter, tracer_provider):
    """AG2 starts the worker thread at the first step, after run_iter() returned: the conversation still belongs to
    the span that was current at the call."""
    instrument()
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    tracer = tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("call site") as call_site:
        response = user.run_iter(assistant, message="compute", max_turns=6)
    with tracer.start_as_current_span("consumer"):
        for _event in response:
            pass

    spans = _wait_for(span_exporter, lambda s: len(s) == 2 + len(CALCULATOR_TREE))
    (conversation,) = by_name(spans, workflow("run_iter"))
    assert conversation.parent.span_id == call_site.get_span_context().span_id
    assert conversation.context.trace_id == call_site.get_span_context().trace_id
    assert children(spans, by_name(spans, "consumer")[0]) == []


@needs_iter
def test_run_iter_stopped_early_still_ends_the_conversation(instrument, span_exporter, tracer_provider):
    """The caller breaks out after the first event; AG2 then runs the chat on without stepping (its worker thread is
    no longer held): the conversation span ends when the chat does, with every turn in it, in the caller's trace."""
    instrument()
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
    with tracer_provider.get_tracer("app").start_as_current_span("user request") as outer:
        for _event in user.run_iter(assistant, message="compute", max_turns=6):
            break
    assert by_name(span_exporter.get_finished_spans(), "user request")

    spans = _wait_for(span_exporter, _named(workflow("run_iter")))
    conversation = _assert_under(spans, outer, workflow("run_iter"))
    assert conversation.end_time is not None
    assert conversation.status.status_code is StatusCode.UNSET
    assert span_tree(spans) == ["user request"] + _calculator_tree("run_iter")


@needs_iter
def test_a_run_iter_is_one_conversation_under_the_callers_span(instrument, span_exporter, tracer_provider):
    instrument()
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)

    async def main():
        with tracer_provider.get_tracer("app").start_as_current_span("user request") as outer:
            events = [event async for event in user.a_run_iter(assistant, message="compute", max_turns=6)]
        return outer, events

    outer, events = asyncio.run(main())
    assert events
    spans = _wait_for(span_exporter, lambda s: len(s) == 1 + len(CALCULATOR_TREE))
    assert span_tree(spans) == ["user request"] + _calculator_tree("a_run_iter")
    conversation = _assert_under(spans, outer, workflow("a_run_iter"))
    assert attrs(conversation)[k.AG2_ENTRY_POINT] == "a_run_iter"


@needs_iter
def test_a_run_iter_stopped_early_still_ends_the_conversation(instrument, span_exporter, tracer_provider):
    instrument()
    user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)

    async def main():
        with tracer_provider.get_tracer("app").start_as_current_span("user request") as outer:
            iterator = user.a_run_iter(assistant, message="compute", max_turns=6).__aiter__()
            await iterator.__anext__()
            await iterator.aclose()  # what `break` in `async for` leads to
        return outer

    outer = asyncio.run(main())
    spans = _wait_for(span_exporter, _named(workflow("a_run_iter")))
    conversation = _assert_under(spans, outer, workflow("a_run_iter"))
    assert conversation.end_time is not None
    assert span_tree(spans) == ["user request"] + _calculator_tree("a_run_iter")


# --- run_group_chat_iter / a_run_group_chat_iter ----------------------------------------------------------------------

def _pattern_tree(entry: str) -> list[str]:
    return ["  " + workflow(entry)] + ["  " + line for line in PATTERN_TREE[1:]]


@needs_iter
def test_run_group_chat_iter_is_the_patterns_conversation(instrument, span_exporter, tracer_provider):
    import autogen.agentchat as agentchat

    instrument()
    with tracer_provider.get_tracer("app").start_as_current_span("user request") as outer:
        events = list(agentchat.run_group_chat_iter(pattern=_triage_pattern(), messages="why?", max_rounds=10))
    assert events

    spans = _wait_for(span_exporter, lambda s: len(s) == len(PATTERN_TREE) + 1)
    assert span_tree(spans) == ["user request"] + _pattern_tree("run_group_chat_iter")
    root = _assert_under(spans, outer, workflow("run_group_chat_iter"))
    r = attrs(root)
    assert r[k.AG2_ENTRY_POINT] == r[k.WORKFLOW_NAME] == "run_group_chat_iter"
    assert r["ag2.pattern.type"] == "DefaultPattern"
    assert r["ag2.pattern.last_agent"] == "reviewer"
    assert r[k.AG2_TERMINATION_REASON] == "No next speaker selected"


@needs_iter
def test_run_group_chat_iter_stopped_early_still_ends(instrument, span_exporter, tracer_provider):
    import autogen.agentchat as agentchat

    instrument()
    with tracer_provider.get_tracer("app").start_as_current_span("user request") as outer:
        for _event in agentchat.run_group_chat_iter(pattern=_triage_pattern(), messages="why?", max_rounds=10):
            break

    spans = _wait_for(span_exporter, _named(workflow("run_group_chat_iter")))
    root = _assert_under(spans, outer, workflow("run_group_chat_iter"))
    assert root.end_time is not None
    assert attrs(root)[k.AG2_TERMINATION_REASON] == "No next speaker selected"
    assert span_tree(spans) == ["user request"] + _pattern_tree("run_group_chat_iter")


@needs_iter
def test_a_run_group_chat_iter_is_the_patterns_conversation(instrument, span_exporter, tracer_provider):
    import autogen.agentchat as agentchat

    instrument()

    async def main():
        with tracer_provider.get_tracer("app").start_as_current_span("user request") as outer:
            events = [e async for e in agentchat.a_run_group_chat_iter(
                pattern=_triage_pattern(), messages="why?", max_rounds=10)]
        return outer, events

    outer, events = asyncio.run(main())
    assert events
    spans = _wait_for(span_exporter, lambda s: len(s) == len(PATTERN_TREE) + 1)
    assert [line.replace(workflow("a_run_group_chat_iter"), "ROOT") for line in span_tree(spans)][:2] == [
        "user request", "  ROOT"]
    root = _assert_under(spans, outer, workflow("a_run_group_chat_iter"))
    assert attrs(root)[k.AG2_ENTRY_POINT] == "a_run_group_chat_iter"
    assert attrs(root)[k.AG2_TERMINATION_REASON] == "No next speaker selected"
    assert len(by_name(spans, workflow("group_chat"))) == 1


# --- a pattern's conversation span gets the termination reason -----------------------------------------------------------

def test_pattern_root_carries_the_termination_reason(instrument, span_exporter):
    import autogen.agentchat as agentchat

    instrument()
    agentchat.initiate_group_chat(pattern=_triage_pattern(), messages="why?", max_rounds=10)

    spans = span_exporter.get_finished_spans()
    (root,) = by_name(spans, workflow("initiate_group_chat"))
    (group,) = by_name(spans, workflow("group_chat"))
    assert attrs(group)[k.AG2_TERMINATION_REASON] == "No next speaker selected"
    assert attrs(root)[k.AG2_TERMINATION_REASON] == "No next speaker selected"


def test_pattern_root_carries_max_rounds_termination(instrument, span_exporter):
    """A pattern that runs out of rounds: 'Maximum rounds (2) reached' on both the group chat and the pattern."""
    import autogen.agentchat as agentchat
    from autogen.agentchat.group import AgentTarget
    from autogen.agentchat.group.patterns import DefaultPattern

    from ag2_otel.scripted import Step
    from tests.test_instrumentation_groups import plain_agent, scripted_agent

    instrument()
    ping = scripted_agent("ping", Step(text="ping", prompt_tokens=3, completion_tokens=1))
    pong = scripted_agent("pong", Step(text="pong", prompt_tokens=4, completion_tokens=1))
    ping.handoffs.set_after_work(AgentTarget(pong))
    pong.handoffs.set_after_work(AgentTarget(ping))
    pattern = DefaultPattern(initial_agent=ping, agents=[ping, pong], user_agent=plain_agent("user"))
    agentchat.initiate_group_chat(pattern=pattern, messages="go", max_rounds=2)

    spans = span_exporter.get_finished_spans()
    (root,) = by_name(spans, workflow("initiate_group_chat"))
    (group,) = by_name(spans, workflow("group_chat"))
    assert attrs(group)[k.AG2_TERMINATION_REASON] == "Maximum rounds (2) reached"
    assert attrs(root)[k.AG2_TERMINATION_REASON] == "Maximum rounds (2) reached"


def test_chat_nested_in_a_pattern_keeps_its_termination_to_itself(instrument, span_exporter):
    """A nested conversation inside a pattern agent's turn ends for its own reason: that reason goes on the nested
    conversation only, never on the pattern's span."""
    import autogen.agentchat as agentchat
    from autogen import Agent
    from autogen.agentchat.group import TerminateTarget
    from autogen.agentchat.group.patterns import DefaultPattern

    from ag2_otel.scripted import Step
    from tests.test_instrumentation_groups import plain_agent, scripted_agent

    instrument()
    inner_a = scripted_agent("inner_a", Step(text="inner one", prompt_tokens=2, completion_tokens=1))
    inner_b = scripted_agent("inner_b", Step(text="inner two", prompt_tokens=2, completion_tokens=1))
    host = scripted_agent("host", Step(text="host speaks", prompt_tokens=5, completion_tokens=1))

    def run_inner(recipient, messages, sender, config):
        inner_a.initiate_chat(inner_b, message="nested", max_turns=1)
        return True, "nested done"

    host.register_reply([Agent, None], run_inner, position=0)
    host.handoffs.set_after_work(TerminateTarget())
    pattern = DefaultPattern(initial_agent=host, agents=[host], user_agent=plain_agent("user"))
    agentchat.initiate_group_chat(pattern=pattern, messages="go", max_rounds=5)

    spans = span_exporter.get_finished_spans()
    (root,) = by_name(spans, workflow("initiate_group_chat"))
    (nested,) = by_name(spans, workflow("initiate_chat"))
    assert attrs(nested)[k.AG2_TERMINATION_REASON] == "Maximum turns (1) reached"
    assert attrs(root).get(k.AG2_TERMINATION_REASON) != "Maximum turns (1) reached"


# --- rows absent in older AG2 releases --------------------------------------------------------------------------------

def test_missing_iter_entry_points_are_skipped(tracer_provider, span_exporter, monkeypatch):
    """On an AG2 without the stepped entry points (0.9.x), their rows are skipped: instrument() works, chats are
    traced, uninstrument() restores everything."""
    import autogen.agentchat as agentchat
    import autogen.agentchat.group.multi_agent_chat as patterns
    import autogen.io.run_response as run_response
    from autogen import ConversableAgent

    from ag2_otel import Ag2Instrumentor

    for owner, name in ((ConversableAgent, "run_iter"), (ConversableAgent, "a_run_iter"),
                        (patterns, "run_group_chat_iter"), (patterns, "a_run_group_chat_iter"),
                        (agentchat, "run_group_chat_iter"), (agentchat, "a_run_group_chat_iter"),
                        (run_response, "RunIterResponse"), (run_response, "AsyncRunIterResponse")):
        monkeypatch.delattr(owner, name, raising=False)
    initiate_chat = vars(ConversableAgent)["initiate_chat"]

    instrumentor = Ag2Instrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        assert vars(ConversableAgent)["initiate_chat"] is not initiate_chat
        user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
        user.initiate_chat(assistant, message="compute", max_turns=6)
    finally:
        instrumentor.uninstrument()
    assert vars(ConversableAgent)["initiate_chat"] is initiate_chat
    assert span_tree(span_exporter.get_finished_spans()) == CALCULATOR_TREE


@needs_iter
def test_uninstrument_restores_the_iter_entry_points(tracer_provider):
    import autogen.agentchat.group.multi_agent_chat as patterns
    import autogen.io.run_response as run_response
    from autogen import ConversableAgent

    from ag2_otel import Ag2Instrumentor

    originals = [(ConversableAgent, "run_iter"), (ConversableAgent, "a_run_iter"), (patterns, "run_group_chat_iter"),
                 (patterns, "a_run_group_chat_iter"), (run_response.RunIterResponse, "__init__"),
                 (run_response.AsyncRunIterResponse, "__init__")]
    before = [vars(owner)[name] for owner, name in originals]
    instrumentor = Ag2Instrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        assert all(vars(owner)[name] is not b for (owner, name), b in zip(originals, before))
    finally:
        instrumentor.uninstrument()
    assert [vars(owner)[name] for owner, name in originals] == before
