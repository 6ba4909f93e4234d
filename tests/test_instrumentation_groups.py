"""Group chats (round robin, auto selection), pattern group chats with handoffs, nested chats, sequential chats and
run_group_chat's worker thread: the exact span tree of each, with the attributes that matter.

Module-level AG2 functions (initiate_group_chat, initiate_chats, run_group_chat) are looked up through their module at
call time (``agentchat.initiate_group_chat``): instrumentation replaces the module attribute, so a name bound by
``from ... import`` before ``instrument()`` stays unwrapped (see test_pattern_function_imported_before_instrument).
"""

from __future__ import annotations

from autogen.agentchat.group import ReplyResult  # module level: the tool's annotations are resolved in globals()
from opentelemetry.trace import SpanKind, StatusCode

from ag2_otel import semconv as k
from ag2_otel.scripted import Step, ToolCall
from tests.scripted_llm import scripted_llm_config
from tests.helpers import assert_conversation_id, attrs, by_name, children, parent_of, span_tree

CHAT = k.span_name(k.OP_CHAT, "scripted-model")


def agent_span(name: str) -> str:
    return k.span_name(k.OP_AGENT, name)


def workflow(entry: str) -> str:
    return k.span_name(k.OP_WORKFLOW, entry)


def handoff_span(target: str) -> str:
    return k.span_name(k.OP_TOOL, f"transfer_to_{target}")


def scripted_agent(name: str, *steps: Step | str, **kwargs):
    from autogen import ConversableAgent

    return ConversableAgent(name, llm_config=scripted_llm_config(list(steps)), human_input_mode="NEVER", **kwargs)


def plain_agent(name: str, **kwargs):
    from autogen import ConversableAgent

    return ConversableAgent(name, llm_config=False, human_input_mode="NEVER", **kwargs)


def usage_of(span) -> tuple[int, int]:
    a = attrs(span)
    return a[k.USAGE_INPUT_TOKENS], a[k.USAGE_OUTPUT_TOKENS]


def assert_one_trace(spans) -> None:
    assert len({s.context.trace_id for s in spans}) == 1, span_tree(spans)


def assert_llm_spans_under_their_agent(spans) -> None:
    """Every `chat` span is a CLIENT span whose parent is the `invoke_agent` span of the agent that called the model."""
    for span in spans:
        if attrs(span).get(k.OPERATION_NAME) != k.OP_CHAT:
            continue
        assert span.kind is SpanKind.CLIENT
        parent = parent_of(spans, span)
        assert parent is not None, span.name
        assert parent.name == agent_span(attrs(span)[k.AGENT_NAME])


# --- 1. round robin -------------------------------------------------------------------------------------------------

def test_round_robin_group_chat(instrument, span_exporter):
    from autogen import GroupChat, GroupChatManager

    instrument()
    names = ["alice", "bob", "carol"]
    agents = [scripted_agent(n, Step(text=f"{n} speaks", prompt_tokens=100 * (i + 1), completion_tokens=i + 1),
                             description=f"{n} the agent")
              for i, n in enumerate(names)]
    user = plain_agent("user")
    groupchat = GroupChat(agents=agents, messages=[], max_round=4, speaker_selection_method="round_robin")
    manager = GroupChatManager(groupchat, llm_config=False)

    user.initiate_chat(manager, message="hello team", max_turns=1)

    spans = span_exporter.get_finished_spans()
    assert span_tree(spans) == [
        workflow("initiate_chat"),
        "  " + workflow("group_chat"),
        "    speaker_selection",
        "    invoke_agent alice",
        "      " + CHAT,
        "    speaker_selection",
        "    invoke_agent bob",
        "      " + CHAT,
        "    speaker_selection",
        "    invoke_agent carol",
        "      " + CHAT,
    ]
    assert_one_trace(spans)
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)
    assert all(s.kind is (SpanKind.CLIENT if s.name == CHAT else SpanKind.INTERNAL) for s in spans)

    (root,) = by_name(spans, workflow("initiate_chat"))
    assert attrs(root)[k.AG2_PARTICIPANTS] == ["user", "chat_manager"]
    assert attrs(root)[k.AG2_MAX_TURNS] == 1

    (group,) = by_name(spans, workflow("group_chat"))
    g = attrs(group)
    assert g[k.OPERATION_NAME] == k.OP_WORKFLOW
    assert g[k.AG2_ENTRY_POINT] == "group_chat"
    assert g[k.AGENT_NAME] == "chat_manager"
    assert g[k.AG2_SPEAKER_METHOD] == "round_robin"
    assert g[k.AG2_PARTICIPANTS] == names
    assert g[k.AG2_MAX_ROUNDS] == 4
    assert g[k.AG2_TURNS] == 4  # the user's message and three replies
    assert g[k.AG2_TERMINATION_REASON] == "Maximum rounds (4) reached"
    assert g["ag2.group_chat.last_speaker"] == "carol"

    selections = by_name(spans, "speaker_selection")
    assert [attrs(s)[k.AG2_SPEAKER_SELECTED] for s in selections] == names
    assert [attrs(s)[k.AG2_SENDER] for s in selections] == ["user", "alice", "bob"]
    for selection in selections:
        a = attrs(selection)
        assert a[k.AG2_SPAN_TYPE] == k.SPAN_TYPE_SPEAKER_SELECTION
        assert a[k.AG2_SPEAKER_METHOD] == "round_robin"
        assert a[k.AG2_SPEAKER_CANDIDATES] == names

    for i, name in enumerate(names):
        (turn,) = by_name(spans, agent_span(name))
        assert attrs(turn)[k.AGENT_NAME] == name
        assert attrs(turn)[k.AG2_SENDER] == "chat_manager"
        (llm,) = children(spans, turn)
        assert usage_of(llm) == (100 * (i + 1), i + 1)
        assert attrs(llm)[k.AGENT_NAME] == name
        assert attrs(llm)[k.REQUEST_MODEL] == "scripted-model"
    assert_llm_spans_under_their_agent(spans)


# --- 2. auto selection: AG2's internal two-agent selection chat ---------------------------------------------------------

def test_auto_selection_group_chat_nests_the_selector_chat(instrument, span_exporter):
    from autogen import GroupChat, GroupChatManager

    instrument()
    picks = iter(["carol", "alice"])  # what the scripted selector model answers, in order

    selector_config = scripted_llm_config(lambda messages: Step(text=next(picks), prompt_tokens=50, completion_tokens=1),
                                          model="selector-model")

    names = ["alice", "bob", "carol"]
    agents = [scripted_agent(n, Step(text=f"{n} speaks", prompt_tokens=100 * (i + 1), completion_tokens=i + 1),
                             description=f"{n} the agent")
              for i, n in enumerate(names)]
    user = plain_agent("user")
    groupchat = GroupChat(
        agents=agents, messages=[], max_round=3, speaker_selection_method="auto",
        select_speaker_auto_llm_config=selector_config,
    )
    manager = GroupChatManager(groupchat, llm_config=False)

    user.initiate_chat(manager, message="hello team", max_turns=1)

    spans = span_exporter.get_finished_spans()
    selector_round = [
        "    speaker_selection",
        "      " + workflow("initiate_chat"),
        "        invoke_agent speaker_selection_agent",
        "          chat selector-model",
        "        invoke_agent checking_agent",
    ]
    assert span_tree(spans) == [
        workflow("initiate_chat"),
        "  " + workflow("group_chat"),
        *selector_round,
        "    invoke_agent carol",
        "      " + CHAT,
        *selector_round,
        "    invoke_agent alice",
        "      " + CHAT,
    ]
    assert_one_trace(spans)
    assert_llm_spans_under_their_agent(spans)

    (group,) = by_name(spans, workflow("group_chat"))
    assert attrs(group)[k.AG2_SPEAKER_METHOD] == "auto"
    assert attrs(group)[k.AG2_TURNS] == 3

    selections = by_name(spans, "speaker_selection")
    assert [attrs(s)[k.AG2_SPEAKER_SELECTED] for s in selections] == ["carol", "alice"]
    for selection in selections:
        assert attrs(selection)[k.AG2_SPEAKER_METHOD] == "auto"
        assert attrs(selection)[k.AG2_SPEAKER_CANDIDATES] == names
        assert parent_of(spans, selection) is group
        (inner,) = children(spans, selection)
        assert attrs(inner)[k.AG2_PARTICIPANTS] == ["checking_agent", "speaker_selection_agent"]
        selector_turn, checker_turn = children(spans, inner)
        assert attrs(selector_turn)[k.AG2_SENDER] == "checking_agent"
        (selector_llm,) = children(spans, selector_turn)
        assert selector_llm.kind is SpanKind.CLIENT
        assert attrs(selector_llm)[k.REQUEST_MODEL] == "selector-model"
        assert usage_of(selector_llm) == (50, 1)
        assert children(spans, checker_turn) == []  # the checker validates the name, no model call

    # the selected agent is the one that speaks next, with its own usage
    for name, usage in (("carol", (300, 3)), ("alice", (100, 1))):
        (turn,) = by_name(spans, agent_span(name))
        assert parent_of(spans, turn) is group
        (llm,) = children(spans, turn)
        assert usage_of(llm) == usage
    assert by_name(spans, agent_span("bob")) == []


def test_auto_selection_async_group_chat(instrument, span_exporter):
    """a_initiate_chat → a_run_chat → a_select_speaker → a_auto_select_speaker: the same tree, model calls run in
    AG2's executor threads still under their agent's turn."""
    import asyncio

    from autogen import GroupChat, GroupChatManager

    instrument()

    selector_config = scripted_llm_config(lambda messages: Step(text="bob", prompt_tokens=50, completion_tokens=1),
                                          model="selector-model")

    names = ["alice", "bob"]
    agents = [scripted_agent(n, Step(text=f"{n} speaks", prompt_tokens=10 * (i + 1), completion_tokens=i + 1))
              for i, n in enumerate(names)]
    user = plain_agent("user")
    groupchat = GroupChat(
        agents=agents, messages=[], max_round=2, speaker_selection_method="auto",
        select_speaker_auto_llm_config=selector_config,
    )
    manager = GroupChatManager(groupchat, llm_config=False)

    asyncio.run(user.a_initiate_chat(manager, message="hello team", max_turns=1))

    spans = span_exporter.get_finished_spans()
    assert span_tree(spans) == [
        workflow("a_initiate_chat"),
        "  " + workflow("group_chat"),
        "    speaker_selection",
        "      " + workflow("a_initiate_chat"),
        "        invoke_agent speaker_selection_agent",
        "          chat selector-model",
        "        invoke_agent checking_agent",
        "    invoke_agent bob",
        "      " + CHAT,
    ]
    assert_one_trace(spans)
    assert_llm_spans_under_their_agent(spans)
    (selection,) = by_name(spans, "speaker_selection")
    assert attrs(selection)[k.AG2_SPEAKER_SELECTED] == "bob"
    (llm,) = children(spans, by_name(spans, agent_span("bob"))[0])
    assert usage_of(llm) == (20, 2)


# --- 3. pattern group chat with handoffs ----------------------------------------------------------------------------------

def _triage_pattern():
    from autogen.agentchat.group import AgentTarget, TerminateTarget
    from autogen.agentchat.group.patterns import DefaultPattern

    specialist = scripted_agent("specialist", Step(text="because", prompt_tokens=13, completion_tokens=3))
    reviewer = scripted_agent("reviewer", Step(text="approved", prompt_tokens=17, completion_tokens=2))

    def route_to_specialist(question: str) -> ReplyResult:
        """Send the question to the specialist."""
        return ReplyResult(message=f"routing: {question}", target=AgentTarget(specialist))

    from autogen import ConversableAgent

    triage = ConversableAgent("triage", llm_config=scripted_llm_config([
        Step(tool_calls=[ToolCall("route_to_specialist", {"question": "why?"}, id="call-route")],
             prompt_tokens=11, completion_tokens=7)]), human_input_mode="NEVER", functions=[route_to_specialist])
    specialist.handoffs.set_after_work(AgentTarget(reviewer))
    reviewer.handoffs.set_after_work(TerminateTarget())
    user = plain_agent("user")
    pattern = DefaultPattern(initial_agent=triage, agents=[triage, specialist, reviewer], user_agent=user)
    return pattern


PATTERN_TREE = [
    workflow("initiate_group_chat"),
    "  " + workflow("group_chat"),
    "    speaker_selection",
    "    invoke_agent triage",
    "      " + CHAT,
    "    speaker_selection",
    "    invoke_agent _Group_Tool_Executor",
    "      execute_tool route_to_specialist",
    "      " + handoff_span("specialist"),
    "    speaker_selection",
    "    invoke_agent specialist",
    "      " + CHAT,
    "    speaker_selection",
    "      " + handoff_span("reviewer"),
    "    invoke_agent reviewer",
    "      " + CHAT,
    "    speaker_selection",
    "      " + handoff_span("Terminate"),
]


def test_pattern_group_chat_with_handoffs(instrument, span_exporter):
    import autogen.agentchat as agentchat

    instrument()
    pattern = _triage_pattern()

    chat_result, _context, last_agent = agentchat.initiate_group_chat(pattern=pattern, messages="why?", max_rounds=10)

    assert last_agent.name == "reviewer"
    spans = span_exporter.get_finished_spans()
    assert span_tree(spans) == PATTERN_TREE
    assert_one_trace(spans)
    assert_llm_spans_under_their_agent(spans)

    # the pattern span is the conversation: AG2's inner initiate_chat was absorbed, not a second workflow level
    (root,) = by_name(spans, workflow("initiate_group_chat"))
    assert root.parent is None
    assert by_name(spans, workflow("initiate_chat")) == []
    assert [s.name for s in children(spans, root)] == [workflow("group_chat")]
    r = attrs(root)
    assert r[k.AG2_ENTRY_POINT] == r[k.WORKFLOW_NAME] == "initiate_group_chat"
    assert r[k.AG2_SPAN_TYPE] == k.SPAN_TYPE_CONVERSATION
    assert r[k.AG2_PARTICIPANTS] == ["triage", "specialist", "reviewer", "user"]
    assert r[k.AG2_MAX_ROUNDS] == 10
    assert r["ag2.pattern.type"] == "DefaultPattern"
    assert r["ag2.pattern.initial_agent"] == "triage"
    assert r["ag2.pattern.last_agent"] == "reviewer"
    assert_conversation_id(r, chat_result.chat_id)
    assert r[k.AG2_TURNS] == len(chat_result.chat_history)

    (group,) = by_name(spans, workflow("group_chat"))
    assert attrs(group)[k.AG2_SPEAKER_METHOD] == "callable:group_transition"
    assert attrs(group)[k.AG2_TERMINATION_REASON] == "No next speaker selected"

    selected = [attrs(s).get(k.AG2_SPEAKER_SELECTED) for s in by_name(spans, "speaker_selection")]
    assert selected == ["triage", "_Group_Tool_Executor", "specialist", "reviewer", None]

    (tool,) = by_name(spans, "execute_tool route_to_specialist")
    t = attrs(tool)
    assert t[k.TOOL_NAME] == "route_to_specialist"
    assert t[k.TOOL_CALL_ID] == "call-route"
    assert t[k.TOOL_TYPE] == "function"
    assert t[k.AG2_TOOL_SUCCESS] is True

    expected_handoffs = {
        # span name: (source agent, target, AG2's transition kind, parent span)
        handoff_span("specialist"): ("triage", "specialist", "ReplyResult", agent_span("_Group_Tool_Executor")),
        handoff_span("reviewer"): ("specialist", "reviewer", "AfterWorks", "speaker_selection"),
        handoff_span("Terminate"): ("reviewer", "Terminate", "AfterWorks", "speaker_selection"),
    }
    for name, (source, target, kind, parent_name) in expected_handoffs.items():
        (span,) = by_name(spans, name)
        a = attrs(span)
        assert span.kind is SpanKind.INTERNAL
        assert a[k.OPERATION_NAME] == k.OP_TOOL
        assert a[k.TOOL_NAME] == f"transfer_to_{target}"
        assert a[k.TOOL_TYPE] == "extension"
        assert a[k.TRANSFER_MODE] == "pass_control"
        assert a[k.TRANSFER_TARGET_NAME] == target
        assert a[k.AG2_SPAN_TYPE] == k.SPAN_TYPE_HANDOFF
        assert a["ag2.handoff.kind"] == kind
        assert a[k.AGENT_NAME] == source
        assert parent_of(spans, span).name == parent_name

    usage = {attrs(s)[k.AGENT_NAME]: usage_of(s) for s in by_name(spans, CHAT)}
    assert usage == {"triage": (11, 7), "specialist": (13, 3), "reviewer": (17, 2)}


def test_pattern_termination_is_not_an_error(instrument, span_exporter):
    import autogen.agentchat as agentchat

    instrument()
    agentchat.initiate_group_chat(pattern=_triage_pattern(), messages="why?", max_rounds=10)

    spans = span_exporter.get_finished_spans()
    last_selection = by_name(spans, "speaker_selection")[-1]
    assert last_selection.status.status_code is not StatusCode.ERROR
    assert k.ERROR_TYPE not in attrs(last_selection)


def test_pattern_function_imported_before_instrument(instrument, span_exporter):
    """A name bound by ``from autogen.agentchat import initiate_group_chat`` before instrument() is the unwrapped
    function: the chat is still traced (one trace, every handoff), rooted at AG2's own inner initiate_chat."""
    from autogen.agentchat import initiate_group_chat  # bound before instrument(): stays the original function

    instrument()
    initiate_group_chat(pattern=_triage_pattern(), messages="why?", max_rounds=10)

    spans = span_exporter.get_finished_spans()
    assert span_tree(spans) == [workflow("initiate_chat"), *PATTERN_TREE[1:]]
    assert_one_trace(spans)
    (root,) = by_name(spans, workflow("initiate_chat"))
    assert attrs(root)[k.AG2_PARTICIPANTS] == ["user", "chat_manager"]


def test_chat_nested_inside_pattern_is_a_new_conversation(instrument, span_exporter):
    """Only the pattern's own initiate_chat is absorbed: a nested chat run by an agent in the pattern gets its own
    `invoke_workflow initiate_chat` under that agent's turn."""
    import autogen.agentchat as agentchat
    from autogen.agentchat.group import TerminateTarget
    from autogen.agentchat.group.patterns import DefaultPattern

    instrument()
    helper = scripted_agent("helper", Step(text="helped", prompt_tokens=7, completion_tokens=2))
    lead = scripted_agent("lead", Step(text="unused", prompt_tokens=1, completion_tokens=1))
    lead.register_nested_chats([{"recipient": helper, "message": "help", "max_turns": 1,
                                 "summary_method": "last_msg"}], trigger=lambda sender: sender is not helper)
    lead.handoffs.set_after_work(TerminateTarget())
    pattern = DefaultPattern(initial_agent=lead, agents=[lead], user_agent=plain_agent("user"))

    agentchat.initiate_group_chat(pattern=pattern, messages="start", max_rounds=4)

    spans = span_exporter.get_finished_spans()
    assert span_tree(spans) == [
        workflow("initiate_group_chat"),
        "  " + workflow("group_chat"),
        "    speaker_selection",
        "    invoke_agent lead",
        "      " + workflow("initiate_chats"),
        "        " + workflow("initiate_chat"),
        "          invoke_agent helper",
        "            " + CHAT,
        "    speaker_selection",
        "      " + handoff_span("Terminate"),
    ]
    assert_one_trace(spans)
    (nested,) = by_name(spans, workflow("initiate_chat"))
    assert attrs(nested)[k.AG2_PARTICIPANTS] == ["lead", "helper"]
    assert usage_of(by_name(spans, CHAT)[0]) == (7, 2)


# --- 4. nested chats ------------------------------------------------------------------------------------------------------

def test_nested_chats_sit_under_the_agent_that_ran_them(instrument, span_exporter):
    instrument()
    writer = scripted_agent("writer", Step(text="draft", prompt_tokens=21, completion_tokens=4))
    critic = scripted_agent("critic", Step(text="looks fine", prompt_tokens=31, completion_tokens=6))
    boss = scripted_agent("boss", Step(text="never asked", prompt_tokens=1, completion_tokens=1))
    user = plain_agent("user")
    boss.register_nested_chats(
        [{"recipient": writer, "message": "write it", "max_turns": 1, "summary_method": "last_msg"},
         {"recipient": critic, "message": "critique it", "max_turns": 1, "summary_method": "last_msg"}],
        trigger=user,
    )

    result = user.initiate_chat(boss, message="go", max_turns=1)

    assert result.chat_history[-1]["content"] == "looks fine"
    spans = span_exporter.get_finished_spans()
    assert span_tree(spans) == [
        workflow("initiate_chat"),
        "  invoke_agent boss",
        "    " + workflow("initiate_chats"),
        "      " + workflow("initiate_chat"),
        "        invoke_agent writer",
        "          " + CHAT,
        "      " + workflow("initiate_chat"),
        "        invoke_agent critic",
        "          " + CHAT,
    ]
    assert_one_trace(spans)
    assert_llm_spans_under_their_agent(spans)

    (boss_turn,) = by_name(spans, agent_span("boss"))
    (queue,) = children(spans, boss_turn)
    assert attrs(queue)[k.AG2_SPAN_TYPE] == k.SPAN_TYPE_MULTI_CONVERSATION
    assert attrs(queue)["ag2.workflow.chats"] == 2
    assert attrs(queue)[k.AG2_PARTICIPANTS] == ["boss", "writer", "critic"]
    writer_chat, critic_chat = children(spans, queue)
    assert attrs(writer_chat)[k.AG2_PARTICIPANTS] == ["boss", "writer"]
    assert attrs(critic_chat)[k.AG2_PARTICIPANTS] == ["boss", "critic"]
    assert attrs(by_name(spans, agent_span("writer"))[0])[k.AG2_SENDER] == "boss"
    usage = {attrs(s)[k.AGENT_NAME]: usage_of(s) for s in by_name(spans, CHAT)}
    assert usage == {"writer": (21, 4), "critic": (31, 6)}


# --- 5. sequential chats and run_group_chat's worker thread --------------------------------------------------------------

SEQUENTIAL_TREE = [
    workflow("initiate_chats"),
    "  " + workflow("initiate_chat"),
    "    invoke_agent first",
    "      " + CHAT,
    "  " + workflow("initiate_chat"),
    "    invoke_agent second",
    "      " + CHAT,
]


def _sequential_agents():
    first = scripted_agent("first", Step(text="one", prompt_tokens=5, completion_tokens=1))
    second = scripted_agent("second", Step(text="two", prompt_tokens=6, completion_tokens=2))
    return plain_agent("user"), first, second


def _assert_sequential(spans, results):
    assert span_tree(spans) == SEQUENTIAL_TREE
    assert_one_trace(spans)
    assert_llm_spans_under_their_agent(spans)
    (queue,) = by_name(spans, workflow("initiate_chats"))
    q = attrs(queue)
    assert queue.parent is None
    assert q[k.AG2_SPAN_TYPE] == k.SPAN_TYPE_MULTI_CONVERSATION
    assert q[k.AG2_ENTRY_POINT] == "initiate_chats"
    assert q["ag2.workflow.chats"] == 2
    assert q[k.AG2_PARTICIPANTS] == ["user", "first", "second"]
    chats = children(spans, queue)
    assert [attrs(c)[k.AG2_PARTICIPANTS] for c in chats] == [["user", "first"], ["user", "second"]]
    for chat, result in zip(chats, results, strict=True):
        assert_conversation_id(attrs(chat), result.chat_id)
    assert [usage_of(s) for s in by_name(spans, CHAT)] == [(5, 1), (6, 2)]


def test_agent_initiate_chats_one_parent(instrument, span_exporter):
    instrument()
    user, first, second = _sequential_agents()

    results = user.initiate_chats([
        {"recipient": first, "message": "hi first", "max_turns": 1},
        {"recipient": second, "message": "hi second", "max_turns": 1},
    ])

    _assert_sequential(span_exporter.get_finished_spans(), results)


def test_module_initiate_chats_one_parent(instrument, span_exporter):
    import autogen

    instrument()
    user, first, second = _sequential_agents()

    results = autogen.initiate_chats([
        {"sender": user, "recipient": first, "message": "hi first", "max_turns": 1},
        {"sender": user, "recipient": second, "message": "hi second", "max_turns": 1},
    ])

    _assert_sequential(span_exporter.get_finished_spans(), results)


def _run_group_chat_in_span(tracer_provider):
    import autogen.agentchat as agentchat
    from autogen.agentchat.group import AgentTarget, TerminateTarget
    from autogen.agentchat.group.patterns import DefaultPattern

    first = scripted_agent("first", Step(text="one", prompt_tokens=5, completion_tokens=1))
    second = scripted_agent("second", Step(text="two", prompt_tokens=6, completion_tokens=2))
    first.handoffs.set_after_work(AgentTarget(second))
    second.handoffs.set_after_work(TerminateTarget())
    pattern = DefaultPattern(initial_agent=first, agents=[first, second], user_agent=plain_agent("user"))

    tracer = tracer_provider.get_tracer("tests")
    with tracer.start_as_current_span("test-root"):
        response = agentchat.run_group_chat(pattern=pattern, messages="go", max_rounds=5)
        response.process()  # drains AG2's event stream until the worker thread reports completion
    assert response.last_speaker == "second"


def _wait_for_spans(span_exporter, predicate, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while True:
        spans = span_exporter.get_finished_spans()
        if predicate(spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.01)


def test_run_group_chat_worker_thread_stays_in_callers_trace(instrument, tracer_provider, span_exporter):
    instrument()
    _run_group_chat_in_span(tracer_provider)

    spans = _wait_for_spans(span_exporter, lambda s: len(s) >= 14)
    tree = span_tree(spans)
    assert tree[0] == "test-root"
    assert tree[1].startswith("  " + k.OP_WORKFLOW + " ")  # the pattern's conversation (its name: next test)
    assert tree[2:] == [
        "    " + workflow("group_chat"),
        "      speaker_selection",
        "      invoke_agent first",
        "        " + CHAT,
        "      speaker_selection",
        "        " + handoff_span("second"),
        "      invoke_agent second",
        "        " + CHAT,
        "      speaker_selection",
        "        " + handoff_span("Terminate"),
    ]
    assert_one_trace(spans)
    assert_llm_spans_under_their_agent(spans)
    (root,) = by_name(spans, "test-root")
    (conversation,) = children(spans, root)
    assert attrs(conversation)[k.AG2_PARTICIPANTS] == ["first", "second", "user"]
    assert [usage_of(s) for s in by_name(spans, CHAT)] == [(5, 1), (6, 2)]


def test_run_group_chat_conversation_is_named_after_run_group_chat(instrument, tracer_provider, span_exporter):
    instrument()
    _run_group_chat_in_span(tracer_provider)

    spans = _wait_for_spans(span_exporter, lambda s: len(s) >= 14)
    (root,) = by_name(spans, "test-root")
    (conversation,) = children(spans, root)
    assert conversation.name == workflow("run_group_chat")
    assert attrs(conversation)[k.AG2_ENTRY_POINT] == "run_group_chat"
    assert attrs(conversation)[k.WORKFLOW_NAME] == "run_group_chat"


def test_async_pattern_group_chat_with_handoffs(instrument, span_exporter):
    import asyncio

    import autogen.agentchat as agentchat

    instrument()
    pattern = _triage_pattern()

    _result, _context, last_agent = asyncio.run(
        agentchat.a_initiate_group_chat(pattern=pattern, messages="why?", max_rounds=10))

    assert last_agent.name == "reviewer"
    spans = span_exporter.get_finished_spans()
    assert span_tree(spans) == [workflow("a_initiate_group_chat"), *PATTERN_TREE[1:]]
    assert_one_trace(spans)
    assert_llm_spans_under_their_agent(spans)
    assert by_name(spans, workflow("a_initiate_chat")) == []
    (handoff,) = by_name(spans, handoff_span("specialist"))
    assert attrs(handoff)[k.TRANSFER_TARGET_NAME] == "specialist"
    usage = {attrs(s)[k.AGENT_NAME]: usage_of(s) for s in by_name(spans, CHAT)}
    assert usage == {"triage": (11, 7), "specialist": (13, 3), "reviewer": (17, 2)}
