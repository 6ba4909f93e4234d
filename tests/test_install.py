"""Installing ag2-otel where an AG2 classic user already is (issue #11): venvs built from scratch (cached under
``.venv-install-*``, see tests/venvs.py), ag2-otel run in subprocesses inside them.

- ``autogen==0.14.1`` + ``mlflow==3.1.4``: ``pip install ag2-otel`` (and ``ag2-otel[mlflow]``) adds no second
  ``autogen`` distribution, changes nothing already installed, leaves MLflow at 3.1.4; instrumented.
- ``autogen==0.14.1`` beside ``ag2==1.2.1`` (no shared files), no MLflow: the classic module is instrumented (the check
  is on the module, not a distribution name); ``autolog()`` says which MLflow extra to install or
  ``AG2_OTEL_MLFLOW=false``, and with that set traces.
- ``pyautogen==0.10.0`` (Microsoft's proxy): one warning naming what is installed and what is supported; ``autolog()``
  returns; ``opentelemetry-instrument`` runs the app.
- ``ag2[openai,tracing]==1.2.1`` + newest MLflow (issue #14): ``pip install ag2-otel`` leaves ag2 at 1.2.1 and changes
  nothing installed; the 1.x calculator with only ``ag2_otel.autolog()`` gives exact MLflow totals.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version

import pytest

from ag2_otel import package
from tests import venvs

pytestmark = pytest.mark.timeout(3600)  # a venv build downloads and installs on a busy 2-core box

AUTOGEN_NAMES = {"autogen", "ag2", "pyautogen"}
MLFLOW_NAMES = {"mlflow", "mlflow-skinny", "mlflow-tracing"}

PROBE = r"""
import json, logging, os, sys
records = []
class Collect(logging.Handler):
    def emit(self, record):
        records.append([record.levelname, record.name, record.getMessage()])
logging.getLogger().addHandler(Collect(level=logging.WARNING))

from importlib.metadata import distribution
from opentelemetry import trace
from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts
import ag2_otel

out = {}
conflict = get_dist_dependency_conflicts(distribution("ag2-otel"))  # what opentelemetry-instrument checks
out["dist_conflict"] = str(conflict) if conflict else None
for attempt in (1, 2):
    try:
        ag2_otel.autolog()
        out[f"autolog{attempt}"] = "returned"
    except Exception as exc:
        out[f"autolog{attempt}"] = f"{type(exc).__name__}: {exc}"
instrumentor = ag2_otel.Ag2Instrumentor()
instrumentor.instrument()
out["instrumented"] = instrumentor.is_instrumented_by_opentelemetry
out["global_provider"] = type(trace.get_tracer_provider()).__name__
out["warnings"] = records
print("RESULT " + json.dumps(out))
"""

CALCULATOR = r"""
import json, os
from typing import Annotated
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from autogen import ConversableAgent, register_function
import ag2_otel
from ag2_otel.scripted import ScriptedClient, Step, ToolCall, scripted_llm_config

out = {}
try:
    ag2_otel.autolog()
    out["default"] = "returned"
except ag2_otel.ConfigError as exc:
    out["default"] = "ConfigError: " + str(exc)

os.environ["AG2_OTEL_MLFLOW"] = "false"  # what the error says to do
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
ag2_otel.autolog(tracer_provider=provider)

assistant = ConversableAgent("assistant", llm_config=scripted_llm_config())
user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER",
                        is_termination_msg=lambda m: (m.get("content") or "").rstrip().endswith("TERMINATE"))
def calculator(a: int, b: int, operator: Annotated[str, "operator"]) -> int:
    return a - b
register_function(calculator, caller=assistant, executor=user, name="calculator", description="A simple calculator")
assistant.register_model_client(ScriptedClient, script=[
    Step(tool_calls=[ToolCall("calculator", {"a": 232, "b": 32, "operator": "-"})], prompt_tokens=120,
         completion_tokens=21),
    Step(text="200. TERMINATE", prompt_tokens=160, completion_tokens=9)])
user.initiate_chat(assistant, message="232 - 32?", max_turns=5)
spans = exporter.get_finished_spans()
out["spans"] = sorted(s.name for s in spans)
out["input_tokens"] = sum(s.attributes.get("gen_ai.usage.input_tokens", 0) for s in spans)
out["check"] = ag2_otel.package.check_ag2().message()
print("RESULT " + json.dumps(out))
"""

AG2X_CALCULATOR = r"""
import asyncio, json
import mlflow
import ag2_otel
from ag2 import Agent
from ag2_otel.demo import AG2X_QUESTION, AG2X_SCRIPT, scripted_openai_config

mlflow.set_experiment("install-ag2x")
ag2_otel.autolog()
def calculator(a: int, b: int, operator: str) -> int:
    '''A simple calculator'''
    return {"+": a + b, "-": a - b, "*": a * b, "/": int(a / b)}[operator]
agent = Agent("assistant", "You calculate.", config=scripted_openai_config(list(AG2X_SCRIPT)), tools=[calculator])
reply = asyncio.run(agent.ask(AG2X_QUESTION))
trace = mlflow.get_trace(mlflow.get_last_active_trace_id())
print("RESULT " + json.dumps({"body": reply.body, "usage": trace.info.token_usage,
                              "types": sorted({s.span_type for s in trace.data.spans}),
                              "request": trace.info.request_preview, "response": trace.info.response_preview}))
"""

ZERO_CODE = ("from ag2_otel import Ag2Instrumentor; "
             "print('app ran; instrumented:', Ag2Instrumentor().is_instrumented_by_opentelemetry)")


def _result(done) -> dict:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, f"no RESULT line\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(line[len("RESULT "):])


def _zero_code(venv) -> str:
    """``opentelemetry-instrument python -c ...`` (the loader runs its dependency check and loads our entry point)."""
    import subprocess

    done = subprocess.run([str(venv / "bin" / "opentelemetry-instrument"), venvs.python(venv), "-c", ZERO_CODE],
                          capture_output=True, text=True, timeout=600, cwd=venv,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(venvs.ROOT), "HOME": str(venv)})
    assert done.returncode == 0, done.stderr[-5000:]
    assert "Traceback" not in done.stderr, done.stderr[-5000:]
    return done.stdout


def _ours(warnings: list) -> list[str]:
    return [message for _level, name, message in warnings if name.startswith("ag2_otel")]


# --- no venv: the rules themselves --------------------------------------------------------------------------------
@pytest.mark.parametrize("module_version, supported", [
    ("0.9.0", True), ("0.9.1post0", True), ("0.9.10", True), ("0.14.1", True), ("0.15.0rc1", True),
    ("0.8.7", False), ("0.2.35", False), ("1.0.0", False), ("1.2.1", False), (None, False), ("not-a-version", False),
])
def test_supported_autogen_module_versions(module_version, supported):
    assert package.is_supported_version(module_version) is supported


def test_messages_name_what_is_installed_and_what_is_supported():
    missing = package.Ag2Support(module_version=None, module_found=False, distributions={"ag2": "1.2.1"})
    assert not missing.supported
    text = missing.message()
    assert "no `autogen` module" in text and "ag2 1.2.1 (AG2 1.x: a different framework" in text
    assert package.SUPPORTED_AUTOGEN in text and "pip install autogen" in text and "not traced" in text

    proxy = package.Ag2Support(module_version=None, module_found=False,
                               distributions={"pyautogen": "0.10.0", "autogen-agentchat": "0.7.5"})
    assert "pyautogen 0.10.0 (a proxy for Microsoft's autogen-agentchat, not AG2)" in proxy.message()
    assert "autogen-agentchat 0.7.5 (Microsoft's AutoGen 0.4+, not AG2)" in proxy.message()

    old = package.Ag2Support(module_version="0.8.7", module_found=True, distributions={"pyautogen": "0.8.7"})
    assert not old.supported and "`autogen` module is version 0.8.7" in old.message()
    assert "installed: none of autogen, ag2, pyautogen" in package.Ag2Support(None, False).message()


def test_this_venv_is_supported_by_the_module_check():
    support = package.check_ag2()
    assert support.supported, support.message()
    import autogen

    assert support.module_version == autogen.__version__


def test_instruments_any_matches_pyproject_and_passes_opentelemetrys_check_here():
    """pyproject's `instruments-any` is what opentelemetry-instrument reads; package.py mirrors it. With this venv's
    AG2 classic, opentelemetry-instrumentation's own check of those requirements finds no conflict."""
    import tomllib

    from opentelemetry.instrumentation.dependencies import get_dependency_conflicts

    extras = tomllib.loads((venvs.ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [r.replace(" ", "") for r in package._instruments_any] == extras["instruments-any"]
    assert extras["instruments"] == [] and package._instruments == ()
    assert get_dependency_conflicts([], extras["instruments-any"]) is None
    name = next(n for n in ("autogen", "ag2", "pyautogen") if n in package.check_ag2().distributions)
    conflict = get_dependency_conflicts([], [f"{name}>=1.0"])  # the same check refuses what is outside the range
    assert conflict is not None and f"{name} {version(name)}" in str(conflict)


def test_runtime_dependencies_hold_neither_ag2_nor_mlflow():
    import tomllib

    project = tomllib.loads((venvs.ROOT / "pyproject.toml").read_text())["project"]
    from packaging.requirements import Requirement

    names = {venvs.canonical(Requirement(r).name) for r in project["dependencies"]}
    assert not names & (AUTOGEN_NAMES | MLFLOW_NAMES), names
    dev = " ".join(project["optional-dependencies"]["dev"])
    assert "autogen>=0.9" in dev and "mlflow>=3.1" in dev  # the README's `pip install -e '.[dev]'` sets up all


# --- venvs from scratch ---------------------------------------------------------------------------------------------
def test_pip_install_beside_autogen_and_mlflow_3_1_adds_no_second_autogen():
    """The issue's done-when: a venv holding autogen==0.14.1 and mlflow==3.1.4 (SQLAlchemy<2.1: MLflow<3.6 does not
    import with 2.1), then `pip install <this repo>`."""
    base = venvs.ensure("install-autogen0.14.1-mlflow3.1.4", ["autogen==0.14.1", "mlflow==3.1.4", "sqlalchemy<2.1"])
    venvs.reset(base)
    built = venvs.base_set(base)
    assert built["autogen"] == "0.14.1" and built["mlflow"] == "3.1.4" and not built.keys() & {"ag2", "pyautogen"}

    for target in (str(venvs.ROOT), f"{venvs.ROOT}[mlflow]"):
        report = json.loads(venvs.pip(base, "install", "--dry-run", "--quiet", "--report", "-", target).stdout)
        to_install = {venvs.canonical(item["metadata"]["name"]): item["metadata"]["version"]
                      for item in report["install"]}
        assert "ag2-otel" in to_install, to_install
        assert not to_install.keys() & (AUTOGEN_NAMES | MLFLOW_NAMES), (target, to_install)
        assert not to_install.keys() & built.keys() - {"ag2-otel"}, (target, to_install)  # nothing re-versioned

    venvs.pip(base, "install", "-q", str(venvs.ROOT))
    after = venvs.installed(base)
    assert after["autogen"] == "0.14.1" and not after.keys() & {"ag2", "pyautogen"}
    assert after["mlflow"] == "3.1.4" and after["mlflow-skinny"] == "3.1.4"
    assert {n: (v, after.get(n)) for n, v in built.items() if after.get(n) != v} == {}

    result = _result(venvs.run(base, PROBE, env={"MLFLOW_TRACKING_URI": f"sqlite:///{base}/scratch/mlflow.db"}))
    assert result["dist_conflict"] is None
    assert result["autolog1"] == result["autolog2"] == "returned"
    assert result["instrumented"] is True
    assert _ours(result["warnings"]) == []


def test_classic_autogen_beside_ag2_1x_is_instrumented_and_mlflow_missing_says_which_extra():
    venv = venvs.ensure("install-autogen0.14.1-ag21.2.1", ["autogen==0.14.1", "ag2==1.2.1", venvs.REPO])
    have = venvs.installed(venv)
    assert have["autogen"] == "0.14.1" and have["ag2"] == "1.2.1" and not have.keys() & MLFLOW_NAMES

    result = _result(venvs.run(venv, CALCULATOR))
    assert result["default"].startswith("ConfigError: ")
    assert "pip install 'ag2-otel[mlflow]'" in result["default"] and "AG2_OTEL_MLFLOW=false" in result["default"]
    assert result["spans"] == sorted(["invoke_workflow initiate_chat", "invoke_agent assistant", "invoke_agent user",
                                      "invoke_agent assistant", "invoke_agent user", "chat scripted-model",
                                      "chat scripted-model", "execute_tool calculator"])
    assert result["input_tokens"] == 280
    assert "AG2 classic 0.14.1" in result["check"] and "ag2 1.2.1 (AG2 1.x" in result["check"]

    assert "app ran; instrumented: True" in _zero_code(venv)
    probe = _result(venvs.run(venv, PROBE, env={"AG2_OTEL_MLFLOW": "false"}))
    assert probe["dist_conflict"] is None and probe["instrumented"] is True


def test_pip_install_beside_ag2_1x_and_mlflow_keeps_ag2_and_traces_the_1x_calculator():
    """Issue #14's done-when: a venv holding ag2[openai,tracing]==1.2.1 and MLflow, then `pip install <this repo>`."""
    base = venvs.ensure("install-ag21.2.1-mlflow", ["ag2[openai,tracing]==1.2.1", "mlflow"])
    venvs.reset(base)
    built = venvs.base_set(base)
    assert built["ag2"] == "1.2.1" and not built.keys() & {"autogen", "pyautogen"}

    report = json.loads(venvs.pip(base, "install", "--dry-run", "--quiet", "--report", "-", str(venvs.ROOT)).stdout)
    to_install = {venvs.canonical(item["metadata"]["name"]): item["metadata"]["version"] for item in report["install"]}
    assert "ag2-otel" in to_install and not to_install.keys() & (AUTOGEN_NAMES | MLFLOW_NAMES), to_install
    assert not to_install.keys() & built.keys() - {"ag2-otel"}, to_install  # nothing re-versioned

    venvs.pip(base, "install", "-q", str(venvs.ROOT))
    after = venvs.installed(base)
    assert after["ag2"] == "1.2.1" and not after.keys() & {"autogen", "pyautogen"}
    assert {n: (v, after.get(n)) for n, v in built.items() if after.get(n) != v} == {}

    probe = _result(venvs.run(base, PROBE, env={"MLFLOW_TRACKING_URI": f"sqlite:///{base}/scratch/probe.db"}))
    assert probe["dist_conflict"] is None and probe["instrumented"] is True and _ours(probe["warnings"]) == []
    result = _result(venvs.run(base, AG2X_CALCULATOR,
                               env={"MLFLOW_TRACKING_URI": f"sqlite:///{base}/scratch/mlflow.db"}))
    assert result["usage"] == {"input_tokens": 1120, "output_tokens": 120, "total_tokens": 1240,
                               "cache_read_input_tokens": 128}
    assert result["types"] == ["AGENT", "CHAT_MODEL", "LLM", "TOOL"]
    assert result["request"] == "What is (44232 + 13312 / (232 - 32)) * 5?"
    assert result["response"] == result["body"] == "(44232 + 13312 / (232 - 32)) * 5 = 221490."
    assert "app ran; instrumented: True" in _zero_code(base)


@pytest.mark.parametrize("tag, requirements, named", [
    ("install-pyautogen0.10.0", ["pyautogen==0.10.0"], "pyautogen 0.10.0 (a proxy for Microsoft's autogen-agentchat"),
])
def test_no_ag2_classic_one_warning_and_the_app_runs(tag, requirements, named):
    venv = venvs.ensure(tag, [*requirements, venvs.REPO])
    result = _result(venvs.run(venv, PROBE))
    assert result["autolog1"] == result["autolog2"] == "returned"  # not the AttributeError of issue #11
    assert result["instrumented"] is False
    assert result["global_provider"] == "ProxyTracerProvider"  # untraced: nothing of ours set up
    ours = _ours(result["warnings"])
    assert len(ours) == 1, result["warnings"]
    assert "no `autogen` module" in ours[0] and named in ours[0] and package.SUPPORTED_AUTOGEN in ours[0]
    assert result["dist_conflict"] is not None  # opentelemetry-instrument skips us by metadata alone
    assert "app ran; instrumented: False" in _zero_code(venv)


if __name__ == "__main__":  # pragma: no cover - build the venvs ahead of a run
    sys.exit(pytest.main([__file__, "-q"]))
