"""An ``authorization_function`` for ``mlflow server --app-name basic-auth`` (tests/test_auth.py): MLflow's own basic
auth, plus bearer tokens. MLflow's stock function reads only ``Authorization: Basic``; a ``Bearer`` header (what the
MLflow client sends for MLFLOW_TRACKING_TOKEN) gets a 401 there. MLflow's auth app takes any function named in its
ini (``authorization_function = module:function``, MLflow's documented way to plug in e.g. JWT); this one accepts
the one token in AG2_OTEL_TEST_BEARER_TOKEN as the admin user.
"""

from __future__ import annotations

import hmac
import os

from flask import request
from werkzeug.datastructures import Authorization

from mlflow.server.auth import authenticate_request_basic_auth, make_basic_auth_response


def basic_or_bearer():
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        expected = os.environ.get("AG2_OTEL_TEST_BEARER_TOKEN", "")
        if expected and hmac.compare_digest(header[len("Bearer "):], expected):
            return Authorization("basic", {"username": os.environ["AG2_OTEL_TEST_BEARER_USER"]})
        return make_basic_auth_response()
    return authenticate_request_basic_auth()
