"""Carrying the OTel context where AG2 drops it, without touching `threading` for the rest of the process.

1. AG2's ``run()``, ``run_group_chat()`` and friends start a plain ``threading.Thread``; a new thread starts with an
   empty context, so their spans would start new traces. We give just those AG2 modules a ``threading`` whose
   ``Thread`` copies the creator's contextvars (as ``asyncio.to_thread`` does). Every other module still sees the real
   ``threading`` module.
2. ``a_generate_oai_reply`` runs the sync client in ``loop.run_in_executor``, which does not copy context either. The
   agent's turn (``a_generate_reply``) leaves its context for that agent here; the class-level wrapper of
   ``generate_oai_reply`` picks it up in the executor thread when that thread has no span of its own.
"""

from __future__ import annotations

import contextvars
import importlib
import threading
import types
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace


class _ContextThread(threading.Thread):
    """A Thread that runs its target inside a copy of the context of the code that created it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ag2_otel_context = contextvars.copy_context()

    def run(self) -> None:
        self._ag2_otel_context.run(super().run)


class _ThreadingWithContext(types.ModuleType):
    """Stands in for `threading` inside one AG2 module: everything is the real module's but ``Thread``."""

    Thread = _ContextThread

    def __getattr__(self, name: str) -> Any:
        return getattr(threading, name)


_shim = _ThreadingWithContext("threading")


def carry_threads(module_name: str) -> bool:
    """Point ``module_name``'s ``threading`` at the shim; False if the module is absent or does not use threading."""
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    if getattr(module, "threading", None) is not threading:
        return False
    module.threading = _shim
    return True


def release_threads(module_name: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return
    if getattr(module, "threading", None) is _shim:
        module.threading = threading


# --- executor hand-off for a_generate_oai_reply ---------------------------------------------------------------------
# One slot per (agent, sender): one agent may serve several conversations at once (AG2 keeps a history per sender),
# and each turn must hand its own context to its own executor call.

_pending: dict[tuple[int, int], otel_context.Context] = {}


def leave_for_executor(agent: Any, sender: Any) -> tuple[tuple[int, int], otel_context.Context, Any]:
    """Called inside an async agent turn: remember the turn's context for a client call run in an executor."""
    key = (id(agent), id(sender))
    mine = otel_context.get_current()
    previous = _pending.get(key)
    _pending[key] = mine
    return key, mine, previous


def take_back(handoff: tuple[tuple[int, int], otel_context.Context, Any]) -> None:
    key, mine, previous = handoff
    if _pending.get(key) is mine:  # only our own entry: turns of other conversations may have replaced it
        if previous is None:
            _pending.pop(key, None)
        else:
            _pending[key] = previous


def attach_left_context(agent: Any, sender: Any) -> object | None:
    """In an executor thread with no active span, attach the context the agent's turn left; returns a detach token."""
    if trace.get_current_span().get_span_context().is_valid:
        return None
    ctx = _pending.get((id(agent), id(sender)))
    return otel_context.attach(ctx) if ctx is not None else None


def detach(token: object | None) -> None:
    if token is not None:
        otel_context.detach(token)
