"""Wrapper factories: each takes the shared :class:`Telemetry` and returns a wrapt wrapper ``(wrapped, instance, args,
kwargs)``. A factory only decides *what* span to open (a :class:`Plan`); :func:`sync_wrapper` / :func:`async_wrapper`
run every plan the same way:

- our own code runs inside ``Telemetry.safe`` (logged once, swallowed): if planning fails, AG2 runs untraced;
- AG2's exceptions end the span with ERROR, ``error.type`` and an exception event, and propagate unchanged;
- AG2's return values are read, never changed.
"""

from __future__ import annotations

import contextvars
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import semconv as k
from .content import to_text
from . import context_carry, extract, provider_tap
from .telemetry import Telemetry, log_once

# The innermost conversation span of the current context: termination events and handoffs report to it.
CURRENT_WORKFLOW: contextvars.ContextVar[Any] = contextvars.ContextVar("ag2_otel_workflow", default=None)
# Set by run()/run_group_chat()/patterns so the conversation started inside (maybe in AG2's worker thread) is
# named after what the user called.
ENTRY_POINT: contextvars.ContextVar[str | None] = contextvars.ContextVar("ag2_otel_entry", default=None)
# A pattern entry point (initiate_group_chat, ...) already opened the conversation span: the initiate_chat AG2 runs
# inside it is the same conversation, not a nested one.
ABSORB_NEXT_CHAT: contextvars.ContextVar[bool] = contextvars.ContextVar("ag2_otel_absorb", default=False)
# The pattern's conversation span, while its own group chat runs: the group chat's termination reason (reported inside
# the `group_chat` span) is the pattern's too. Reset by every nested conversation.
PATTERN_ROOT: contextvars.ContextVar[Any] = contextvars.ContextVar("ag2_otel_pattern", default=None)

Wrapper = Callable[[Callable[..., Any], Any, tuple, dict], Any]


@dataclass
class Plan:
    """What span to open around one AG2 call and how to read its result."""

    name: str
    attributes: dict[str, Any]
    kind: SpanKind = SpanKind.INTERNAL
    content: Callable[[], dict] | None = None  # built only when content capture is on
    on_result: Callable[[Any, Any], None] | None = None  # (span, result)
    workflow: bool = False
    pattern: bool = False  # a pattern's conversation: also takes its group chat's termination reason
    leave_context_for: tuple[Any, Any] | None = None  # (agent, sender) whose executor-run client call needs this span
    # exceptions AG2 raises as control flow and catches itself: an outcome, not an error (class name -> outcome)
    expected: dict[str, str] = field(default_factory=dict)
    context_vars: list[tuple[contextvars.ContextVar, Any]] = field(default_factory=list)


class _Open:
    """A started span made current, with the context variables the plan asks for."""

    __slots__ = ("tel", "plan", "span", "tokens", "handoff", "pending")

    def __init__(self, tel: Telemetry, plan: Plan) -> None:
        self.tel, self.plan = tel, plan
        self.pending: dict[str, Any] | None = None  # content (SPAN_ONLY) and result attributes, set once in close()
        self.span = tel.tracer.start_span(plan.name, kind=plan.kind, attributes=plan.attributes)
        self.tokens = [(otel_context, otel_context.attach(trace.set_span_in_context(self.span)))]
        if plan.workflow:
            self.tokens.append((CURRENT_WORKFLOW, CURRENT_WORKFLOW.set(self.span)))
        if plan.pattern:
            self.tokens.append((PATTERN_ROOT, PATTERN_ROOT.set(self.span)))
        for var, value in plan.context_vars:
            self.tokens.append((var, var.set(value)))
        self.handoff = context_carry.leave_for_executor(*plan.leave_context_for) if plan.leave_context_for else None
        # content only for a span that records it (a sampled-out span drops attributes: no need to render them)
        if plan.content is not None and tel.content and self.span.is_recording():
            try:
                attributes = plan.content()
            except Exception as exc:  # noqa: BLE001 - as Telemetry.safe, without formatting the site every call
                log_once(f"{plan.name}: content", exc)
                attributes = None
            if attributes and tel.content_on_spans and not tel.content_on_events:
                self.pending = tel.scrub(attributes)  # with what the result adds: one set_attributes call
            elif attributes:
                tel.set_content(self.span, attributes)

    def done(self, result: Any) -> None:
        if self.plan.on_result is not None:
            try:
                self.plan.on_result(self.span if self.pending is None else _Deferred(self.span, self.pending), result)
            except Exception as exc:  # noqa: BLE001
                log_once(f"{self.plan.name}: result", exc)

    def failed(self, exc: BaseException) -> None:
        try:
            self._failed(exc)
        except Exception as error:  # noqa: BLE001 - AG2's exception must propagate, never one of ours
            log_once(f"{self.plan.name}: error", error)

    def _failed(self, exc: BaseException) -> None:
        span = self.span
        outcome = self.plan.expected.get(type(exc).__name__)
        if outcome is not None:
            span.set_attribute(k.AG2_OUTCOME, outcome)
            return
        span.set_attribute(k.ERROR_TYPE, type(exc).__qualname__)
        # The SDK's span.record_exception calls str(exc) (which may raise) and records message and traceback unbounded
        # (a provider error can quote megabytes of prompt, lone surrogates included): the same event, bounded and safe.
        limit = self.tel.limits.max_content_chars
        message = _exception_message(exc)
        module, qualname = type(exc).__module__, type(exc).__qualname__
        span.add_event("exception", {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": to_text(message, limit),
            "exception.stacktrace": to_text("".join(traceback.format_exception(exc)), limit),
            "exception.escaped": "True",
        })
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {to_text(message[:256], 256)}"))

    def close(self) -> None:
        if self.handoff is not None:
            context_carry.take_back(self.handoff)
        for var, token in reversed(self.tokens):
            try:
                (otel_context.detach(token) if var is otel_context else var.reset(token))
            except Exception:  # a context switched under us (generator, callback): keep going, end the span
                pass
        if self.pending:
            try:
                self.span.set_attributes(self.pending)
            except Exception as exc:  # noqa: BLE001
                log_once(f"{self.plan.name}: attributes", exc)
        self.span.end()


class _Deferred:
    """The span as a plan's ``on_result`` sees it when content is pending: attributes join the pending ones (set on
    the span in one call when it closes, before it ends); everything else goes to the span."""

    __slots__ = ("span", "attributes")

    def __init__(self, span: Any, attributes: dict[str, Any]) -> None:
        self.span, self.attributes = span, attributes

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: Any) -> None:
        self.attributes.update(attributes)

    def is_recording(self) -> bool:
        return self.span.is_recording()

    def __getattr__(self, name: str) -> Any:  # set_status, add_event, record_exception, get_span_context, ...
        return getattr(self.span, name)


def _exception_message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - an exception whose __str__ raises
        return f"<unprintable {type(exc).__name__}>"


def _open(tel: Telemetry, factory: Callable[..., Plan | None], instance: Any, args: tuple, kwargs: dict) -> _Open | None:
    plan = tel.safe(getattr(factory, "__name__", "plan"), factory, tel, instance, args, kwargs)
    if plan is None:
        return None
    try:
        return _Open(tel, plan)
    except Exception as exc:  # noqa: BLE001
        log_once(f"{plan.name}: start", exc)
        return None


def sync_wrapper(tel: Telemetry, factory: Callable[..., Plan | None]) -> Wrapper:
    def wrapper(wrapped, instance, args, kwargs):
        opened = _open(tel, factory, instance, args, kwargs)
        if opened is None:
            return wrapped(*args, **kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            opened.failed(exc)
            opened.close()
            raise
        opened.done(result)
        opened.close()
        return result

    return wrapper


def async_wrapper(tel: Telemetry, factory: Callable[..., Plan | None]) -> Wrapper:
    async def wrapper(wrapped, instance, args, kwargs):
        opened = _open(tel, factory, instance, args, kwargs)
        if opened is None:
            return await wrapped(*args, **kwargs)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            opened.failed(exc)
            opened.close()
            raise
        opened.done(result)
        opened.close()
        return result

    return wrapper


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


# --- conversations ------------------------------------------------------------------------------------------------

def _conversation_result(tel: Telemetry) -> Callable[[Any, Any], None]:
    def on_result(span, result):
        content = (tel.safe("conversation: output content", extract.chat_result_content, result,
                            tel.limits.max_content_chars) if tel.wants_content(span) else None)
        tel.set_with_content(span, extract.chat_result(result), content)

    return on_result


def plan_initiate_chat(tel: Telemetry, agent, args, kwargs) -> Plan | None:
    """ConversableAgent.(a_)initiate_chat(recipient, clear_history, silent, cache, max_turns, ..., message=...)"""
    if ABSORB_NEXT_CHAT.get():
        # The pattern's span already is this conversation: run it untraced at this level. Chats nested inside it
        # are new conversations again, hence the reset (undone when the pattern's span closes).
        ABSORB_NEXT_CHAT.set(False)
        return None
    if tel.conversation_hook is not None and CURRENT_WORKFLOW.get() is None:
        tel.safe("conversation hook", tel.conversation_hook)
    recipient = _arg(args, kwargs, 0, "recipient")
    entry = ENTRY_POINT.get() or "initiate_chat"
    max_turns = _arg(args, kwargs, 4, "max_turns")
    attrs = extract.workflow_start(entry, [agent, recipient], max_turns=max_turns)
    message = kwargs.get("message")
    return Plan(
        name=k.span_name(k.OP_WORKFLOW, entry),
        attributes=attrs,
        content=lambda: extract.initial_message_content(message, tel.limits.max_content_chars),
        on_result=_conversation_result(tel),
        workflow=True,
        context_vars=[(ENTRY_POINT, None), (PATTERN_ROOT, None)],
    )


def plan_a_initiate_chat(tel, agent, args, kwargs):
    plan = plan_initiate_chat(tel, agent, args, kwargs)
    if plan is not None and plan.attributes.get(k.AG2_ENTRY_POINT) == "initiate_chat":
        plan.attributes[k.WORKFLOW_NAME] = plan.attributes[k.AG2_ENTRY_POINT] = "a_initiate_chat"
        plan.name = k.span_name(k.OP_WORKFLOW, "a_initiate_chat")
    return plan


def _plan_chat_queue(entry: str):
    def plan(tel: Telemetry, _instance, args, kwargs) -> Plan | None:
        """initiate_chats(chat_queue): sequential chats under one parent."""
        queue = _arg(args, kwargs, 0, "chat_queue") or []
        participants = []
        for chat in list(queue)[:64]:
            for role in ("sender", "recipient"):
                agent = chat.get(role) if isinstance(chat, dict) else None
                if agent is not None and agent not in participants:
                    participants.append(agent)
        attrs = extract.workflow_start(entry, participants)
        attrs[k.AG2_SPAN_TYPE] = k.SPAN_TYPE_MULTI_CONVERSATION
        attrs["ag2.workflow.chats"] = len(queue)
        return Plan(name=k.span_name(k.OP_WORKFLOW, entry), attributes=attrs, workflow=True,
                    context_vars=[(ENTRY_POINT, None), (PATTERN_ROOT, None)])

    plan.__name__ = f"plan_{entry}"
    return plan


plan_initiate_chats = _plan_chat_queue("initiate_chats")
plan_a_initiate_chats = _plan_chat_queue("a_initiate_chats")


def _plan_pattern(entry: str):
    def plan(tel: Telemetry, _instance, args, kwargs) -> Plan | None:
        """initiate_group_chat(pattern, messages, max_rounds, ...): a pattern-based group chat."""
        name = ENTRY_POINT.get() or entry  # run_group_chat() calls the pattern entry point in its worker thread
        pattern = _arg(args, kwargs, 0, "pattern")
        agents = list(getattr(pattern, "agents", None) or [])
        user_agent = getattr(pattern, "user_agent", None)
        if user_agent is not None:
            agents.append(user_agent)
        attrs = extract.workflow_start(name, agents, max_rounds=_arg(args, kwargs, 2, "max_rounds", 20))
        initial = getattr(pattern, "initial_agent", None)
        if extract.name_of(initial):
            attrs["ag2.pattern.initial_agent"] = extract.name_of(initial)
        attrs["ag2.pattern.type"] = type(pattern).__name__
        messages = _arg(args, kwargs, 1, "messages")

        def on_result(span, result):
            chat_result = result[0] if isinstance(result, tuple) and result else None
            span.set_attributes(extract.chat_result(chat_result))
            last = result[2] if isinstance(result, tuple) and len(result) > 2 else None
            if extract.name_of(last):
                span.set_attribute("ag2.pattern.last_agent", extract.name_of(last))
            if tel.content and chat_result is not None:
                tel.set_content(span, extract.chat_result_content(chat_result, tel.limits.max_content_chars))

        return Plan(
            name=k.span_name(k.OP_WORKFLOW, name),
            attributes=attrs,
            content=lambda: extract.initial_message_content(
                messages if isinstance(messages, str) else (messages or [None])[-1], tel.limits.max_content_chars),
            on_result=on_result,
            workflow=True,
            pattern=True,
            context_vars=[(ENTRY_POINT, None), (ABSORB_NEXT_CHAT, True)],
        )

    plan.__name__ = f"plan_{entry}"
    return plan


plan_initiate_group_chat = _plan_pattern("initiate_group_chat")
plan_a_initiate_group_chat = _plan_pattern("a_initiate_group_chat")


def entry_point_wrapper(entry: str) -> Wrapper:
    """run()/run_group_chat(): no span of their own (they return before the chat ends); the conversation span
    opened in AG2's worker thread or task is named after them and parented to the caller's context."""

    def wrapper(wrapped, instance, args, kwargs):
        token = ENTRY_POINT.set(entry)
        try:
            return wrapped(*args, **kwargs)
        finally:
            ENTRY_POINT.reset(token)

    return wrapper


def async_entry_point_wrapper(entry: str) -> Wrapper:
    async def wrapper(wrapped, instance, args, kwargs):
        token = ENTRY_POINT.set(entry)
        try:
            return await wrapped(*args, **kwargs)
        finally:
            ENTRY_POINT.reset(token)

    return wrapper


def iter_response_wrapper(_tel: Telemetry) -> Wrapper:
    """(Async)RunIterResponse.__init__(start_thread_func, yield_on, agents), built by run_iter(), a_run_iter(),
    run_group_chat_iter() and a_run_group_chat_iter() (their rows are entry_point_wrapper rows). AG2 creates the worker
    thread only at the first iteration, after the entry point has returned: the function AG2 hands its iterator is
    called inside the context of the entry point's call instead, so the thread (see context_carry) and the
    conversation span opened in it get the caller's span as parent and the entry point's name. The span is the
    conversation's: it ends when AG2's chat ends, also after the caller stopped iterating (AG2 then runs the chat on
    without stepping). Outside an entry point (ENTRY_POINT unset) the arguments pass through untouched."""

    def carry(start_thread_func: Callable, context: contextvars.Context) -> Callable:
        def start_in_callers_context(*args: Any, **kwargs: Any) -> Any:
            return context.copy().run(start_thread_func, *args, **kwargs)  # a copy: never entered twice

        return start_in_callers_context

    def wrapper(wrapped, instance, args, kwargs):
        if ENTRY_POINT.get() is None:
            return wrapped(*args, **kwargs)
        context = contextvars.copy_context()
        if args:
            args = (carry(args[0], context), *args[1:])
        elif "start_thread_func" in kwargs:
            kwargs = {**kwargs, "start_thread_func": carry(kwargs["start_thread_func"], context)}
        return wrapped(*args, **kwargs)

    return wrapper


# --- agent turns and group chats ------------------------------------------------------------------------------------

def _is_group_manager(agent: Any) -> bool:
    return hasattr(agent, "groupchat") and hasattr(agent, "run_chat")


def _plan_group_chat(tel: Telemetry, manager, sender) -> Plan:
    groupchat = manager.groupchat
    agents = list(getattr(groupchat, "agents", None) or [])
    attrs = extract.workflow_start("group_chat", agents, max_rounds=getattr(groupchat, "max_round", None))
    attrs[k.AG2_SPEAKER_METHOD] = extract.speaker_selection(groupchat, None)[k.AG2_SPEAKER_METHOD]
    attrs[k.AGENT_NAME] = manager.name
    if extract.name_of(sender):
        attrs[k.AG2_SENDER] = extract.name_of(sender)
    start = len(getattr(groupchat, "messages", []) or [])

    def on_result(span, reply):
        span.set_attribute(k.AG2_TURNS, len(getattr(groupchat, "messages", []) or []) - start)
        last = getattr(manager, "last_speaker", None)
        if extract.name_of(last):
            span.set_attribute("ag2.group_chat.last_speaker", extract.name_of(last))

    return Plan(name=k.span_name(k.OP_WORKFLOW, "group_chat"), attributes=attrs, on_result=on_result, workflow=True)


def _plan_turn(tel: Telemetry, agent, args, kwargs, is_async: bool) -> Plan | None:
    """ConversableAgent.(a_)generate_reply(messages=None, sender=None, exclude=())"""
    messages = _arg(args, kwargs, 0, "messages")
    sender = _arg(args, kwargs, 1, "sender")
    if _is_group_manager(agent):
        return _plan_group_chat(tel, agent, sender)
    attrs = extract.agent_turn(agent, sender)
    max_chars = tel.limits.max_content_chars

    def on_result(span, reply):
        if tel.wants_content(span):
            tel.set_content(span, extract.reply_content(reply, max_chars))

    return Plan(
        name=k.span_name(k.OP_AGENT, attrs.get(k.AGENT_NAME)),
        attributes=attrs,
        content=lambda: extract.agent_turn_content(agent, messages, sender, max_chars),
        on_result=on_result,
        leave_context_for=(agent, sender) if is_async else None,
    )


def plan_generate_reply(tel, agent, args, kwargs):
    return _plan_turn(tel, agent, args, kwargs, is_async=False)


def plan_a_generate_reply(tel, agent, args, kwargs):
    return _plan_turn(tel, agent, args, kwargs, is_async=True)


def executor_context_wrapper(tel: Telemetry) -> Wrapper:
    """ConversableAgent.generate_oai_reply: in a_generate_oai_reply's executor thread, re-attach the turn's context."""

    def wrapper(wrapped, instance, args, kwargs):
        sender = _arg(args, kwargs, 1, "sender")
        token = tel.safe("generate_oai_reply: context", context_carry.attach_left_context, instance, sender)
        try:
            return wrapped(*args, **kwargs)
        finally:
            context_carry.detach(token)

    return wrapper


# --- model calls ----------------------------------------------------------------------------------------------------

def llm_wrapper(tel: Telemetry) -> Wrapper:
    """OpenAIWrapper.create(**config): one `chat {model}` CLIENT span per call, with usage, cost and cache hit."""

    def plan(tel_, wrapper_obj, args, kwargs) -> Plan:
        model, attrs = extract.llm_request(wrapper_obj, kwargs)
        limits = tel.limits
        before = (extract.usage_fingerprint(getattr(wrapper_obj, "actual_usage_summary", None)),
                  extract.usage_fingerprint(getattr(wrapper_obj, "total_usage_summary", None)))
        started = time.perf_counter()
        tap = provider_tap.Tap()  # what the provider SDK reports while this span is open

        def on_result(span, response):
            result_attrs = extract.llm_response(wrapper_obj, response)
            # only what the response lacks
            tel.safe("llm: provider usage", provider_tap.fill, result_attrs, tap, attrs.get(k.REQUEST_MODEL))
            actual = extract.usage_fingerprint(getattr(wrapper_obj, "actual_usage_summary", None))
            total = extract.usage_fingerprint(getattr(wrapper_obj, "total_usage_summary", None))
            if total != before[1]:
                result_attrs[k.AG2_CACHE_HIT] = actual == before[0]
            content = (tel.safe("llm: output content", extract.llm_response_content, response, limits.max_content_chars,
                                provider_tap.thinking(tap)) if tel.wants_content(span) else None)
            tel.set_with_content(span, result_attrs, content)  # one set_attributes call for both
            _record_metrics(tel, attrs, result_attrs, started)

        return Plan(
            name=k.span_name(k.OP_CHAT, model),
            attributes=attrs,
            kind=SpanKind.CLIENT,
            content=lambda: extract.llm_request_content(kwargs, limits.max_content_chars, limits.max_messages,
                                                        extract.first_config(wrapper_obj)),
            on_result=on_result,
            context_vars=[(provider_tap.CURRENT, tap)],
        )

    plan.__name__ = "plan_llm_call"
    inner = sync_wrapper(tel, plan)

    def wrapper(wrapped, instance, args, kwargs):
        started = time.perf_counter()
        try:
            return inner(wrapped, instance, args, kwargs)
        except BaseException as exc:
            tel.safe("llm: error metric", _record_error_metric, tel, instance, kwargs, exc, started)
            raise

    return wrapper


def _metric_attrs(request_attrs: dict, response_attrs: dict) -> dict:
    attrs = {key: request_attrs[key] for key in (k.OPERATION_NAME, k.PROVIDER_NAME, k.REQUEST_MODEL)
             if key in request_attrs}
    if k.RESPONSE_MODEL in response_attrs:
        attrs[k.RESPONSE_MODEL] = response_attrs[k.RESPONSE_MODEL]
    return attrs


def _record_metrics(tel: Telemetry, request_attrs: dict, response_attrs: dict, started: float) -> None:
    attrs = _metric_attrs(request_attrs, response_attrs)
    tel.duration.record(time.perf_counter() - started, attrs)
    for key, token_type in ((k.USAGE_INPUT_TOKENS, "input"), (k.USAGE_OUTPUT_TOKENS, "output")):
        if key in response_attrs:
            tel.tokens.record(response_attrs[key], {**attrs, k.TOKEN_TYPE: token_type})


def _record_error_metric(tel: Telemetry, wrapper_obj, kwargs, exc: BaseException, started: float) -> None:
    _, request_attrs = extract.llm_request(wrapper_obj, kwargs)
    attrs = _metric_attrs(request_attrs, {})
    attrs[k.ERROR_TYPE] = type(exc).__qualname__
    tel.duration.record(time.perf_counter() - started, attrs)


# --- tools and handoffs -----------------------------------------------------------------------------------------------

def plan_execute_function(tel: Telemetry, agent, args, kwargs) -> Plan:
    """ConversableAgent.(a_)execute_function(func_call, call_id=None, verbose=False) -> (is_success, result)"""
    func_call = _arg(args, kwargs, 0, "func_call")
    call_id = _arg(args, kwargs, 1, "call_id")
    name, attrs = extract.tool_call(agent, func_call, call_id)
    max_chars = tel.limits.max_content_chars

    def on_result(span, result):
        ok, payload = (result if isinstance(result, tuple) and len(result) == 2 else (True, result))
        span.set_attribute(k.AG2_TOOL_SUCCESS, bool(ok))
        if not ok:
            # AG2 catches the tool's exception and reports it as content: the span still says it failed
            span.set_attribute(k.ERROR_TYPE, "ToolExecutionError")
            span.set_status(Status(StatusCode.ERROR, "tool execution failed"))
        if tel.wants_content(span):
            tel.set_content(span, extract.tool_result_content(payload, max_chars))

    return Plan(
        name=k.span_name(k.OP_TOOL, name),
        attributes=attrs,
        content=lambda: extract.tool_arguments_content(func_call, max_chars),
        on_result=on_result,
    )


# A handoff finder runs before AG2's call (AG2 clears some of what it reads) and returns None, or a function of the
# call's result giving the handoffs it made: [(kind, source agent, transition target)].
Handoffs = Callable[[Any], list[tuple[str, Any, Any]]]


def handoff_wrapper(tel: Telemetry, find: Callable[[Any, tuple, dict], Handoffs | None]) -> Wrapper:
    """Every handoff in a pattern group chat (LLM tool handoffs, ReplyResult targets, context conditions, after-work)
    becomes a short ``execute_tool transfer_to_{target}`` span with ``gen_ai.transfer.*``, in the turn or speaker
    selection where AG2 made it."""

    def emit(handoffs: Handoffs, result: Any) -> None:
        for kind, source, target in handoffs(result):
            tool, attrs = extract.handoff(kind, source, target)
            tel.tracer.start_span(k.span_name(k.OP_TOOL, tool), attributes=attrs).end()

    def wrapper(wrapped, instance, args, kwargs):
        handoffs = tel.safe(f"{find.__name__}: before", find, instance, args, kwargs)
        result = wrapped(*args, **kwargs)
        if handoffs is not None:
            tel.safe(f"{find.__name__}: emit", emit, handoffs, result)
        return result

    return wrapper


def event_handoff(kind: str) -> Callable[[Any, tuple, dict], Handoffs]:
    """ag2 >= 0.10: ``{kind}TransitionEvent.__init__(source_agent, transition_target)`` marks each handoff."""

    def find(_event, args, kwargs):
        source, target = _arg(args, kwargs, 0, "source_agent"), _arg(args, kwargs, 1, "transition_target")
        return lambda _result: [(kind, source, target)]

    find.__name__ = f"{kind} handoff"
    return find


# ag2 < 0.10 has no transition events; the finders below read the same handoffs where those versions make them, with
# 0.10's rules for which ones get an event.

def tool_handoffs(executor, args, kwargs) -> Handoffs | None:
    """``generate_tool_calls_reply([message])``, which the group's tool executor runs one tool call at a time: a
    ReplyResult with a target, or an LLM OnCondition's transfer function returning its target."""
    if not hasattr(executor, "has_next_target"):  # not the GroupToolExecutor: a plain tool call
        return None
    messages = _arg(args, kwargs, 0, "messages") or [{}]
    message = messages[-1]
    manager = getattr(executor, "_group_manager", None)
    source = manager.groupchat.agent_by_name(message.get("name")) if manager and message.get("name") else None
    if source is None:
        return None

    def handoffs(reply):
        from autogen.agentchat.group import ReplyResult
        from autogen.agentchat.group.targets.transition_target import TransitionTarget

        called = {call.get("function", {}).get("name") for call in message.get("tool_calls", [])}
        by_llm = any(c.llm_function_name in called for c in source.handoffs.llm_conditions)
        found = []
        for response in (reply[1] or {}).get("tool_responses", []):
            content = response.get("content")
            if isinstance(content, ReplyResult) and content.target is not None:
                found.append(("ReplyResult", source, content.target))
            elif isinstance(content, TransitionTarget) and by_llm:
                found.append(("OnConditionLLM", source, content))
        return found

    return handoffs


def context_handoffs(_module, args, kwargs) -> Handoffs:
    """``_run_oncontextconditions(agent, ...)``, a reply function: ``(True, ...)`` when an OnContextCondition matched;
    it parks the target on the group's tool executor for the next speaker selection."""
    agent = _arg(args, kwargs, 0, "agent")

    def handoffs(result):
        if not (isinstance(result, tuple) and result and result[0] is True):
            return []
        executor = next(a for a in agent._group_manager.groupchat.agents if hasattr(a, "has_next_target"))
        return [("OnContextCondition", agent, executor.get_next_target())]

    return handoffs


def after_work_handoffs(_module, args, kwargs) -> Handoffs | None:
    """``determine_next_agent(last_speaker, groupchat, initial_agent, use_initial_agent, tool_executor,
    group_agent_names, user_agent, group_after_work)`` falls back to the after-work target when no earlier rule
    picks the next speaker (first turn, pending tool call, a tool executor target, back from a tool, the user spoke).
    Like 0.10's AfterWorks event, only an agent's own after-work counts, not the group's."""
    groupchat, executor = _arg(args, kwargs, 1, "groupchat"), _arg(args, kwargs, 4, "tool_executor")
    user = _arg(args, kwargs, 6, "user_agent")
    last = groupchat.messages[-1] if groupchat.messages else {}
    if (_arg(args, kwargs, 3, "use_initial_agent") or "tool_calls" in last or executor.has_next_target()
            or last.get("role") == "tool"):
        return None
    if user is not None and _arg(args, kwargs, 0, "last_speaker") is user:
        source = user  # a user without an after-work hands back to the previous agent: no handoff (target None)
    else:
        from autogen.agentchat.group.group_utils import get_last_agent_speaker

        source = get_last_agent_speaker(groupchat, _arg(args, kwargs, 5, "group_agent_names"), executor)
    target = source.handoffs.after_work
    return (lambda _result: [("AfterWorks", source, target)]) if target is not None else None


def termination_event_wrapper(tel: Telemetry) -> Wrapper:
    """TerminationEvent.__init__: the reason AG2 gives for ending a conversation, on that conversation's span."""

    def record(kwargs):
        reason = kwargs.get("termination_reason")
        if not isinstance(reason, str):
            return
        span, pattern = CURRENT_WORKFLOW.get(), PATTERN_ROOT.get()
        for target in (span, pattern) if pattern is not span else (span,):
            if target is not None:  # a pattern's group chat ends the pattern's conversation with the same reason
                target.set_attribute(k.AG2_TERMINATION_REASON, reason[:512])

    def wrapper(wrapped, instance, args, kwargs):
        result = wrapped(*args, **kwargs)
        tel.safe("termination reason", record, kwargs)
        return result

    return wrapper


# --- speaker selection, human input, code execution ----------------------------------------------------------------------

def plan_select_speaker(tel: Telemetry, groupchat, args, kwargs) -> Plan:
    """GroupChat.(a_)select_speaker(last_speaker, selector): every method (auto, round_robin, random, manual, callable)."""
    attrs = extract.speaker_selection(groupchat, _arg(args, kwargs, 0, "last_speaker"))

    def on_result(span, speaker):
        if extract.name_of(speaker):
            span.set_attribute(k.AG2_SPEAKER_SELECTED, extract.name_of(speaker))

    # pattern group chats end by raising NoEligibleSpeakerError from the selection, which run_chat catches
    return Plan(name=k.SPEAKER_SELECTION_SPAN, attributes=attrs, on_result=on_result,
                expected={"NoEligibleSpeakerError": "no_eligible_speaker"})


def plan_human_input(tel: Telemetry, agent, args, kwargs) -> Plan:
    """ConversableAgent.(a_)get_human_input(prompt)"""
    prompt = _arg(args, kwargs, 0, "prompt")
    attrs = {k.AG2_SPAN_TYPE: k.SPAN_TYPE_HUMAN_INPUT}
    if extract.name_of(agent):
        attrs[k.AGENT_NAME] = extract.name_of(agent)
    max_chars = tel.limits.max_content_chars

    def on_result(span, reply):
        if tel.content and isinstance(reply, str):
            tel.set_content(span, {k.AG2_HUMAN_REPLY: reply[:max_chars]})

    return Plan(
        name=k.HUMAN_INPUT_SPAN,
        attributes=attrs,
        content=lambda: {k.AG2_HUMAN_PROMPT: str(prompt)[:max_chars]} if prompt is not None else {},
        on_result=on_result,
    )


def plan_execute_code(tel: Telemetry, owner, args, kwargs) -> Plan:
    """ConversableAgent.execute_code_blocks(code_blocks) -> (exitcode, logs), and CodeExecutor.execute_code_blocks(
    code_blocks) -> CodeResult(exit_code, output): code execution as a tool."""
    code_blocks = _arg(args, kwargs, 0, "code_blocks")
    attrs = {
        k.OPERATION_NAME: k.OP_TOOL,
        k.TOOL_NAME: "execute_code",
        k.TOOL_TYPE: "extension",
        k.AG2_SPAN_TYPE: k.SPAN_TYPE_CODE_EXECUTION,
        k.AG2_CODE_LANGUAGE: extract.code_languages(code_blocks),
    }
    if extract.name_of(owner):
        attrs[k.AGENT_NAME] = extract.name_of(owner)
    max_chars = tel.limits.max_content_chars

    def on_result(span, result):
        if isinstance(result, tuple) and len(result) >= 2:
            exit_code, output = result[0], result[1]
        else:
            exit_code, output = getattr(result, "exit_code", None), getattr(result, "output", None)
        if isinstance(exit_code, int):
            span.set_attribute(k.AG2_CODE_EXIT_CODE, exit_code)
            if exit_code != 0:
                span.set_attribute(k.ERROR_TYPE, "CodeExecutionError")
                span.set_status(Status(StatusCode.ERROR, f"exit code {exit_code}"))
        if tel.content and output is not None:
            tel.set_content(span, {k.AG2_CODE_OUTPUT: extract.to_text(output, max_chars)})

    return Plan(
        name=k.span_name(k.OP_TOOL, "execute_code"),
        attributes=attrs,
        content=lambda: extract.code_blocks_content(code_blocks, max_chars),
        on_result=on_result,
    )
