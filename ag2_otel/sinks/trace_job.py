"""The one message between the application and the store writer process: a finished trace to store.

Built by :class:`~ag2_otel.sinks.mlflow_processor.MlflowSpanProcessor` when a local root ends (or at shutdown),
queued by :class:`~ag2_otel.sinks.writer_client.StoreWriterClient`, pickled over the socket pair in batches
(``("traces", [TraceJob, ...])``) and stored by :class:`~ag2_otel.sinks.store_writer.StoreWriter`. Plain data only:
``spans`` holds ``ReadableSpan`` objects in the application and their :func:`~ag2_otel.sinks.span_snapshot.snapshot`
tuples once the sender thread has taken them (``snapshotted``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# (tracking URI or None: MLflow's default where the writer runs, experiment id, experiment name)
Destination = tuple[str | None, str | None, str | None]


@dataclass
class TraceJob:
    trace_id: str  # the MLflow trace id we chose (tr-<hex>); on MLflow 3.1 the store picks another (acknowledged)
    destination: Destination
    otel_trace_id: int
    root_span_id: int | None  # None: spans whose local root never arrived (the mapping picks the top)
    complete: bool  # False: written at shutdown with unfinished spans (tagged ag2_otel.incomplete)
    dropped: int  # spans dropped over max_spans_per_trace (tagged on the trace)
    extra_metadata: dict[str, str]  # what MLflow records about the producing program (user, source)
    retry_timeout: float  # seconds the writer keeps retrying an unreachable backend, from arrival
    spans: list[Any] = field(default_factory=list)
    seq: int = 0  # set by the client: acknowledgements name it
    snapshotted: bool = False  # spans are snapshot tuples (sent once already, or about to be)


@dataclass
class JobResult:
    """The writer's answer for one job: ``error`` None when stored, else the exception's type name (never its
    message: it may carry a URI with credentials); ``stored_id`` the id it is stored under."""

    seq: int
    trace_id: str
    error: str | None
    stored_id: str
