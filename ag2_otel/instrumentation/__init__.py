"""AG2 hooks → OpenTelemetry spans. The table of wrapped methods is in targets.py."""

from .instrumentor import Ag2Instrumentor

__all__ = ["Ag2Instrumentor"]
