"""``ag2-otel doctor``: every variable that is set (secrets masked), who reads it, what is wrong with it, including what
the OpenTelemetry SDK itself says about the variables it reads, and whether the endpoints answer.

Exit status: 2 when ``autolog()`` would refuse a value (each is printed to stderr, as a ConfigError would say it),
1 when something else needs fixing (an endpoint that does not answer, a value the SDK replaces by its default, ...),
0 when all is well.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import urllib.error
import urllib.request
from typing import TextIO
from urllib.parse import urlsplit

from .config import ENV_VARS, MASK, ConfigError, _header_names, _mask_url, build_otlp_span_exporter, load_settings

_SECRET_WORDS = ("TOKEN", "PASSWORD", "SECRET", "KEY")


def _tcp_reachable(url: str, timeout: float = 3.0) -> str | None:
    """None if something listens at the URL's host:port, else why not."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{parts.hostname}:{port} does not answer ({exc.strerror or type(exc).__name__})"


def _shown(name: str, value: str) -> str:
    """A variable's value as it may be printed: header values, tokens and passwords in URLs masked."""
    if "HEADERS" in name:
        try:
            return ",".join(f"{header}={MASK}" for header in _header_names(value, name)) or "(empty)"
        except ConfigError:
            return "(not valid; value hidden)"
    if any(word in name for word in _SECRET_WORDS):
        return MASK
    try:
        return _mask_url(value) if "@" in value else value
    except ValueError:
        return "(value hidden)"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _what_the_sdk_says(settings, build_exporter: bool, bsp_refused: bool) -> list[str]:
    """Build what the SDK builds from the environment (sampler and resource, batch span processor, the OTLP exporter),
    export nothing, and report what the SDK logs about it or raises."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    class _Nowhere(SpanExporter):
        def export(self, spans):  # noqa: ANN001, ANN201 - never called: nothing is exported
            raise AssertionError("doctor exports nothing")

    steps = [("the sampler or resource", lambda: TracerProvider(shutdown_on_exit=False)),
             ("OTEL_BSP_*", lambda: BatchSpanProcessor(_Nowhere()).shutdown())]
    if build_exporter:  # only once our checks pass: the SDK would raise, or log a header value, on what they refuse
        steps.append(("the OTLP exporter", lambda: build_otlp_span_exporter(settings).shutdown()))
    found: list[str] = []
    handler = _Records()
    sdk_logger = logging.getLogger("opentelemetry")
    saved = sdk_logger.propagate, sdk_logger.level
    sdk_logger.addHandler(handler)
    sdk_logger.propagate, sdk_logger.level = False, logging.WARNING
    try:
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - what the SDK raises is the finding
                if not (what == "OTEL_BSP_*" and bsp_refused):  # already named, with the variable, above
                    found.append(f"the OpenTelemetry SDK raises building {what}: {type(exc).__name__}: {exc}")
    finally:
        sdk_logger.removeHandler(handler)
        sdk_logger.propagate, sdk_logger.level = saved
    for record in handler.records:
        if record.name == "opentelemetry.util.re":  # its header messages repeat the header, secret included
            found.append("the OpenTelemetry SDK cannot parse an OTLP header (value hidden); it drops the header")
        else:
            found.append(f"the OpenTelemetry SDK says: {record.getMessage()} (it goes on with its default)")

    sampler = (os.environ.get("OTEL_TRACES_SAMPLER") or "").strip()
    if sampler and any("sampler" in f and sampler.lower() in f for f in found):
        from importlib.metadata import entry_points

        if any(ep.name == sampler for ep in entry_points(group="opentelemetry_traces_sampler")):
            found.append(f"OTEL_TRACES_SAMPLER={sampler!r} is an entry-point sampler: opentelemetry-instrument loads "
                         f"it, the TracerProvider that autolog() creates does not")
    if not sampler and (os.environ.get("OTEL_TRACES_SAMPLER_ARG") or "").strip():
        found.append("OTEL_TRACES_SAMPLER_ARG is set but OTEL_TRACES_SAMPLER is not; the SDK ignores the argument")
    return found


def run(out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    refused: list[str] = []  # what autolog() would raise ConfigError for
    settings = load_settings(otlp_exporter=True, problems=refused)
    problems = list(settings.warnings)
    out.write("ag2-otel configuration (secrets masked)\n")
    for key, value in settings.masked().items():
        out.write(f"  {key:<28} {value}\n")

    out.write("\nvariables set (read by)\n")
    known = {var.name: var for var in ENV_VARS}
    for name, value in sorted(os.environ.items()):
        if name in known:
            out.write(f"  {name:<40} {_shown(name, value)}  ({known[name].read_by})\n")
        elif name.startswith("AG2_OTEL_"):
            out.write(f"  {name:<40} (not an ag2-otel variable)\n")
            problems.append(f"{name} is not a variable ag2-otel reads (see the table in README.md); a typo?")
        elif name.startswith("OTEL_"):
            out.write(f"  {name:<40} (set; read by the SDK or another library, not checked here)\n")

    exporter_refused = any("OTEL_EXPORTER_OTLP_" in r or "OTEL_BSP_" in r for r in refused)
    problems += _what_the_sdk_says(settings, build_exporter=not exporter_refused,
                                   bsp_refused=any("OTEL_BSP_" in r for r in refused))
    try:
        import mlflow

        uri = mlflow.get_tracking_uri()
    except ImportError:  # an extra: autolog() refuses to start the MLflow sink without it
        uri = os.environ.get("MLFLOW_TRACKING_URI", "(MLflow not installed)")
        if settings.mlflow_enabled:
            from .autolog import MLFLOW_MISSING

            refused.append(MLFLOW_MISSING.removeprefix("ag2-otel: "))
    shown = _mask_url(uri)  # user:password@ in a tracking URI is a secret
    out.write(f"\n  {'mlflow tracking uri':<28} {shown}\n")
    if settings.mlflow_enabled and uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).read()
        except (urllib.error.URLError, OSError) as exc:
            # the exception text can repeat the URL: report its type and reason only
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
            problems.append(f"MLflow tracking server {shown} does not answer /health ({_mask_url(str(reason))}); "
                            f"start it (mlflow server ...) or fix MLFLOW_TRACKING_URI")
        else:  # it answers: does it take the credentials MLflow's client sends (names the variable, not the value)
            from .sinks.credentials import check

            if refused_credentials := check(uri):
                problems.append(refused_credentials)
    elif settings.mlflow_enabled and uri.startswith("databricks"):
        if not settings.databricks_host:
            problems.append("MLFLOW_TRACKING_URI is databricks but DATABRICKS_HOST is not set (or use a profile)")
        if not settings.databricks_token_set:
            problems.append("DATABRICKS_TOKEN is not set (or use databricks://PROFILE with a config profile)")
    if settings.otlp_enabled and not any("ENDPOINT" in r for r in refused):
        reason = _tcp_reachable(settings.otlp_endpoint)
        if reason:
            problems.append(f"OTLP endpoint {settings.otlp_endpoint}: {reason}; start the collector "
                            f"(docker compose up otel-collector) or fix OTEL_EXPORTER_OTLP_ENDPOINT")

    for message in refused:
        err.write(f"ag2-otel: configuration error: {message}\n")
    if refused or problems:
        out.write("\nTo fix:\n" + "".join(f"  - {p}\n" for p in refused + problems))
        return 2 if refused else 1
    out.write("\nAll endpoints answer.\n")
    return 0
