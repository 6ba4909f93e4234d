"""Configuration from the environment: standard OTEL_* names first, AG2_OTEL_* only where no standard exists.

A bad value raises :class:`ConfigError` naming the variable and the accepted values, at configuration time.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import os
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit


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


_BOOL_TO_CAPTURE = {"true": ContentCapture.SPAN_ONLY, "1": ContentCapture.SPAN_ONLY,
                    "false": ContentCapture.NO_CONTENT, "0": ContentCapture.NO_CONTENT}


def content_capture(
    argument: bool | str | ContentCapture | None,
    default: ContentCapture,
    environ: Mapping[str, str] = os.environ,
) -> ContentCapture:
    """The content mode: an explicit argument wins, else OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, else default."""
    if isinstance(argument, ContentCapture):
        return argument
    if isinstance(argument, bool):
        return ContentCapture.SPAN_ONLY if argument else ContentCapture.NO_CONTENT
    source = "capture_content argument"
    if argument is None:
        argument = environ.get(CAPTURE_CONTENT_ENV, "").strip()
        source = CAPTURE_CONTENT_ENV
        if not argument:
            return default
    value = str(argument).strip()
    if value.lower() in _BOOL_TO_CAPTURE:
        return _BOOL_TO_CAPTURE[value.lower()]
    try:
        return ContentCapture(value.upper())
    except ValueError:
        accepted = ", ".join([m.value for m in ContentCapture] + ["true", "false"])
        raise ConfigError(f"{source}={value!r} is not valid; use one of: {accepted}") from None


# =================================================================================================================
# Settings: every variable we honour, validated once at configuration time.
# =================================================================================================================
# The OTLP exporter itself is NOT configured here: build_otlp_span_exporter() instantiates the SDK's own
# OTLPSpanExporter with no arguments, so the SDK reads endpoint, headers, timeout, compression and certificates from
# os.environ exactly as it documents. load_settings() only checks the values early and loudly (the SDK would log a
# warning and fall back, or raise deep inside a background thread) and decides which sinks are on.

_logger = logging.getLogger(__name__)

MASK = "***"


class EnvVar(NamedTuple):
    """One environment variable we read: the README/docs table is generated from :data:`ENV_VARS`."""

    name: str
    meaning: str
    default: str
    standard: bool  # True: an OpenTelemetry or MLflow standard name; False: ours (AG2_OTEL_*)


OTLP_PROTOCOLS = ("grpc", "http/protobuf")
TRACES_EXPORTERS = ("otlp", "console", "mlflow", "none")
# grpc's SDK exporter maps only "gzip" (anything else raises InvalidCompressionValueException when it is built);
# the http exporter takes gzip, deflate and none.
_COMPRESSION_BY_PROTOCOL = {"grpc": ("gzip",), "http/protobuf": ("gzip", "deflate", "none")}
_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")
_SAMPLER_ENTRY_POINT_GROUP = "opentelemetry_traces_sampler"

DEFAULT_MAX_CONTENT_CHARS = 16384
DEFAULT_MAX_MESSAGES = 20
DEFAULT_EXIT_FLUSH_TIMEOUT = 10.0
DEFAULT_MAX_TRACES = 1000
DEFAULT_MLFLOW_RETRY_TIMEOUT = 60.0
MLFLOW_WRITERS = ("process", "inline")

ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("OTEL_SDK_DISABLED", "`true` turns all tracing off (no spans, no MLflow records, no OTLP export)",
           "false", True),
    EnvVar("OTEL_SERVICE_NAME", "`service.name` resource attribute of every span", "SDK default", True),
    EnvVar("OTEL_TRACES_EXPORTER", "comma list of sinks: `otlp`, `console`, `mlflow`, or `none` alone. Unset: MLflow "
           "(see AG2_OTEL_MLFLOW) plus OTLP when an OTLP endpoint variable is set", "unset", True),
    EnvVar("OTEL_EXPORTER_OTLP_PROTOCOL", "`grpc` or `http/protobuf` (the `_TRACES_` variant wins)", "grpc", True),
    EnvVar("OTEL_EXPORTER_OTLP_ENDPOINT", "collector base URL; for http/protobuf the SDK appends `/v1/traces`",
           "http://localhost:4317 (grpc), http://localhost:4318 (http)", True),
    EnvVar("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "full traces URL, used as is (http/protobuf: include `/v1/traces`)",
           "unset", True),
    EnvVar("OTEL_EXPORTER_OTLP_HEADERS", "`key=value,...` sent with every export (values are never logged)",
           "unset", True),
    EnvVar("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "as above, traces only; e.g. `x-mlflow-experiment-id=123`",
           "unset", True),
    EnvVar("OTEL_EXPORTER_OTLP_TIMEOUT", "export request timeout in seconds (the Python SDK reads seconds)", "10",
           True),
    EnvVar("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "as above, traces only", "unset", True),
    EnvVar("OTEL_EXPORTER_OTLP_COMPRESSION", "`gzip` (grpc and http), `deflate` or `none` (http only)", "none", True),
    EnvVar("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "as above, traces only", "unset", True),
    EnvVar("OTEL_TRACES_SAMPLER", "`always_on`, `always_off`, `traceidratio`, `parentbased_always_on`, "
           "`parentbased_always_off`, `parentbased_traceidratio`, or an `opentelemetry_traces_sampler` entry point",
           "parentbased_always_on", True),
    EnvVar("OTEL_TRACES_SAMPLER_ARG", "sampling ratio 0..1 for the ratio samplers", "1.0", True),
    EnvVar("OTEL_BSP_SCHEDULE_DELAY", "batch span processor: ms between exports (positive int)", "5000", True),
    EnvVar("OTEL_BSP_MAX_QUEUE_SIZE", "batch span processor: queue size; a full queue drops spans (positive int)",
           "2048", True),
    EnvVar("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "batch span processor: spans per export, <= queue size (positive int)",
           "512", True),
    EnvVar("OTEL_BSP_EXPORT_TIMEOUT", "batch span processor: ms allowed for one export (positive int)", "30000",
           True),
    EnvVar(CAPTURE_CONTENT_ENV, "record message content: `NO_CONTENT`, `SPAN_ONLY`, `EVENT_ONLY`, `SPAN_AND_EVENT` "
           "(or `true`/`false`)", "instrumentor default", True),
    EnvVar("MLFLOW_TRACKING_URI", "where the MLflow sink writes, resolved by MLflow itself: `sqlite:///path`, "
           "`http(s)://server`, `databricks`, `databricks://PROFILE`", "`sqlite:///mlflow.db` (MLflow 3.17)", True),
    EnvVar("MLFLOW_EXPERIMENT_NAME", "the experiment traces go to (or `mlflow.set_experiment`), e.g. "
           "`/Shared/ag2` on Databricks", "Default", True),
    EnvVar("MLFLOW_EXPERIMENT_ID", "the same, by id", "unset", True),
    EnvVar("DATABRICKS_HOST", "workspace URL when the tracking URI is `databricks`", "unset", True),
    EnvVar("DATABRICKS_TOKEN", "workspace token (sent only as `Authorization: Bearer`; never logged or recorded)",
           "unset", True),
    EnvVar("MLFLOW_ENABLE_OTLP_EXPORTER", "MLflow's switch for sending its own spans over OTLP instead of to its "
           "store; set to `false` by ag2-otel when an OTLP endpoint is set and you did not choose", "true", True),
    EnvVar("AG2_OTEL_MLFLOW", "`true`/`false`: the MLflow sink on or off (explicit value beats "
           "OTEL_TRACES_EXPORTER)", "true", False),
    EnvVar("AG2_OTEL_MAX_CONTENT_CHARS", "cap, in characters, for one recorded content string (positive int)",
           str(DEFAULT_MAX_CONTENT_CHARS), False),
    EnvVar("AG2_OTEL_MAX_MESSAGES", "how many trailing messages of a model call's input are recorded (positive int)",
           str(DEFAULT_MAX_MESSAGES), False),
    EnvVar("AG2_OTEL_EXIT_FLUSH_TIMEOUT", "seconds allowed at interpreter exit to flush pending spans (>= 0); also "
           "how long an MLflow read in the application waits for a trace still being written",
           str(int(DEFAULT_EXIT_FLUSH_TIMEOUT)), False),
    EnvVar("AG2_OTEL_MLFLOW_WRITER", "`process`: a writer process stores each trace in one batched call, off the "
           "application's GIL; `inline`: replay through MLflow's tracer in the application (always used for "
           "Databricks, file stores, and traces nested under your MLflow span)", "process", False),
    EnvVar("AG2_OTEL_MAX_TRACES", "MLflow sink: traces buffered at once (open conversations, and finished ones "
           "waiting for the writer); beyond it new traces are dropped and counted (positive int)",
           str(DEFAULT_MAX_TRACES), False),
    EnvVar("AG2_OTEL_MLFLOW_RETRY_TIMEOUT", "seconds the writer process keeps retrying a trace while the MLflow "
           "backend is unreachable before giving it up (counted) (>= 0)", str(int(DEFAULT_MLFLOW_RETRY_TIMEOUT)),
           False),
    EnvVar("AG2_OTEL_DEBUG_WRITER", "`1`: the writer process logs each write and failure to stderr", "unset", False),
)


def describe_settings_table() -> str:
    """The Markdown table of :data:`ENV_VARS` (README.md holds a copy; a test keeps them equal)."""
    rows = ["| Variable | Meaning | Default |", "|---|---|---|"]
    for var in ENV_VARS:
        rows.append(f"| `{var.name}` | {var.meaning} | {var.default} |")
    return "\n".join(rows) + "\n"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the environment asks for, validated. Holds no secret values (header names only, no token)."""

    sdk_disabled: bool = False
    service_name: str | None = None
    traces_exporters: tuple[str, ...] | None = None  # None: OTEL_TRACES_EXPORTER unset
    otlp_protocol: str = "grpc"
    otlp_endpoint: str = "http://localhost:4317"  # the traces endpoint the SDK will use (password in a URL masked)
    otlp_endpoint_configured: bool = False  # an OTLP endpoint variable is set
    otlp_header_names: tuple[str, ...] = ()
    otlp_timeout: float | None = None
    otlp_compression: str | None = None
    sampler: str | None = None
    sampler_arg: float | None = None
    bsp_schedule_delay_ms: int | None = None
    bsp_max_queue_size: int | None = None
    bsp_max_export_batch_size: int | None = None
    bsp_export_timeout_ms: int | None = None
    capture_content: ContentCapture | None = None  # None: unset, the caller's default applies
    mlflow_explicit: bool | None = None  # AG2_OTEL_MLFLOW as given, None when unset
    max_content_chars: int = DEFAULT_MAX_CONTENT_CHARS
    max_messages: int = DEFAULT_MAX_MESSAGES
    exit_flush_timeout: float = DEFAULT_EXIT_FLUSH_TIMEOUT
    mlflow_writer: str = "process"
    max_traces: int = DEFAULT_MAX_TRACES
    mlflow_retry_timeout: float = DEFAULT_MLFLOW_RETRY_TIMEOUT
    databricks_host: str | None = None
    databricks_token_set: bool = False
    warnings: tuple[str, ...] = ()

    # --- which sinks are on -------------------------------------------------------------------------------------
    @property
    def otlp_enabled(self) -> bool:
        if self.sdk_disabled:
            return False
        if self.traces_exporters is None:
            return self.otlp_endpoint_configured
        return "otlp" in self.traces_exporters

    @property
    def console_enabled(self) -> bool:
        return not self.sdk_disabled and "console" in (self.traces_exporters or ())

    @property
    def mlflow_enabled(self) -> bool:
        if self.sdk_disabled:
            return False
        if self.mlflow_explicit is not None:
            return self.mlflow_explicit
        if self.traces_exporters is None:
            return True
        return "mlflow" in self.traces_exporters

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


# --- parsing helpers --------------------------------------------------------------------------------------------
def _get(environ: Mapping[str, str], name: str) -> str | None:
    """The stripped value, or None when unset or empty (the OTel spec treats empty as unset)."""
    value = environ.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _bad(name: str, value: str, accepted: str) -> ConfigError:
    return ConfigError(f"{name}={value!r} is not valid; use {accepted}")


def _bool(environ: Mapping[str, str], name: str) -> bool | None:
    value = _get(environ, name)
    if value is None:
        return None
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise _bad(name, value, "one of: true, false")


def _positive_int(environ: Mapping[str, str], name: str) -> int | None:
    value = _get(environ, name)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise _bad(name, value, "a positive integer") from None
    if number <= 0:
        raise _bad(name, value, "a positive integer")
    return number


def _number(environ: Mapping[str, str], name: str, *, allow_zero: bool) -> float | None:
    value = _get(environ, name)
    if value is None:
        return None
    accepted = "a number of seconds >= 0" if allow_zero else "a positive number of seconds"
    try:
        number = float(value)
    except ValueError:
        raise _bad(name, value, accepted) from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise _bad(name, value, accepted)
    return number


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    # host[:port] exactly as written: parts.port would raise on a bad port before _url() can name the variable
    netloc = f"{parts.username}:{MASK}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _url(environ: Mapping[str, str], name: str) -> str | None:
    value = _get(environ, name)
    if value is None:
        return None
    shown = _mask_url(value) if "@" in value else value
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _bad(name, shown, "a URL such as http://localhost:4317") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad(name, shown, "a URL such as http://localhost:4317 (scheme http or https, and a host)")
    return value


def _one_of(environ: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    value = _get(environ, name)
    if value is None:
        return None
    if value.lower() not in choices:
        raise _bad(name, value, "one of: " + ", ".join(choices))
    return value.lower()


def _header_names(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Names of the headers in a ``k=v,k2=v2`` value. Values are never kept, and never put in an error message."""
    value = _get(environ, name)
    if value is None:
        return ()
    names = []
    for item in value.split(","):
        if not item.strip():
            continue
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{name} is not valid (value hidden); use key=value pairs separated by commas, "
                              f"e.g. x-mlflow-experiment-id=123")
        names.append(key.strip().lower())
    return tuple(names)


def _known_samplers() -> tuple[str, ...]:
    from opentelemetry.sdk.trace.sampling import _KNOWN_SAMPLERS  # the SDK's own names

    names = list(_KNOWN_SAMPLERS)
    try:
        from importlib.metadata import entry_points

        names += [ep.name for ep in entry_points(group=_SAMPLER_ENTRY_POINT_GROUP)]
    except Exception:  # pragma: no cover - metadata problems must not break configuration
        pass
    return tuple(dict.fromkeys(names))


# --- the loader -------------------------------------------------------------------------------------------------
def load_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    """Read and validate every variable in :data:`ENV_VARS`; a bad value raises :class:`ConfigError`."""
    warnings: list[str] = []

    sdk_disabled = bool(_bool(environ, "OTEL_SDK_DISABLED"))

    exporters: tuple[str, ...] | None = None
    raw = _get(environ, "OTEL_TRACES_EXPORTER")
    if raw is not None:
        items = [item.strip().lower() for item in raw.split(",") if item.strip()]
        for item in items:
            if item not in TRACES_EXPORTERS:
                raise ConfigError(f"OTEL_TRACES_EXPORTER={raw!r} is not valid: {item!r} is unknown; use a comma "
                                  f"list of: {', '.join(TRACES_EXPORTERS)}")
        if "none" in items and len(items) > 1:
            raise ConfigError(f"OTEL_TRACES_EXPORTER={raw!r} is not valid: 'none' cannot be combined with other "
                              f"exporters")
        exporters = tuple(dict.fromkeys(i for i in items if i != "none"))

    protocol = (_one_of(environ, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", OTLP_PROTOCOLS)
                or _one_of(environ, "OTEL_EXPORTER_OTLP_PROTOCOL", OTLP_PROTOCOLS) or "grpc")
    # validate both even when the traces one wins: a typo in either is a typo
    _one_of(environ, "OTEL_EXPORTER_OTLP_PROTOCOL", OTLP_PROTOCOLS)

    traces_endpoint = _url(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    base_endpoint = _url(environ, "OTEL_EXPORTER_OTLP_ENDPOINT")
    if traces_endpoint:
        endpoint = traces_endpoint
        path = urlsplit(traces_endpoint).path
        if protocol == "http/protobuf" and path in ("", "/"):
            warnings.append("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as is for http/protobuf and has no path; "
                            "collectors and MLflow listen on /v1/traces")
    elif base_endpoint:
        endpoint = (f"{base_endpoint.removesuffix('/')}/v1/traces" if protocol == "http/protobuf"
                    else base_endpoint)
    else:
        endpoint = "http://localhost:4318/v1/traces" if protocol == "http/protobuf" else "http://localhost:4317"
    port = urlsplit(endpoint).port
    if protocol == "grpc" and port == 4318:
        warnings.append("OTLP protocol is grpc but the endpoint port is 4318, the usual OTLP/HTTP port")
    if protocol == "http/protobuf" and port == 4317:
        warnings.append("OTLP protocol is http/protobuf but the endpoint port is 4317, the usual OTLP/gRPC port")

    header_names = (_header_names(environ, "OTEL_EXPORTER_OTLP_TRACES_HEADERS")
                    or _header_names(environ, "OTEL_EXPORTER_OTLP_HEADERS"))
    _header_names(environ, "OTEL_EXPORTER_OTLP_HEADERS")

    timeout = _number(environ, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", allow_zero=False)
    base_timeout = _number(environ, "OTEL_EXPORTER_OTLP_TIMEOUT", allow_zero=False)
    timeout = timeout if timeout is not None else base_timeout

    accepted_compression = _COMPRESSION_BY_PROTOCOL[protocol]
    compression = None
    for name in ("OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"):
        value = _get(environ, name)
        if value is None:
            continue
        if value.lower() not in accepted_compression:
            raise _bad(name, value, f"one of: {', '.join(accepted_compression)} (with protocol {protocol})")
        compression = value.lower()  # the traces variable is read last and wins

    sampler = None
    sampler_arg = None
    raw_sampler = _get(environ, "OTEL_TRACES_SAMPLER")
    if raw_sampler is not None:
        known = _known_samplers()
        if raw_sampler.lower() not in known:
            raise _bad("OTEL_TRACES_SAMPLER", raw_sampler, "one of: " + ", ".join(known))
        sampler = raw_sampler.lower()
    raw_arg = _get(environ, "OTEL_TRACES_SAMPLER_ARG")
    if raw_arg is not None and (sampler in _RATIO_SAMPLERS or sampler is None):
        try:
            sampler_arg = float(raw_arg)
        except ValueError:
            sampler_arg = math.nan
        if not 0.0 <= sampler_arg <= 1.0:
            raise _bad("OTEL_TRACES_SAMPLER_ARG", raw_arg, "a number from 0 to 1 for the ratio samplers")
        if sampler is None:
            warnings.append("OTEL_TRACES_SAMPLER_ARG is set but OTEL_TRACES_SAMPLER is not; the argument is ignored")

    bsp = {name: _positive_int(environ, f"OTEL_BSP_{name}")
           for name in ("SCHEDULE_DELAY", "MAX_QUEUE_SIZE", "MAX_EXPORT_BATCH_SIZE", "EXPORT_TIMEOUT")}
    queue = bsp["MAX_QUEUE_SIZE"] or 2048
    batch = bsp["MAX_EXPORT_BATCH_SIZE"] or 512
    if batch > queue:
        raise ConfigError(f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE={batch} is larger than OTEL_BSP_MAX_QUEUE_SIZE={queue}; "
                          f"the batch size must be <= the queue size")

    capture = content_capture(None, default=None, environ=environ)  # type: ignore[arg-type]

    max_content_chars = _positive_int(environ, "AG2_OTEL_MAX_CONTENT_CHARS")
    max_messages = _positive_int(environ, "AG2_OTEL_MAX_MESSAGES")
    exit_flush = _number(environ, "AG2_OTEL_EXIT_FLUSH_TIMEOUT", allow_zero=True)
    writer = (_get(environ, "AG2_OTEL_MLFLOW_WRITER") or "process").strip().lower()
    if writer not in MLFLOW_WRITERS:
        raise _bad("AG2_OTEL_MLFLOW_WRITER", writer, "`process` or `inline`")
    max_traces = _positive_int(environ, "AG2_OTEL_MAX_TRACES")
    retry_timeout = _number(environ, "AG2_OTEL_MLFLOW_RETRY_TIMEOUT", allow_zero=True)
    databricks_host = _get(environ, "DATABRICKS_HOST")

    settings = Settings(
        sdk_disabled=sdk_disabled,
        service_name=_get(environ, "OTEL_SERVICE_NAME"),
        traces_exporters=exporters,
        otlp_protocol=protocol,
        otlp_endpoint=_mask_url(endpoint),
        otlp_endpoint_configured=bool(traces_endpoint or base_endpoint),
        otlp_header_names=header_names,
        otlp_timeout=timeout,
        otlp_compression=compression,
        sampler=sampler,
        sampler_arg=sampler_arg,
        bsp_schedule_delay_ms=bsp["SCHEDULE_DELAY"],
        bsp_max_queue_size=bsp["MAX_QUEUE_SIZE"],
        bsp_max_export_batch_size=bsp["MAX_EXPORT_BATCH_SIZE"],
        bsp_export_timeout_ms=bsp["EXPORT_TIMEOUT"],
        capture_content=capture,
        mlflow_explicit=_bool(environ, "AG2_OTEL_MLFLOW"),
        max_content_chars=max_content_chars or DEFAULT_MAX_CONTENT_CHARS,
        max_messages=max_messages or DEFAULT_MAX_MESSAGES,
        exit_flush_timeout=DEFAULT_EXIT_FLUSH_TIMEOUT if exit_flush is None else exit_flush,
        mlflow_writer=writer,
        max_traces=max_traces or DEFAULT_MAX_TRACES,
        mlflow_retry_timeout=DEFAULT_MLFLOW_RETRY_TIMEOUT if retry_timeout is None else retry_timeout,
        databricks_host=databricks_host,
        databricks_token_set=_get(environ, "DATABRICKS_TOKEN") is not None,
        warnings=tuple(warnings),
    )
    for warning in warnings:
        _logger.warning("ag2-otel configuration: %s", warning)
    return settings


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
    loaded from ``os.environ`` so the protocol chosen here matches what the exporter will read.
    """
    if settings.otlp_protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE") or os.environ.get("OTEL_EXPORTER_OTLP_CERTIFICATE"):
            return OTLPSpanExporter(session=_certificate_keeping_session())
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


if __name__ == "__main__":  # python -m ag2_otel.config  -> the table for README.md
    print(describe_settings_table(), end="")
