"""AG2 classic (``autogen``) and AG2 1.x (``ag2``) installed side by side (they share no files): one
``ag2_otel.autolog()`` traces both, each conversation its own MLflow trace with exact totals.

Runs in a venv with ``autogen`` 0.14 and ``ag2[openai,tracing]`` 1.x (CI: .venv-ag2x-both); skipped elsewhere.
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("ag2.middleware.builtin.telemetry",
                    reason="AG2 1.x with its tracing extra is not installed (pip install 'ag2[openai,tracing]==1.2.1')")
pytest.importorskip("autogen", reason="AG2 classic (the autogen module) is not installed beside AG2 1.x")

import mlflow  # noqa: E402

import ag2_otel  # noqa: E402
from ag2_otel import package  # noqa: E402
from tests import ag2x_helpers as h  # noqa: E402
from tests import test_seed as seed  # noqa: E402


@pytest.fixture
def provider(tmp_path):
    previous = h.use_local_store(tmp_path)
    yield h.memory_provider()
    ag2_otel.autolog(disable=True)
    mlflow.set_tracking_uri(previous)


def test_both_frameworks_are_checked_supported():
    assert package.check_ag2().supported, package.check_ag2().message()
    assert package.ag2x_version() is not None


def test_classic_and_ag2x_in_one_process_both_traced_exactly(provider):
    ag2_otel.autolog(tracer_provider=provider)  # must not raise (it did: AttributeError 'conversation_hook')

    user_proxy, assistant = seed.calculator_agents()
    user_proxy.initiate_chat(assistant, message=seed.SEED_QUESTION, max_turns=10)
    classic = mlflow.get_trace(mlflow.get_last_active_trace_id())
    assert classic.info.token_usage == seed.TOTAL
    assert h.token_usages(classic) == seed.PER_CALL
    assert next(s for s in classic.data.spans if s.parent_id is None).name == "invoke_workflow initiate_chat"

    reply = asyncio.run(h.calculator_agent().ask(h.QUESTION))
    assert reply.body == h.ANSWER
    ag2x = mlflow.get_trace(mlflow.get_last_active_trace_id())
    assert ag2x.info.trace_id != classic.info.trace_id
    assert ag2x.info.token_usage == h.TOTAL and h.token_usages(ag2x) == h.PER_CALL
    assert next(s for s in ag2x.data.spans if s.parent_id is None).name == "invoke_agent assistant"
    assert ag2x.info.request_preview == h.QUESTION and ag2x.info.response_preview == h.ANSWER
    assert len({s.context.trace_id for s in provider.exporter.get_finished_spans()}) == 2
