#!/usr/bin/env python
"""Profile ag2-otel with the MLflow sink (``ag2_otel.autolog()``, local sqlite store) on the benchmark conversation.

    python benchmarks/profile_sink.py [--turns 100] [--runs 3] [--null] [--html out.html]

pyinstrument (``pip install pyinstrument``) samples the main thread during ``--runs`` conversations after one
warm-up. Prints the hotspots in ag2-otel's own code: per ``file:function``, the share of the profiled wall time spent
inside it (inclusive, recursion counted once) and in its own body (self), then pyinstrument's call tree.
``--null`` profiles the null sink (SimpleSpanProcessor + a discarding exporter) instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def hotspots(root, total: float, prefix: str) -> list[tuple[str, float, float]]:
    inclusive: dict[str, float] = defaultdict(float)
    own: dict[str, float] = defaultdict(float)

    def walk(frame, active: frozenset) -> None:
        path = (frame.file_path or "").replace(os.sep, "/")
        key = None
        if f"/{prefix}/" in path:
            key = f"{prefix}/{path.split(f'/{prefix}/', 1)[1]}:{frame.function}"
            own[key] += frame.total_self_time
            if key not in active:
                inclusive[key] += frame.time
        for child in frame.children:
            walk(child, active | {key} if key else active)

    walk(root, frozenset())
    rows = [(key, inclusive[key] / total * 100, own.get(key, 0.0) / total * 100) for key in inclusive]
    return sorted(rows, key=lambda r: -r[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--null", action="store_true", help="null sink instead of the MLflow sink")
    parser.add_argument("--html", help="also write pyinstrument's HTML report here")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="ag2-otel-profile-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    os.environ.setdefault("MLFLOW_MODEL_CATALOG_URI", "")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    sys.path[:0] = [str(REPO), str(HERE)]
    import conversation
    from pyinstrument import Profiler

    conversation.quiet_ag2()
    if args.null:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

        from ag2_otel import Ag2Instrumentor

        class Null(SpanExporter):
            def export(self, spans):  # noqa: ANN001
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(Null()))
        Ag2Instrumentor().instrument(tracer_provider=provider, capture_content="SPAN_ONLY")
    else:
        import ag2_otel

        ag2_otel.autolog()

    real_stdout = sys.stdout
    sys.stdout = open(os.devnull, "w")  # AG2 prints tool executions even with silent=True
    conversation.chat(*conversation.build(), args.turns)  # warm-up
    profiler = Profiler(interval=0.0005)
    started = time.perf_counter()
    profiler.start()
    for _ in range(args.runs):
        conversation.chat(*conversation.build(), args.turns)
    profiler.stop()
    wall = time.perf_counter() - started
    sys.stdout = real_stdout

    session = profiler.last_session
    root = session.root_frame()
    total = root.time if root is not None else session.duration
    sink = "null sink" if args.null else "MLflow sink (ag2_otel.autolog, wait_for_write=True)"
    print(f"ag2-otel, {sink}: {args.runs} × {args.turns}-turn conversations, {wall:.2f} s wall "
          f"({wall / args.runs / args.turns * 1000:.3f} ms/turn), {total:.2f} s sampled on the main thread\n")
    print(f"{'ag2_otel file:function':<70} {'incl %':>7} {'self %':>7}")
    for key, incl, own in hotspots(root, total, "ag2_otel")[: args.top]:
        print(f"{key:<70} {incl:7.1f} {own:7.1f}")
    print()
    print(profiler.output_text(unicode=False, color=False, show_all=False))
    if args.html:
        Path(args.html).write_text(profiler.output_html())
    return 0


if __name__ == "__main__":
    sys.exit(main())
