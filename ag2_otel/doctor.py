"""``ag2-otel doctor``: the configuration as ag2-otel resolves it, secrets masked, and whether its endpoints answer."""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request
from typing import TextIO
from urllib.parse import urlsplit

from .config import _mask_url, load_settings


def _tcp_reachable(url: str, timeout: float = 3.0) -> str | None:
    """None if something listens at the URL's host:port, else why not."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{parts.hostname}:{port} does not answer ({exc.strerror or type(exc).__name__})"


def run(out: TextIO = sys.stdout) -> int:
    import mlflow

    settings = load_settings()
    problems: list[str] = []
    out.write("ag2-otel configuration (secrets masked)\n")
    for key, value in settings.masked().items():
        out.write(f"  {key:<28} {value}\n")
    for warning in settings.warnings:
        problems.append(warning)
    uri = mlflow.get_tracking_uri()
    shown = _mask_url(uri)  # user:password@ in a tracking URI is a secret
    out.write(f"  {'mlflow tracking uri':<28} {shown}\n")
    if settings.mlflow_enabled and uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).read()
        except (urllib.error.URLError, OSError) as exc:
            # the exception text can repeat the URL: report its type and reason only
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
            problems.append(f"MLflow tracking server {shown} does not answer /health ({_mask_url(str(reason))}); "
                            f"start it (mlflow server ...) or fix MLFLOW_TRACKING_URI")
    elif settings.mlflow_enabled and uri.startswith("databricks"):
        if not settings.databricks_host:
            problems.append("MLFLOW_TRACKING_URI is databricks but DATABRICKS_HOST is not set (or use a profile)")
        if not settings.databricks_token_set:
            problems.append("DATABRICKS_TOKEN is not set (or use databricks://PROFILE with a config profile)")
    if settings.otlp_enabled:
        reason = _tcp_reachable(settings.otlp_endpoint)
        if reason:
            problems.append(f"OTLP endpoint {settings.otlp_endpoint}: {reason}; start the collector "
                            f"(docker compose up otel-collector) or fix OTEL_EXPORTER_OTLP_ENDPOINT")
    if problems:
        out.write("\nTo fix:\n" + "".join(f"  - {p}\n" for p in problems))
        return 1
    out.write("\nAll endpoints answer.\n")
    return 0
