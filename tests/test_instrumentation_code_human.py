"""Code execution and human input spans, with a real local code executor and AG2's own IOStream for the human."""

from __future__ import annotations

import json

from opentelemetry.trace import StatusCode

from ag2_otel import semconv as k
from ag2_otel.scripted import Step
from tests.scripted_llm import scripted_llm_config
from tests.helpers import by_name, parent_of, span_tree


class ScriptedHuman:
    """An AG2 IOStream whose input() answers from a list (AG2's own hook for human input)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.prompts = []

    def print(self, *objects, sep=" ", end="\n", flush=False):
        pass

    def send(self, message):
        pass

    def input(self, prompt="", *, password=False):
        self.prompts.append(prompt)
        return self.answers.pop(0)


def test_code_execution_is_a_tool_span(instrument, span_exporter, tmp_path):
    from autogen import ConversableAgent
    from autogen.coding import LocalCommandLineCodeExecutor

    instrument(capture_content=True)
    coder = ConversableAgent("coder", llm_config=scripted_llm_config([
        Step(text="```python\nprint(6 * 7)\n```", prompt_tokens=40, completion_tokens=9),
        Step(text="```python\nraise SystemExit(3)\n```", prompt_tokens=50, completion_tokens=9)]), human_input_mode="NEVER")
    runner = ConversableAgent("runner", llm_config=False, human_input_mode="NEVER",
                              code_execution_config={"executor": LocalCommandLineCodeExecutor(work_dir=tmp_path)})
    runner.initiate_chat(coder, message="compute", max_turns=3)

    spans = span_exporter.get_finished_spans()
    code = by_name(spans, "execute_tool execute_code")
    assert len(code) == 2
    assert parent_of(spans, code[0]).name == "invoke_agent runner"
    ok, failed = code
    assert ok.attributes[k.TOOL_TYPE] == "extension"
    assert list(ok.attributes[k.AG2_CODE_LANGUAGE]) == ["python"]
    assert ok.attributes[k.AG2_CODE_EXIT_CODE] == 0
    assert "42" in ok.attributes[k.AG2_CODE_OUTPUT]
    assert json.loads(ok.attributes[k.AG2_CODE_BLOCKS])[0]["code"].strip() == "print(6 * 7)"
    assert ok.status.status_code is StatusCode.UNSET
    assert failed.attributes[k.AG2_CODE_EXIT_CODE] == 3
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes[k.ERROR_TYPE] == "CodeExecutionError"


def test_human_input_span_records_prompt_and_reply_only_with_content(instrument, span_exporter):
    from autogen import ConversableAgent
    from autogen.io import IOStream

    instrument(capture_content=True)
    assistant = ConversableAgent("assistant", llm_config=scripted_llm_config([
        Step(text="What colour?", prompt_tokens=7, completion_tokens=3)]), human_input_mode="NEVER")
    human = ConversableAgent("human", llm_config=False, human_input_mode="ALWAYS")
    stream = ScriptedHuman(["blue, SECRET-ANSWER", "exit"])
    with IOStream.set_default(stream):
        human.initiate_chat(assistant, message="hello", max_turns=2)

    spans = span_exporter.get_finished_spans()
    waits = by_name(spans, k.HUMAN_INPUT_SPAN)
    assert len(waits) == len(stream.prompts) >= 1
    first = waits[0]
    assert parent_of(spans, first).name == "invoke_agent human"
    assert first.attributes[k.AGENT_NAME] == "human"
    assert first.attributes[k.AG2_HUMAN_REPLY] == "blue, SECRET-ANSWER"
    assert first.attributes[k.AG2_HUMAN_PROMPT] == stream.prompts[0]
    assert span_tree(spans)[0] == "invoke_workflow initiate_chat"


def test_human_input_without_content_records_no_text(instrument, span_exporter):
    from autogen import ConversableAgent
    from autogen.io import IOStream

    instrument(capture_content=False)
    assistant = ConversableAgent("assistant", llm_config=scripted_llm_config([Step(text="What colour?")]),
                                 human_input_mode="NEVER")
    human = ConversableAgent("human", llm_config=False, human_input_mode="ALWAYS")
    with IOStream.set_default(ScriptedHuman(["blue, SECRET-ANSWER", "exit"])):
        human.initiate_chat(assistant, message="hello", max_turns=2)
    spans = span_exporter.get_finished_spans()
    assert by_name(spans, k.HUMAN_INPUT_SPAN)
    dump = json.dumps([dict(s.attributes) for s in spans], default=str)
    assert "SECRET-ANSWER" not in dump
