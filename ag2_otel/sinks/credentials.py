"""Why an MLflow tracking server refused us, said so that the user can fix it: the HTTP status, which credential
MLflow's client sent, and which variables to set. Never a value: names only.

MLflow's client reads the credentials itself, per request (``mlflow.utils.credentials.get_default_host_creds``):
MLFLOW_TRACKING_USERNAME + MLFLOW_TRACKING_PASSWORD (or ``~/.mlflow/credentials``) as HTTP basic auth, else
MLFLOW_TRACKING_TOKEN as ``Authorization: Bearer``. We read nothing of it but which kind is set, and probe the server
with MLflow's own request helper and those same credentials.

Used by the store writer's error path (:func:`error_name`: one call, the string the application logs once) and by
``ag2-otel doctor`` (:func:`check`).
"""

from __future__ import annotations

import os

BASIC_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
TOKEN_VAR = "MLFLOW_TRACKING_TOKEN"
AUTH_STATUSES = (401, 403)
PROBE_ENDPOINT = "/version"  # behind the auth app like every route but /health and static files; no permission needed
_VERSION_UNKNOWN = "could not identify MLflow server version"  # MLflow's log_spans when its /version probe failed


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an MLflow exception stands for (MlflowException/RestException), else None."""
    status = getattr(exc, "get_http_status_code", None)
    try:
        return int(status()) if callable(status) else None
    except Exception:  # noqa: BLE001
        return None


def sent() -> str:
    """Which credential MLflow's client sends: ``"basic"``, ``"token"`` or ``"none"`` (basic wins when both are set,
    as in MLflow's ``http_request``)."""
    try:
        from mlflow.utils.credentials import read_mlflow_creds

        creds = read_mlflow_creds()  # the variables, else ~/.mlflow/credentials
        basic = bool(creds.username and creds.password)
    except Exception:  # noqa: BLE001 - an MLflow without it: the variables alone
        basic = all(os.environ.get(name) for name in BASIC_VARS)
    if basic:
        return "basic"
    return "token" if os.environ.get(TOKEN_VAR) else "none"


def probe(uri: str) -> int | None:
    """GET ``/version`` on ``uri`` with MLflow's credentials: 401/403 if the server refuses them, else None (accepted,
    no auth, or not reachable: someone else's finding)."""
    if not uri.lower().startswith(("http://", "https://")):
        return None
    try:
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request

        response = http_request(get_default_host_creds(uri), PROBE_ENDPOINT, "GET", max_retries=0, timeout=5,
                                raise_on_status=False)
    except Exception:  # noqa: BLE001
        return None
    return response.status_code if response.status_code in AUTH_STATUSES else None


def explain(status: int, uri: str) -> str:
    """One sentence: what the server said, what was sent, which variables to set (no values)."""
    from ag2_otel.config import _mask_url

    try:
        where = f"MLflow at {_mask_url(uri)}"
    except ValueError:
        where = "the MLflow tracking server"
    kind = sent()
    basic, token = " and ".join(BASIC_VARS), TOKEN_VAR
    if status == 403:
        names = basic if kind == "basic" else token
        return (f"{where} answered HTTP 403 (permission denied): the user of {names} may not write traces to this "
                f"experiment; grant it EDIT on the experiment (MLFLOW_EXPERIMENT_ID / MLFLOW_EXPERIMENT_NAME) or "
                f"use an experiment it created")
    if kind == "basic":
        return (f"{where} answered HTTP 401 (not authenticated): it refused the user and password in {basic} "
                f"(or ~/.mlflow/credentials); check both")
    if kind == "token":
        return (f"{where} answered HTTP 401 (not authenticated): it refused the bearer token in {token}; set a "
                f"valid one, or {basic} if the server takes basic auth (`mlflow server --app-name basic-auth` "
                f"takes only basic auth unless its authorization_function takes tokens)")
    return (f"{where} answered HTTP 401 (not authenticated) and no credentials are set: set {basic} (a user of "
            f"`mlflow server --app-name basic-auth`), or {token} where the server takes bearer tokens")


def error_name(exc: BaseException, uri: str | None) -> str:
    """What the writer reports for a failed write: the explanation for a 401/403 (also when MLflow hid it behind
    "log_spans is not supported: could not identify MLflow server version"), else the exception's type name."""
    status = http_status(exc)
    if status not in AUTH_STATUSES and uri and _VERSION_UNKNOWN in str(exc):
        status = probe(uri)
    if status in AUTH_STATUSES and uri:
        return explain(status, uri)
    return type(exc).__name__


def check(uri: str) -> str | None:
    """For ``ag2-otel doctor``: the explanation if ``uri`` refuses MLflow's credentials, else None."""
    status = probe(uri)
    return explain(status, uri) if status is not None else None
