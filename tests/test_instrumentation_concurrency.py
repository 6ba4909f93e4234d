"""Concurrent conversations never share a trace: 20 chats in threads and 20 in asyncio tasks, all at once.

Each chat has its own agents (``asst-{i}``, ``user-{i}``) and a scripted model whose usage encodes the chat index, so
every span can be checked against the trace it landed in.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from opentelemetry.trace import SpanKind

from ag2_otel import semconv as k
from ag2_otel.scripted import Step
from tests.scripted_llm import scripted_llm_config
from tests.helpers import assert_conversation_id, attrs, children, parent_of, span_tree

N = 20  # chats per kind (threads, asyncio tasks)


def usage_for(index: int, role: str) -> tuple[int, int]:
    """(prompt, completion) tokens for chat ``index``: the assistant and the user's model differ too."""
    base = 1000 if role == "asst" else 5000
    return base + index, base + 2000 + index


def make_chat(index: int):
    from autogen import ConversableAgent

    agents = []
    for role in ("user", "asst"):
        prompt, completion = usage_for(index, role)
        script = lambda messages, r=role, p=prompt, c=completion: Step(  # noqa: E731
            text=f"{r} {index} says {len(messages)}", prompt_tokens=p, completion_tokens=c)
        agent = ConversableAgent(f"{role}-{index}", llm_config=scripted_llm_config(script), human_input_mode="NEVER")
        agents.append(agent)
    return agents  # user, assistant


# user → asst (model) → user (model) → asst (model): three model calls per chat
MAX_TURNS = 2


def run_in_thread(index: int):
    user, assistant = make_chat(index)
    return user.initiate_chat(assistant, message=f"hello {index}", max_turns=MAX_TURNS, silent=True)


async def run_in_task(index: int):
    user, assistant = make_chat(index)
    return await user.a_initiate_chat(assistant, message=f"hello {index}", max_turns=MAX_TURNS, silent=True)


def chat_tree(root_name: str, index: int) -> list[str]:
    turn = [f"  invoke_agent asst-{index}", "    chat scripted-model",
            f"  invoke_agent user-{index}", "    chat scripted-model"]
    return [root_name, *turn, *turn[:2]]


def test_threads_and_tasks_get_one_trace_each(instrument, span_exporter):
    instrument()

    with ThreadPoolExecutor(max_workers=N) as pool:
        futures = [pool.submit(run_in_thread, i) for i in range(N)]  # threads run while the tasks below run too

        async def all_tasks():
            return await asyncio.gather(*(run_in_task(N + i) for i in range(N)))

        task_results = asyncio.run(all_tasks())
        thread_results = [f.result(timeout=120) for f in futures]

    results = thread_results + list(task_results)
    assert all(len(r.chat_history) == 1 + 3 for r in results)

    spans = span_exporter.get_finished_spans()
    traces = defaultdict(list)
    for span in spans:
        traces[span.context.trace_id].append(span)
    assert len(traces) == 2 * N
    assert len(spans) == 2 * N * 7

    seen = set()
    for trace_spans in traces.values():
        roots = [s for s in trace_spans if s.parent is None]
        assert len(roots) == 1, span_tree(trace_spans)
        (root,) = roots
        index = int(attrs(root)[k.AG2_PARTICIPANTS][0].split("-")[1])
        seen.add(index)
        is_task = index >= N
        entry = "a_initiate_chat" if is_task else "initiate_chat"
        assert span_tree(trace_spans) == chat_tree(k.span_name(k.OP_WORKFLOW, entry), index)

        r = attrs(root)
        assert r[k.AG2_ENTRY_POINT] == entry
        assert r[k.AG2_PARTICIPANTS] == [f"user-{index}", f"asst-{index}"]
        assert_conversation_id(r, results[index].chat_id)

        for span in trace_spans:
            a = attrs(span)
            # no span of another chat in this trace: every agent name carries this trace's index
            if k.AGENT_NAME in a:
                assert a[k.AGENT_NAME].endswith(f"-{index}"), (index, span.name, a[k.AGENT_NAME])
            if k.AG2_SENDER in a:
                assert a[k.AG2_SENDER].endswith(f"-{index}")
            if a.get(k.OPERATION_NAME) == k.OP_AGENT:
                assert parent_of(trace_spans, span) is root
            if a.get(k.OPERATION_NAME) == k.OP_CHAT:
                assert span.kind is SpanKind.CLIENT
                parent = parent_of(trace_spans, span)
                assert parent is not None and attrs(parent).get(k.OPERATION_NAME) == k.OP_AGENT
                assert parent.context.trace_id == span.context.trace_id
                assert a[k.AGENT_NAME] == attrs(parent)[k.AGENT_NAME]
                role = a[k.AGENT_NAME].split("-")[0]
                assert (a[k.USAGE_INPUT_TOKENS], a[k.USAGE_OUTPUT_TOKENS]) == usage_for(index, role)
        turns = children(trace_spans, root)
        assert [attrs(t)[k.AGENT_NAME] for t in turns] == [f"asst-{index}", f"user-{index}", f"asst-{index}"]
    assert seen == set(range(2 * N))


def test_shared_agent_in_concurrent_async_chats(instrument, span_exporter):
    """One assistant serving two users in concurrent asyncio tasks (AG2 keeps a history per sender, so this is a
    supported use). Barriers, not timing, make the turns overlap: an asyncio.Barrier in a reply function lets both
    turns start before either calls the model, a threading.Barrier in the script keeps both model calls (in AG2's
    executor threads) in flight together. Each model call must still land in its own chat's trace."""
    import re
    import threading

    from autogen import Agent, ConversableAgent

    instrument()
    both_calls_started = threading.Barrier(2, timeout=30)  # both model calls in flight before either returns

    def script(messages):
        both_calls_started.wait()
        index = int(re.search(r"hello (\d+)", messages[-1]["content"]).group(1))
        prompt, completion = usage_for(index, "asst")
        return Step(text=f"ok {index}", prompt_tokens=prompt, completion_tokens=completion)

    assistant = ConversableAgent("asst", llm_config=scripted_llm_config(script), human_input_mode="NEVER")

    async def main():
        barrier = asyncio.Barrier(2)

        async def both_turns_started(recipient, messages=None, sender=None, config=None):
            await barrier.wait()
            return False, None  # not final: AG2 goes on to the model reply

        assistant.register_reply([Agent, None], both_turns_started, position=0)
        users = [ConversableAgent(f"user-{i}", llm_config=False, human_input_mode="NEVER") for i in range(2)]
        return await asyncio.gather(*(u.a_initiate_chat(assistant, message=f"hello {i}", max_turns=1, silent=True)
                                      for i, u in enumerate(users)))

    asyncio.run(main())

    spans = span_exporter.get_finished_spans()
    traces = defaultdict(list)
    for span in spans:
        traces[span.context.trace_id].append(span)
    assert len(traces) == 2
    for trace_spans in traces.values():
        assert span_tree(trace_spans) == [
            k.span_name(k.OP_WORKFLOW, "a_initiate_chat"), "  invoke_agent asst", "    chat scripted-model"]
        root = next(s for s in trace_spans if s.parent is None)
        index = int(attrs(root)[k.AG2_PARTICIPANTS][0].split("-")[1])
        llm = next(s for s in trace_spans if attrs(s).get(k.OPERATION_NAME) == k.OP_CHAT)
        assert (attrs(llm)[k.USAGE_INPUT_TOKENS], attrs(llm)[k.USAGE_OUTPUT_TOKENS]) == usage_for(index, "asst")
