"""Configuration from the environment: standard OTEL_* names first, AG2_OTEL_* only where no standard exists.

Each part reads only what it uses (the "Read by" column of :data:`ENV_VARS`):

- ``Ag2Instrumentor().instrument()`` reads the content mode, AG2_OTEL_MAX_CONTENT_CHARS and AG2_OTEL_MAX_MESSAGES,
  nothing else; a bad value is a warning and the default (:func:`content_capture`, :func:`instrumentation_limits`).
- ``autolog()`` builds the provider and exporters. :func:`load_settings` refuses a bad value of a variable autolog
  decides on (:class:`ConfigError` naming the variable, the value and the accepted values), and
  :func:`build_otlp_span_exporter` one the SDK's OTLP exporter or batch processor would raise on, misuse silently, or
  log with its secret. What the SDK itself reports clearly and falls back on (an unknown sampler, a bad sampler
  argument, a BSP value that is not an integer, http/protobuf compression or timeout) is left to the SDK.
- ``ag2-otel doctor`` reports all of it, and what the SDK says about the rest (ag2_otel/doctor.py).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

_logger = logging.getLogger(__name__)

MASK = "***"


class ConfigError(ValueError):
    """A configuration value is not usable; the message says which variable and how to fix it."""


CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


class ContentCapture(enum.Enum):
    NO_CONTENT = "NO_CONTENT"
    SPAN_ONLY = "SPAN_ONLY"
    EVENT_ONLY = "EVENT_ONLY"
    SPAN_AND_EVENT = "SPAN_AND_EVENT"

    @property
    def on_spans(self) -> bool:
        return self in (ContentCapture.SPAN_ONLY, ContentCapture.SPAN_AND_EVENT)

    @property
    def on_events(self) -> bool:
        return self in (ContentCapture.EVENT_ONLY, ContentCapture.SPAN_AND_EVENT)

    @property
    def enabled(self) -> bool:
        return self is not ContentCapture.NO_CONTENT


# --- The one table of variables (README.md's table is generated from it: python -m ag2_otel.config) -------------------
class EnvVar(NamedTuple):
    name: str
    meaning: str
    default: str
    standard: bool  # True: an OpenTelemetry or MLflow standard name; False: ours (AG2_OTEL_*)
    # who reads it and what a bad value does: "instrument, autolog" (instrument warns and uses the default, autolog
    # refuses), "autolog" (refuses), "SDK" (the SDK warns and falls back), "SDK; autolog checks" (autolog refuses the
    # values the SDK would raise on, misuse silently or log with a secret), "MLflow", "writer process"
    read_by: str = "autolog"


OTLP_PROTOCOLS = ("grpc", "http/protobuf")
TRACES_EXPORTERS = ("otlp", "console", "mlflow", "none")
DEFAULT_MAX_CONTENT_CHARS = 16384
DEFAULT_MAX_MESSAGES = 20
DEFAULT_EXIT_FLUSH_TIMEOUT = 10.0
DEFAULT_MAX_TRACES = 1000
DEFAULT_MLFLOW_RETRY_TIMEOUT = 60.0
MLFLOW_WRITERS = ("process", "inline")
OTLP_MLFLOW_MODES = ("auto", "true", "false")
_SDK_CHECKED = "SDK; autolog checks"

ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("OTEL_SDK_DISABLED", "`true` turns all tracing off (no spans, no MLflow records, no OTLP export)",
           "false", True, "autolog, SDK"),
    EnvVar("OTEL_SERVICE_NAME", "`service.name` resource attribute of every span", "SDK default", True, "SDK"),
    EnvVar("OTEL_TRACES_EXPORTER", "comma list of sinks: `otlp`, `console`, `mlflow`, or `none` alone. Unset: MLflow "
           "(see AG2_OTEL_MLFLOW) plus OTLP when an OTLP endpoint variable is set", "unset", True),
    EnvVar("OTEL_EXPORTER_OTLP_PROTOCOL", "`grpc` or `http/protobuf` (the `_TRACES_` variant wins)", "grpc", True),
    EnvVar("OTEL_EXPORTER_OTLP_ENDPOINT", "collector base URL; for http/protobuf the SDK appends `/v1/traces`",
           "http://localhost:4317 (grpc), http://localhost:4318 (http)", True, _SDK_CHECKED),
    EnvVar("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "full traces URL, used as is (http/protobuf: include `/v1/traces`)",
           "unset", True, _SDK_CHECKED),
    EnvVar("OTEL_EXPORTER_OTLP_HEADERS", "`key=value,...` sent with every export (values are never logged)",
           "unset", True, _SDK_CHECKED),
    EnvVar("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "as above, traces only; e.g. `x-mlflow-experiment-id=123`",
           "unset", True, _SDK_CHECKED),
    EnvVar("OTEL_EXPORTER_OTLP_TIMEOUT", "export request timeout in seconds (the Python SDK reads seconds)", "10",
           True, _SDK_CHECKED),
    EnvVar("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "as above, traces only", "unset", True, _SDK_CHECKED),
    EnvVar("OTEL_EXPORTER_OTLP_COMPRESSION", "`gzip` (grpc and http), `deflate` or `none` (http only)", "none", True,
           _SDK_CHECKED),
    EnvVar("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "as above, traces only", "unset", True, _SDK_CHECKED),
    EnvVar("OTEL_TRACES_SAMPLER", "`always_on`, `always_off`, `traceidratio`, `parentbased_always_on`, "
           "`parentbased_always_off`, `parentbased_traceidratio`; an `opentelemetry_traces_sampler` entry point only "
           "under `opentelemetry-instrument`", "parentbased_always_on", True, "SDK"),
    EnvVar("OTEL_TRACES_SAMPLER_ARG", "sampling ratio 0..1 for the ratio samplers", "1.0", True, "SDK"),
    EnvVar("OTEL_BSP_SCHEDULE_DELAY", "batch span processor: ms between exports (positive int)", "5000", True,
           _SDK_CHECKED),
    EnvVar("OTEL_BSP_MAX_QUEUE_SIZE", "batch span processor: queue size; a full queue drops spans (positive int)",
           "2048", True, _SDK_CHECKED),
    EnvVar("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "batch span processor: spans per export, <= queue size (positive int)",
           "512", True, _SDK_CHECKED),
    EnvVar("OTEL_BSP_EXPORT_TIMEOUT", "batch span processor: ms allowed for one export (read, but not used, by the "
           "Python SDK 1.45)", "30000", True, "SDK"),
    EnvVar(CAPTURE_CONTENT_ENV, "record message content: `NO_CONTENT`, `SPAN_ONLY`, `EVENT_ONLY`, `SPAN_AND_EVENT` "
           "(or `true`/`false`)", "instrumentor default", True, "instrument, autolog"),
    EnvVar("MLFLOW_TRACKING_URI", "where the MLflow sink writes, resolved by MLflow itself: `sqlite:///path`, "
           "`http(s)://server`, `databricks`, `databricks://PROFILE`", "`sqlite:///mlflow.db` (MLflow 3.17)", True,
           "MLflow"),
    EnvVar("MLFLOW_EXPERIMENT_NAME", "the experiment traces go to (or `mlflow.set_experiment`), e.g. "
           "`/Shared/ag2` on Databricks", "Default", True, "MLflow"),
    EnvVar("MLFLOW_EXPERIMENT_ID", "the same, by id", "unset", True, "MLflow"),
    EnvVar("MLFLOW_TRACKING_USERNAME", "user for an auth-enabled tracking server (`mlflow server --app-name "
           "basic-auth`), sent by MLflow's client as HTTP basic auth with the password; a 401/403 is reported once, "
           "naming the variables (never values); `ag2-otel doctor` checks them", "unset", True, "MLflow"),
    EnvVar("MLFLOW_TRACKING_PASSWORD", "that user's password (never logged or recorded)", "unset", True, "MLflow"),
    EnvVar("MLFLOW_TRACKING_TOKEN", "bearer token for a tracking server that takes one (sent as `Authorization: "
           "Bearer`; basic auth wins when both are set; never logged or recorded)", "unset", True, "MLflow"),
    EnvVar("DATABRICKS_HOST", "workspace URL when the tracking URI is `databricks`", "unset", True, "MLflow"),
    EnvVar("DATABRICKS_TOKEN", "workspace token (sent only as `Authorization: Bearer`; never logged or recorded)",
           "unset", True, "MLflow"),
    EnvVar("MLFLOW_ENABLE_OTLP_EXPORTER", "MLflow's switch for sending its own spans over OTLP instead of to its "
           "store; set to `false` by ag2-otel when an OTLP endpoint is set and you did not choose", "true", True,
           "MLflow"),
    EnvVar("AG2_OTEL_MLFLOW", "`true`/`false`: the MLflow sink on or off (explicit value beats "
           "OTEL_TRACES_EXPORTER)", "true", False),
    EnvVar("AG2_OTEL_MAX_CONTENT_CHARS", "cap, in characters, for one recorded content string (positive int)",
           str(DEFAULT_MAX_CONTENT_CHARS), False, "instrument, autolog"),
    EnvVar("AG2_OTEL_MAX_MESSAGES", "how many trailing messages of a model call's input are recorded (positive int)",
           str(DEFAULT_MAX_MESSAGES), False, "instrument, autolog"),
    EnvVar("AG2_OTEL_EXIT_FLUSH_TIMEOUT", "seconds allowed at interpreter exit to flush pending spans (>= 0); also "
           "how long an MLflow read in the application waits for a trace still being written",
           str(int(DEFAULT_EXIT_FLUSH_TIMEOUT)), False, "autolog, `mlflow` exporter"),
    EnvVar("AG2_OTEL_MLFLOW_WRITER", "`process`: a writer process stores each trace in one batched call, off the "
           "application's GIL; `inline`: replay through MLflow's tracer in the application (always used for "
           "Databricks and traces nested under your MLflow span)", "process", False),
    EnvVar("AG2_OTEL_MAX_TRACES", "MLflow sink: traces buffered at once (open conversations, and finished ones "
           "waiting for the writer); one warning when the writer's backlog passes half of it, beyond it new traces "
           "are dropped and counted (positive int)",
           str(DEFAULT_MAX_TRACES), False),
    EnvVar("AG2_OTEL_MLFLOW_RETRY_TIMEOUT", "seconds the writer process keeps retrying a trace while the MLflow "
           "backend is unreachable before giving it up (counted) (>= 0)", str(int(DEFAULT_MLFLOW_RETRY_TIMEOUT)),
           False),
    EnvVar("AG2_OTEL_OTLP_MLFLOW", "`true`: OTLP export adds MLflow's keys (span types, inputs/outputs, token usage, "
           "trace tags and previews) so an MLflow server behind a collector stores the trace the MLflow sink writes; "
           "`false`: plain GenAI spans; `auto`: on, except when the MLflow sink is on and writes to a local store or "
           "Databricks", "auto", False),
    EnvVar("AG2_OTEL_DEBUG_WRITER", "`1`: the writer process logs each write and failure to stderr", "unset", False,
           "writer process"),
)


def describe_settings_table() -> str:
    """The Markdown table of :data:`ENV_VARS` (README.md holds a copy; a test keeps them equal)."""
    rows = ["| Variable | Meaning | Default | Read by |", "|---|---|---|---|"]
    for var in ENV_VARS:
        rows.append(f"| `{var.name}` | {var.meaning} | {var.default} | {var.read_by} |")
    return "\n".join(rows) + "\n"


# --- Parsers: (stripped value, variable name, ...) -> parsed value; a bad value raises ConfigError --------------------
def _bad(name: str, value: str, accepted: str) -> ConfigError:
    return ConfigError(f"{name}={value!r} is not valid; use {accepted}")


def _parses(kind: type, value: str | None) -> bool:
    try:
        return value is not None and kind(value) is not None
    except ValueError:
        return False


def _bool(value: str, name: str) -> bool:
    if value.lower() not in ("true", "1", "false", "0"):
        raise _bad(name, value, "one of: true, false")
    return value.lower() in ("true", "1")


def _positive_int(value: str, name: str) -> int:
    if not _parses(int, value) or int(value) <= 0:
        raise _bad(name, value, "a positive integer")
    return int(value)


def _seconds(value: str, name: str, allow_zero: bool = True) -> float:
    number = float(value) if _parses(float, value) else math.nan
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise _bad(name, value, "a number of seconds >= 0" if allow_zero else "a positive number of seconds")
    return number


def _choice(value: str, name: str, choices: tuple[str, ...], note: str = "") -> str:
    if value.lower() not in choices:
        raise _bad(name, value, "one of: " + ", ".join(choices) + note)
    return value.lower()


def _exporter_list(value: str, name: str) -> tuple[str, ...]:
    items = [item.strip().lower() for item in value.split(",") if item.strip()]
    for item in items:
        if item not in TRACES_EXPORTERS:
            raise ConfigError(f"{name}={value!r} is not valid: {item!r} is unknown; use a comma list of: "
                              f"{', '.join(TRACES_EXPORTERS)}")
    if "none" in items and len(items) > 1:
        raise ConfigError(f"{name}={value!r} is not valid: 'none' cannot be combined with other exporters")
    return tuple(dict.fromkeys(i for i in items if i != "none"))


def _capture(value: str, name: str) -> ContentCapture:
    lowered = value.lower()
    if lowered in ("true", "1", "false", "0"):
        return ContentCapture.SPAN_ONLY if lowered in ("true", "1") else ContentCapture.NO_CONTENT
    try:
        return ContentCapture(value.upper())
    except ValueError:
        accepted = ", ".join([m.value for m in ContentCapture] + ["true", "false"])
        raise ConfigError(f"{name}={value!r} is not valid; use one of: {accepted}") from None


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    # host[:port] exactly as written: parts.port would raise on a bad port before _url() can name the variable
    netloc = f"{parts.username}:{MASK}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _url(value: str, name: str) -> str:
    """The SDK takes any string here and fails at every export (gRPC without a scheme even goes TLS silently)."""
    try:
        shown = _mask_url(value) if "@" in value else value
    except ValueError:
        shown = "(value hidden)"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _bad(name, shown, "a URL such as http://localhost:4317") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad(name, shown, "a URL such as http://localhost:4317 (scheme http or https, and a host)")
    return value


def _header_names(value: str, name: str) -> tuple[str, ...]:
    """Names of the headers in a ``k=v,k2=v2`` value. A header the SDK cannot parse is refused: the SDK would log it,
    secret included. Values are never kept, and never put in an error message."""
    from opentelemetry.util.re import _DELIMITER_PATTERN, _LIBERAL_HEADER_PATTERN  # the SDK's own parse rule

    names = []
    for item in _DELIMITER_PATTERN.split(value):
        if item and not _LIBERAL_HEADER_PATTERN.fullmatch(item.strip()):
            raise ConfigError(f"{name} is not valid (value hidden); use key=value pairs separated by commas, values "
                              f"without quotes, backslashes, semicolons or non-ASCII characters (URL-encode them), "
                              f"e.g. x-mlflow-experiment-id=123")
        if item:
            names.append(item.partition("=")[0].strip().lower())
    return tuple(names)


class _Env:
    """Reads variables: a bad value raises ConfigError or, given a ``problems`` list, goes there (the default used)."""

    def __init__(self, environ: Mapping[str, str], problems: list[str] | None) -> None:
        self.environ, self.problems = environ, problems

    def get(self, name: str) -> str | None:
        """The stripped value, or None when unset or empty (the OTel spec treats empty as unset)."""
        value = (self.environ.get(name) or "").strip()
        return value or None

    def read(self, parse: Callable[..., Any], name: str, *args: Any, default: Any = None) -> Any:
        value = self.get(name)
        if value is None:
            return default
        try:
            return parse(value, name, *args)
        except ConfigError as exc:
            self.refuse(exc)
            return default

    def refuse(self, exc: ConfigError) -> None:
        if self.problems is None:
            raise exc
        self.problems.append(str(exc))


def _used(env: _Env, traces_name: str, base_name: str) -> str | None:
    """The variable the SDK's trace exporter takes the value from: the ``_TRACES_`` one when set, else the base one."""
    return traces_name if env.get(traces_name) else base_name if env.get(base_name) else None


# --- What instrument() reads: a bad value is a warning and the default ------------------------------------------------
def _lenient(environ: Mapping[str, str], parse: Callable[..., Any], name: str, default: Any) -> Any:
    problems: list[str] = []
    value = _Env(environ, problems).read(parse, name, default=default)
    for problem in problems:  # at most one, each time instrument() reads it
        _logger.warning("ag2-otel: %s; using the default (%s)", problem, getattr(default, "value", default))
    return value


def content_capture(
    argument: bool | str | ContentCapture | None,
    default: ContentCapture,
    environ: Mapping[str, str] = os.environ,
) -> ContentCapture:
    """The content mode: an explicit argument wins, else OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, else
    default. A bad argument raises ConfigError (a mistake in code); a bad environment value is a warning and the
    default (``autolog()`` refuses it earlier, in :func:`load_settings`)."""
    if isinstance(argument, ContentCapture):
        return argument
    if isinstance(argument, bool):
        return ContentCapture.SPAN_ONLY if argument else ContentCapture.NO_CONTENT
    if argument is not None:
        return _capture(str(argument).strip(), "capture_content argument")
    return _lenient(environ, _capture, CAPTURE_CONTENT_ENV, default)


def instrumentation_limits(environ: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """(AG2_OTEL_MAX_CONTENT_CHARS, AG2_OTEL_MAX_MESSAGES) for instrument(): a bad value is a warning (default)."""
    return (_lenient(environ, _positive_int, "AG2_OTEL_MAX_CONTENT_CHARS", DEFAULT_MAX_CONTENT_CHARS),
            _lenient(environ, _positive_int, "AG2_OTEL_MAX_MESSAGES", DEFAULT_MAX_MESSAGES))


def exit_flush_timeout(environ: Mapping[str, str] = os.environ) -> float:
    """AG2_OTEL_EXIT_FLUSH_TIMEOUT alone (the ``mlflow`` span exporter reads nothing else); a bad value raises."""
    return _Env(environ, None).read(_seconds, "AG2_OTEL_EXIT_FLUSH_TIMEOUT", default=DEFAULT_EXIT_FLUSH_TIMEOUT)


# --- What autolog() reads: validated, a bad value raises ConfigError --------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Settings:
    """What the environment asks autolog() for, validated. Holds no secret values (header names only, no token)."""

    sdk_disabled: bool = False
    traces_exporters: tuple[str, ...] | None = None  # None: OTEL_TRACES_EXPORTER unset
    otlp_protocol: str = "grpc"
    otlp_endpoint: str = "http://localhost:4317"  # the traces endpoint the SDK will use (password in a URL masked)
    otlp_endpoint_configured: bool = False  # an OTLP endpoint variable is set
    otlp_header_names: tuple[str, ...] = ()  # () when the OTLP exporter variables were not checked
    otlp_timeout: float | None = None  # None: unset, or the OTLP exporter variables were not checked
    capture_content: ContentCapture | None = None  # None: unset, the caller's default applies
    mlflow_explicit: bool | None = None  # AG2_OTEL_MLFLOW as given, None when unset
    max_content_chars: int = DEFAULT_MAX_CONTENT_CHARS
    max_messages: int = DEFAULT_MAX_MESSAGES
    exit_flush_timeout: float = DEFAULT_EXIT_FLUSH_TIMEOUT
    mlflow_writer: str = "process"
    max_traces: int = DEFAULT_MAX_TRACES
    mlflow_retry_timeout: float = DEFAULT_MLFLOW_RETRY_TIMEOUT
    otlp_mlflow: str = "auto"  # AG2_OTEL_OTLP_MLFLOW
    databricks_host: str | None = None
    databricks_token_set: bool = False
    warnings: tuple[str, ...] = ()

    # --- which sinks are on -------------------------------------------------------------------------------------
    @property
    def otlp_enabled(self) -> bool:
        listed = self.otlp_endpoint_configured if self.traces_exporters is None else "otlp" in self.traces_exporters
        return not self.sdk_disabled and listed

    def otlp_mlflow_keys(self, mlflow_sink_on: bool, tracking_uri: str | None) -> bool:
        """OTLP export carries MLflow's keys: ``true``; ``auto`` unless the MLflow sink is on and writes where no
        collector can write too (a local store, Databricks): with it off, a collector is the way to MLflow, and with
        it writing to an MLflow server, a collector may feed that server the same trace (README: one trace per
        conversation per server)."""
        if self.otlp_mlflow != "auto":
            return self.otlp_mlflow == "true"
        return not mlflow_sink_on or (tracking_uri or "").lower().startswith(("http://", "https://"))

    @property
    def console_enabled(self) -> bool:
        return not self.sdk_disabled and "console" in (self.traces_exporters or ())

    @property
    def mlflow_enabled(self) -> bool:
        if self.mlflow_explicit is not None:
            return not self.sdk_disabled and self.mlflow_explicit
        return not self.sdk_disabled and (self.traces_exporters is None or "mlflow" in self.traces_exporters)

    def masked(self) -> dict[str, Any]:
        """A dict safe to print or log: header values and tokens appear only as ``***``."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "otlp_header_names":
                out["otlp_headers"] = {name: MASK for name in value}
            elif field.name == "databricks_token_set":
                out["databricks_token"] = MASK if value else None
            elif isinstance(value, ContentCapture):
                out[field.name] = value.value
            else:
                out[field.name] = list(value) if isinstance(value, tuple) else value
        out["otlp_enabled"] = self.otlp_enabled
        out["console_enabled"] = self.console_enabled
        out["mlflow_enabled"] = self.mlflow_enabled
        return out


def load_settings(
    environ: Mapping[str, str] = os.environ,
    *,
    otlp_exporter: bool | None = None,
    problems: list[str] | None = None,
) -> Settings:
    """Read and validate what autolog() uses; a bad value raises :class:`ConfigError`.

    otlp_exporter: also check the OTLP exporter's and batch processor's variables (:func:`build_otlp_span_exporter`
        checks them again); None: when the OTLP sink is on. autolog() passes False: it checks them only if it builds
        the exporter (not for a provider you brought).
    problems: collect every bad value here (and use its default) instead of raising at the first.
    """
    env = _Env(environ, problems)
    warnings: list[str] = []
    protocol = (env.read(_choice, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", OTLP_PROTOCOLS)
                or env.read(_choice, "OTEL_EXPORTER_OTLP_PROTOCOL", OTLP_PROTOCOLS) or "grpc")
    endpoint_name = _used(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    writer = env.read(_choice, "AG2_OTEL_MLFLOW_WRITER", MLFLOW_WRITERS, default="process")
    settings = Settings(
        sdk_disabled=env.read(_bool, "OTEL_SDK_DISABLED", default=False),
        traces_exporters=env.read(_exporter_list, "OTEL_TRACES_EXPORTER"),
        otlp_protocol=protocol,
        otlp_endpoint=_traces_endpoint(env, protocol, endpoint_name),
        otlp_endpoint_configured=endpoint_name is not None,
        capture_content=env.read(_capture, CAPTURE_CONTENT_ENV),
        mlflow_explicit=env.read(_bool, "AG2_OTEL_MLFLOW"),
        max_content_chars=env.read(_positive_int, "AG2_OTEL_MAX_CONTENT_CHARS", default=DEFAULT_MAX_CONTENT_CHARS),
        max_messages=env.read(_positive_int, "AG2_OTEL_MAX_MESSAGES", default=DEFAULT_MAX_MESSAGES),
        exit_flush_timeout=env.read(_seconds, "AG2_OTEL_EXIT_FLUSH_TIMEOUT", default=DEFAULT_EXIT_FLUSH_TIMEOUT),
        mlflow_writer=writer,
        max_traces=env.read(_positive_int, "AG2_OTEL_MAX_TRACES", default=DEFAULT_MAX_TRACES),
        mlflow_retry_timeout=env.read(_seconds, "AG2_OTEL_MLFLOW_RETRY_TIMEOUT", default=DEFAULT_MLFLOW_RETRY_TIMEOUT),
        otlp_mlflow=env.read(_choice, "AG2_OTEL_OTLP_MLFLOW", OTLP_MLFLOW_MODES, default="auto"),
        databricks_host=env.get("DATABRICKS_HOST"),
        databricks_token_set=env.get("DATABRICKS_TOKEN") is not None,
    )
    if otlp_exporter or (otlp_exporter is None and settings.otlp_enabled):
        header_names, timeout = _check_otlp_exporter(env, protocol, warnings)
        settings = dataclasses.replace(settings, otlp_header_names=header_names, otlp_timeout=timeout)
    for warning in warnings:
        _logger.warning("ag2-otel configuration: %s", warning)
    return dataclasses.replace(settings, warnings=tuple(warnings))


def _traces_endpoint(env: _Env, protocol: str, name: str | None) -> str:
    """The traces endpoint the SDK will use, shown with a password in it masked."""
    http = protocol == "http/protobuf"
    value = env.get(name) if name else "http://localhost:4318" if http else "http://localhost:4317"
    if http and name != "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":
        value = f"{value.removesuffix('/')}/v1/traces"
    try:
        return _mask_url(value)
    except ValueError:  # not a URL: _check_otlp_exporter names the variable
        return "(not a URL)"


def _check_otlp_exporter(env: _Env, protocol: str, warnings: list[str]) -> tuple[tuple[str, ...], float | None]:
    """Refuse what the SDK's OTLP span exporter and batch span processor would raise on when built, misuse at every
    export, or log with its secret; what the SDK reports itself and falls back on is left to it."""
    grpc = protocol == "grpc"
    if grpc:  # the gRPC exporter reads these raw: set but empty raises when it is built (endpoint: never connects)
        raw = env.environ
        suspects = ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"]
        suspects += [f"OTEL_EXPORTER_OTLP_{kind}" for kind in ("TIMEOUT", "COMPRESSION")
                     if f"OTEL_EXPORTER_OTLP_TRACES_{kind}" not in raw]  # the base one is read only then
        if not env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            suspects.append("OTEL_EXPORTER_OTLP_ENDPOINT")
        for name in suspects:
            if name in raw and not raw[name].strip():
                env.refuse(ConfigError(f"{name} is set but empty; the gRPC exporter does not read empty as unset: "
                                       f"unset it or give a value"))

    endpoint_name = _used(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint_name is not None and env.read(_url, endpoint_name) is not None:  # the SDK takes any string
        parts = urlsplit(env.get(endpoint_name) or "")
        if endpoint_name.endswith("TRACES_ENDPOINT") and not grpc and parts.path in ("", "/"):
            warnings.append("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as is for http/protobuf and has no path; "
                            "collectors and MLflow listen on /v1/traces")
        if parts.port == (4318 if grpc else 4317):
            warnings.append(f"OTLP protocol is {protocol} but the endpoint port is {parts.port}, the usual "
                            f"OTLP/{'HTTP' if grpc else 'gRPC'} port")

    headers_name = _used(env, "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
    header_names = env.read(_header_names, headers_name, default=()) if headers_name else ()

    # timeout: <= 0 fails every export (gRPC turns 0 into 10 silently); gRPC raises on a non-number, http/protobuf
    # warns and uses 10 s itself
    timeout = None
    timeout_name = _used(env, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
    if timeout_name is not None and (grpc or _parses(float, env.get(timeout_name))):
        timeout = env.read(_seconds, timeout_name, False)

    # compression: gRPC raises on anything but gzip; http/protobuf warns about an unknown value and sends uncompressed
    compression_name = _used(env, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION")
    if grpc and compression_name is not None:
        env.read(_choice, compression_name, ("gzip",), " (with protocol grpc)")

    # batch span processor: raises on a value <= 0 and on a batch larger than the queue; a value that is not an
    # integer is logged by the SDK, which uses its default
    sizes = {}
    for name in ("OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"):
        sizes[name] = env.read(_positive_int, name) if _parses(int, env.get(name)) else None
    queue = sizes["OTEL_BSP_MAX_QUEUE_SIZE"] or 2048
    batch = sizes["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] or 512
    if batch > queue:
        env.refuse(ConfigError(f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE={batch} is larger than OTEL_BSP_MAX_QUEUE_SIZE="
                               f"{queue}; the batch size must be <= the queue size"))
    return header_names, timeout


# --- The OTLP exporter: the SDK's own, built with no arguments --------------------------------------------------------
def _certificate_keeping_session():
    """A requests session on which the CA file the SDK sets (OTEL_EXPORTER_OTLP_CERTIFICATE) stays in force.

    requests merges the environment into every request, and REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (set system-wide on
    many machines) replace the session's ``verify``: the private CA of a collector would be ignored and every export
    fail with CERTIFICATE_VERIFY_FAILED. gRPC is not affected.
    """
    import requests

    class CertificateKeepingSession(requests.Session):
        def merge_environment_settings(self, url, proxies, stream, verify, cert):  # noqa: ANN001, ANN201
            merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if isinstance(self.verify, str):
                merged["verify"] = self.verify
            return merged

    return CertificateKeepingSession()


def build_otlp_span_exporter(settings: Settings):
    """The SDK's own OTLPSpanExporter for ``settings.otlp_protocol``, built with no arguments.

    It reads endpoint, headers, timeout, compression and certificates from ``os.environ`` itself; pass settings
    loaded from ``os.environ`` so the protocol chosen here matches what the exporter will read. Raises ConfigError
    first for a value the exporter or its batch span processor cannot use.
    """
    warnings: list[str] = []
    _check_otlp_exporter(_Env(os.environ, None), settings.otlp_protocol, warnings)
    for warning in warnings:
        _logger.warning("ag2-otel configuration: %s", warning)
    if settings.otlp_protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE") or os.environ.get("OTEL_EXPORTER_OTLP_CERTIFICATE"):
            return OTLPSpanExporter(session=_certificate_keeping_session())
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


if __name__ == "__main__":  # python -m ag2_otel.config  -> the table for README.md
    print(describe_settings_table(), end="")
