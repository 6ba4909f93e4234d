"""Run a flush at interpreter exit while the interpreter can still run it.

A plain ``atexit`` handler runs after ``concurrent.futures`` stopped accepting work, and MLflow needs an executor on
its write path (with an OTLP endpoint set it builds a MeterProvider at its first span end, whose ``Resource.create``
submits to a thread pool: "cannot schedule new futures after interpreter shutdown", the trace is lost). Hooks given to
``threading._register_atexit`` (CPython 3.9+, what ``concurrent.futures`` itself uses) run before that, last
registered first. Where it is missing we fall back to ``atexit``.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any, Callable


def register_exit_flush(fn: Callable[..., Any], *args: Any) -> None:
    register = getattr(threading, "_register_atexit", None)
    if register is None:
        atexit.register(fn, *args)
        return
    try:
        register(fn, *args)
    except RuntimeError:  # the interpreter is already shutting down
        pass
