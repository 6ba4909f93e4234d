"""Make MLflow's read APIs in this process see traces the store writer process is still writing.

A conversation returns as soon as its trace is handed to the writer process, so without help the seed's snippet

    trace = mlflow.get_trace(mlflow.get_last_active_trace_id())

would find no trace id (MLflow sets it only for spans it made itself) or race the write. MLflow has no public hook
for an external writer, so we wrap a few of its public entry points (with wrapt, once, pass-through when nothing of
ours is pending):

* ``mlflow.get_last_active_trace_id`` (also as ``mlflow.tracing.fluent.get_last_active_trace_id``): returns our
  trace id when our trace ended after MLflow's own last trace (global and ``thread_local=True`` variants);
* ``mlflow.get_trace`` and ``TracingClient.get_trace`` / ``get_trace_info`` / ``set_trace_tag`` (behind
  ``MlflowClient.get_trace`` and friends): wait, bounded by the writer's ``write_timeout``, until that id is stored;
* ``mlflow.search_traces`` and ``TracingClient.search_traces``: wait for every pending write, same bound.

On an MLflow whose stores choose their own trace ids (MLflow 3.1's v2 traces, see store_writer), the id we noted is
provisional: ``get_last_active_trace_id`` then waits (same bound) for the write and returns the id MLflow
stored it under, and the by-id reads given a provisional id read the stored one.

A name imported before ``autolog()`` (``from mlflow import get_last_active_trace_id``) keeps MLflow's function.
Reads from other processes (``mlflow ui``) see the trace when the writer has stored it; ``ag2_otel.flush()`` waits.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable

import wrapt

_lock = threading.Lock()
_installed = False
_writers: "weakref.WeakSet[Any]" = weakref.WeakSet()  # objects with wait_for(trace_id, timeout) / flush / timeout
_last_global: tuple[str, Any] | None = None  # (our trace id, MLflow's own value when ours was set)
_last_local = threading.local()
_original_last_active: Callable[..., Any] | None = None  # MLflow's own get_last_active_trace_id


def register(writer: Any) -> None:
    """``writer`` has ``is_pending(id)``, ``wait_for(id, timeout)``, ``flush(timeout)`` and ``read_timeout``.

    The wrappers go in when MLflow is imported (now, or later by the application): the application does not pay for
    importing MLflow (seconds, ~200 MB) unless it uses it.
    """
    with _lock:
        _writers.add(writer)
    wrapt.register_post_import_hook(lambda _module: install(), "mlflow")


def note_last_trace(trace_id: str) -> None:
    """Called on the thread whose conversation just ended, right after the trace was handed to the writer."""
    global _last_global
    original = _original_last_active
    if original is None:  # MLflow not imported: nobody can ask for the id but through MLflow; keep it for then
        _last_global = (trace_id, None)
        _last_local.value = (trace_id, None)
        return
    _last_global = (trace_id, original())
    _last_local.value = (trace_id, original(thread_local=True))


def _last_active(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    theirs = wrapped(*args, **kwargs)
    thread_local = kwargs.get("thread_local", args[0] if args else False)
    ours = getattr(_last_local, "value", None) if thread_local else _last_global
    if ours is not None and theirs == ours[1]:  # MLflow has not finished a trace of its own since ours
        try:
            return _stored_id(ours[0])
        except Exception:  # noqa: BLE001 - never make a read fail because of us
            return ours[0]
    return theirs


def _stored_id(trace_id: str) -> str:
    """``trace_id`` as stored: the same unless the store picks ids (v2 path), then known after the write."""
    for writer in list(_writers):
        keeps = getattr(writer, "keeps_ids", True)
        if not keeps and writer.is_pending(trace_id):
            writer.wait_for(trace_id, writer.read_timeout)
        resolve = getattr(writer, "resolve", None)
        stored = resolve(trace_id) if resolve is not None else trace_id
        if stored != trace_id:
            return stored
    return trace_id


def _wait_one(trace_id: Any) -> Any:
    """Wait for a pending write of ``trace_id``; returns the id to read (the stored one)."""
    if not isinstance(trace_id, str):
        return trace_id
    for writer in list(_writers):
        if writer.is_pending(trace_id):
            writer.wait_for(trace_id, writer.read_timeout)
    return _stored_id(trace_id)


_ID_NAMES = ("trace_id", "request_id")  # MLflow 3.1's TracingClient still names it request_id


def _by_trace_id(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    try:
        name = next((n for n in _ID_NAMES if n in kwargs), None)
        given = kwargs[name] if name is not None else (args[0] if args else None)
        stored = _wait_one(given)
        if stored is not given:
            if name is not None:
                kwargs = {**kwargs, name: stored}
            else:
                args = (stored, *args[1:])
    except Exception:  # noqa: BLE001 - never make a read fail because of us
        pass
    return wrapped(*args, **kwargs)


def _all_pending(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    try:
        for writer in list(_writers):
            writer.flush(writer.read_timeout)
    except Exception:  # noqa: BLE001
        pass
    return wrapped(*args, **kwargs)


def install() -> None:
    global _installed, _original_last_active
    import mlflow
    from mlflow.tracing import fluent
    from mlflow.tracing.client import TracingClient

    with _lock:
        if _installed:
            return
        _installed = True
        _original_last_active = fluent.get_last_active_trace_id
    # Module functions are wrapped where users reach them (``mlflow.X`` and ``mlflow.tracing.fluent.X``), so the
    # wait comes before MLflow builds its store: on a fresh sqlite file, two processes creating the schema at once
    # make one fail (alembic), and the writer process may be doing exactly that for our first trace.
    for name, handler in (("get_last_active_trace_id", _last_active), ("get_trace", _by_trace_id),
                          ("search_traces", _all_pending)):
        original = getattr(fluent, name)
        wrapper = wrapt.FunctionWrapper(original, handler)
        setattr(fluent, name, wrapper)
        if getattr(mlflow, name, None) is original:
            setattr(mlflow, name, wrapper)
    # MlflowClient's trace methods (and anything else) go through TracingClient.
    for name in ("get_trace", "get_trace_info", "set_trace_tag"):
        wrapt.wrap_function_wrapper(TracingClient, name, _by_trace_id)
    wrapt.wrap_function_wrapper(TracingClient, "search_traces", _all_pending)
