"""Auth against a real auth-enabled ``mlflow server --app-name basic-auth`` (its extra dependency, Flask-WTF, is in the
test extra), with MLflow's own client-side credentials: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (HTTP
basic) and MLFLOW_TRACKING_TOKEN (``Authorization: Bearer``).

The server's ``authorization_function`` is tests/mlflow_auth.py's: MLflow's stock basic-auth check, plus one bearer
token (MLflow's stock function answers any Bearer header with 401, shown below; a deployment that takes tokens
plugs in its own function, as here, or puts a proxy in front).

The application runs in a subprocess, as a user's would, so the store writer process it starts gets exactly the
environment the application has when ``autolog()`` starts it. Every run uses distinctive secrets and the test asserts
they appear nowhere in the application's output (its log and the writer's, AG2_OTEL_DEBUG_WRITER=1 shows that on
the application's stderr), nor in the stored traces.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import textwrap
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ag2_otel.mapping import mlflow_trace as m
from tests.collector import wait_until
from tests.servers import MlflowServer
from tests.test_zero_code_mlflow import CHAT, SPANS, TOTALS, assert_sqlite_trace, clean_env, run_app

try:
    import flask_wtf  # noqa: F401 - mlflow[auth]'s extra dependency (ag2-otel's test extra)
except ImportError:
    if os.environ.get("CI"):  # CI installs the test extra: a skip there would hide a missing install step
        raise
    pytest.skip("mlflow[auth] needs Flask-WTF (ag2-otel's test extra)", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
ADMIN, ADMIN_PASSWORD = "admin", "Adm1n-pw-Q7xZ-4f9Kq2"
USER, PASSWORD = "writer", "Wr1ter-pw-ZZ93-kq81Lm"  # the application's credentials
WRONG_PASSWORD = "Wr0ng-pw-XX11-distinct"
TOKEN = "tok-9Fq2-Lm81-distinctive-bearer"
FLASK_KEY = "flask-key-3Hh8-distinct"  # the auth app's CSRF key (MLFLOW_FLASK_SERVER_SECRET_KEY), server side only
SECRETS = (ADMIN_PASSWORD, PASSWORD, WRONG_PASSWORD, TOKEN, FLASK_KEY)
BASIC_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def _request(url: str, path: str, *, user: str | None = None, password: str | None = None, body: dict | None = None,
             bearer: str | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """An auth-enabled mlflow server: admin from its ini, a non-admin user ``writer``, default permission READ."""
    root = tmp_path_factory.mktemp("mlflow_auth")
    ini = root / "basic_auth.ini"
    ini.write_text(textwrap.dedent(f"""
        [mlflow]
        default_permission = READ
        database_uri = sqlite:///{root / 'basic_auth.db'}
        admin_username = {ADMIN}
        admin_password = {ADMIN_PASSWORD}
        authorization_function = tests.mlflow_auth:basic_or_bearer
    """))
    server = MlflowServer(root, app_name="basic-auth", env={
        "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": FLASK_KEY,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        "AG2_OTEL_TEST_BEARER_TOKEN": TOKEN, "AG2_OTEL_TEST_BEARER_USER": USER,
    })
    url = server.start()
    try:
        status, text = _request(url, "/api/2.0/mlflow/users/create", user=ADMIN, password=ADMIN_PASSWORD,
                                body={"username": USER, "password": PASSWORD})
        assert status == 200, text
        yield url
    finally:
        server.stop()


def _admin_client(url: str, monkeypatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    return MlflowClient(tracking_uri=url)


def _run(tmp_path: Path, app: str, **env: str):
    (tmp_path / "app.py").write_text(app)
    run = run_app([sys.executable, "app.py"], clean_env(tmp_path, AG2_OTEL_DEBUG_WRITER="1", **env), tmp_path)
    for secret in SECRETS:
        assert secret not in run.stdout and secret not in run.stderr, f"a secret in the application's output"
    return run


def _traces(url: str, experiment_name: str, monkeypatch) -> list:
    client = _admin_client(url, monkeypatch)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    traces = [client.get_trace(t.info.trace_id)
              for t in client.search_traces(locations=[experiment.experiment_id])]
    for trace in traces:
        text = json.dumps([trace.info.to_dict(), [s.to_dict() for s in trace.data.spans]], default=str)
        assert not any(secret in text for secret in SECRETS), "a secret in a stored trace"
    return traces


def _stored(url: str, experiment_name: str, monkeypatch):
    """The experiment's one trace once all its spans are stored: the writer process finishes what it received after
    the application exits (within AG2_OTEL_EXIT_FLUSH_TIMEOUT the application waits; a loaded box can take longer)."""
    def complete():
        traces = _traces(url, experiment_name, monkeypatch)
        return traces if len(traces) == 1 and len(traces[0].data.spans) == SPANS else None

    return wait_until(complete, 90, f"the trace in experiment {experiment_name}", poll_s=0.5)


def _auth_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "ag2_otel: " in line and "HTTP 40" in line]


APP = "import ag2_otel\nag2_otel.autolog()\n" + textwrap.dedent(CHAT)
# the application's own log at DEBUG for ag2_otel (what caplog would see in-process), on its stderr
DEBUG_LOG = "import logging, sys\nlogging.basicConfig(stream=sys.stderr)\nlogging.getLogger('ag2_otel').setLevel(10)\n"
APP_SETS_CREDENTIALS = textwrap.dedent("""
    import os, sys
    import ag2_otel  # imported first: the credentials come after, in code, before autolog()

    names = sys.argv[1:]
    values = open("credentials.txt").read().split("\\n")
    for name, value in zip(names, values):
        os.environ[name] = value
    ag2_otel.autolog()
""") + textwrap.dedent(CHAT)


def test_right_password_stores_the_trace(auth_server, tmp_path, monkeypatch):
    name = f"auth-{uuid.uuid4().hex[:8]}"
    run = _run(tmp_path, APP, MLFLOW_TRACKING_URI=auth_server, MLFLOW_EXPERIMENT_NAME=name,
               MLFLOW_TRACKING_USERNAME=USER, MLFLOW_TRACKING_PASSWORD=PASSWORD)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "ag2_otel:" not in run.stderr.replace("ag2_otel.store_writer", ""), run.stderr[-4000:]
    (trace,) = _stored(auth_server, name, monkeypatch)
    assert_sqlite_trace(trace)


def test_wrong_password_one_warning_naming_the_variables_app_unaffected(auth_server, tmp_path, monkeypatch):
    name = f"auth-{uuid.uuid4().hex[:8]}"
    app = DEBUG_LOG + APP + "user.initiate_chat(assistant, message='again', max_turns=10)\nprint('SECOND_DONE')\n"
    run = _run(tmp_path, app, MLFLOW_TRACKING_URI=auth_server, MLFLOW_EXPERIMENT_NAME=name,
               MLFLOW_TRACKING_USERNAME=USER, MLFLOW_TRACKING_PASSWORD=WRONG_PASSWORD)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "CHAT_DONE" in run.stdout and "SECOND_DONE" in run.stdout  # the application is unaffected
    warnings = _auth_warnings(run.stderr)
    assert len(warnings) == 1, run.stderr[-4000:]  # two conversations, two failed writes: one warning
    (warning,) = warnings
    assert "HTTP 401" in warning and all(v in warning for v in BASIC_VARS), warning
    assert "not supported" not in run.stderr and "NotImplementedError" not in run.stderr, run.stderr[-4000:]
    assert _traces(auth_server, name, monkeypatch) == []


def test_no_credentials_names_the_variables(auth_server, tmp_path, monkeypatch):
    run = _run(tmp_path, APP, MLFLOW_TRACKING_URI=auth_server, MLFLOW_EXPERIMENT_NAME=f"auth-{uuid.uuid4().hex[:8]}")
    assert run.returncode == 0, run.stderr[-4000:]
    (warning,) = _auth_warnings(run.stderr)
    assert "HTTP 401" in warning and "no credentials" in warning, warning
    assert all(v in warning for v in (*BASIC_VARS, "MLFLOW_TRACKING_TOKEN")), warning


def test_read_only_user_gets_403_naming_the_permission(auth_server, tmp_path, monkeypatch):
    experiment_id = _admin_client(auth_server, monkeypatch).create_experiment(f"admins-{uuid.uuid4().hex[:8]}")
    run = _run(tmp_path, APP, MLFLOW_TRACKING_URI=auth_server, MLFLOW_EXPERIMENT_ID=experiment_id,
               MLFLOW_TRACKING_USERNAME=USER, MLFLOW_TRACKING_PASSWORD=PASSWORD)
    assert run.returncode == 0, run.stderr[-4000:]
    (warning,) = _auth_warnings(run.stderr)
    assert "HTTP 403" in warning and "MLFLOW_TRACKING_USERNAME" in warning and "permission" in warning, warning


@pytest.mark.parametrize("names", [BASIC_VARS, ("MLFLOW_TRACKING_TOKEN",)], ids=["basic", "token"])
def test_credentials_set_in_code_after_import_before_autolog(auth_server, tmp_path, monkeypatch, names):
    name = f"auth-{uuid.uuid4().hex[:8]}"
    values = (USER, PASSWORD) if len(names) == 2 else (TOKEN,)
    (tmp_path / "credentials.txt").write_text("\n".join(values))
    (tmp_path / "app.py").write_text(APP_SETS_CREDENTIALS)
    run = run_app([sys.executable, "app.py", *names],
                  clean_env(tmp_path, MLFLOW_TRACKING_URI=auth_server, MLFLOW_EXPERIMENT_NAME=name,
                            AG2_OTEL_DEBUG_WRITER="1"), tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    assert not any(secret in run.stderr + run.stdout for secret in SECRETS)
    assert _auth_warnings(run.stderr) == [], run.stderr[-4000:]
    (trace,) = _stored(auth_server, name, monkeypatch)
    assert trace.info.token_usage == TOTALS and len(trace.data.spans) == SPANS
    assert m.TAG_INCOMPLETE not in trace.info.tags


def test_bearer_token_reaches_the_server(auth_server):
    """What the server does with a bearer header: MLflow's stock basic-auth function refuses it (401), the configured
    function accepts the right token and refuses a wrong one: the header arrives as MLflow's client sends it."""
    from mlflow.server.auth import authenticate_request_basic_auth  # noqa: F401 - the stock function exists

    assert _request(auth_server, "/api/2.0/mlflow/experiments/search?max_results=1", bearer=TOKEN)[0] == 200
    assert _request(auth_server, "/api/2.0/mlflow/experiments/search?max_results=1", bearer="nope")[0] == 401


def test_wrong_token_names_the_token_variable(auth_server, tmp_path):
    run = _run(tmp_path, DEBUG_LOG + APP, MLFLOW_TRACKING_URI=auth_server, MLFLOW_EXPERIMENT_NAME=f"auth-{uuid.uuid4().hex[:8]}",
               MLFLOW_TRACKING_TOKEN="tok-wrong-" + WRONG_PASSWORD)
    assert run.returncode == 0, run.stderr[-4000:]
    (warning,) = _auth_warnings(run.stderr)
    assert "HTTP 401" in warning and "MLFLOW_TRACKING_TOKEN" in warning, warning


@pytest.mark.parametrize("password", [WRONG_PASSWORD, PASSWORD], ids=["wrong", "right"])
def test_doctor_checks_the_credentials(auth_server, tmp_path, password):
    import subprocess

    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=auth_server, MLFLOW_TRACKING_USERNAME=USER,
                    MLFLOW_TRACKING_PASSWORD=password)
    done = subprocess.run([sys.executable, "-m", "ag2_otel.cli", "doctor"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert not any(secret in output for secret in SECRETS), "a secret in doctor's output"
    assert "MLFLOW_TRACKING_PASSWORD" in output  # listed among the variables set, value masked
    refused = [line for line in output.splitlines() if "HTTP 401" in line]
    if password == WRONG_PASSWORD:
        assert done.returncode == 1, output
        assert len(refused) == 1 and all(v in refused[0] for v in BASIC_VARS), output
    else:
        assert refused == [] and done.returncode == 0, output


def test_the_401_mlflow_hides_behind_not_supported_is_explained(auth_server, monkeypatch, caplog):
    """MLflow's log_spans asks /version first and, on any failure (a 401 included), raises NotImplementedError("log_spans
    is not supported: could not identify MLflow server version"). credentials.error_name probes with MLflow's own
    credentials and names the cause."""
    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.utils.credentials import get_default_host_creds

    from ag2_otel.sinks.credentials import error_name

    hidden = NotImplementedError("log_spans is not supported: could not identify MLflow server version")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", WRONG_PASSWORD)
    assert RestStore._get_server_version(get_default_host_creds(auth_server)) is None  # what MLflow sees: no version
    explained = error_name(hidden, auth_server)
    assert "HTTP 401" in explained and all(v in explained for v in BASIC_VARS), explained
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    assert error_name(hidden, auth_server) == "NotImplementedError"  # accepted: not an auth problem
    assert not any(secret in caplog.text + explained for secret in SECRETS)
