"""The sinks' one "warn once" helper: a condition the user should know about is logged at WARNING the first time,
then only counted (by the caller, in its stats). One instance per owner (processor, writer client, exporter), so a
second processor in the same process warns for itself."""

from __future__ import annotations

import logging
import threading
from typing import Any


class WarnOnce:
    def __init__(self, logger: logging.Logger, prefix: str = "ag2_otel: ") -> None:
        self._logger, self._prefix = logger, prefix
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, key: str, message: str, *args: Any) -> bool:
        """Log ``message % args`` unless ``key`` was logged before. True if it was logged now."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        self._logger.warning(self._prefix + message, *args)
        return True
