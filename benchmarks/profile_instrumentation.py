#!/usr/bin/env python
"""Per-turn cost of ag2-otel's instrumentation itself: null sink, content capture on and off, best of N.

    python benchmarks/profile_instrumentation.py [--sizes 20,100,1000] [--repeat 5] [--profile] [--turns 100]

Runs the benchmark conversation (benchmarks/conversation.py) in one subprocess, the configurations interleaved run
by run (``uninstrument()`` / ``instrument()`` between runs), so load from other processes hits them alike:

  none         AG2 untraced
  null+content Ag2Instrumentor, capture_content=SPAN_ONLY (autolog's default), SDK TracerProvider with a
               SimpleSpanProcessor + an exporter that discards the spans
  null-content the same with capture_content=NO_CONTENT

Per size: one warm-up conversation per configuration, then ``--repeat`` timed rounds (wall and CPU time of
``initiate_chat``); the **best** (min) is reported, the most stable figure on a shared box. Overhead = ms/turn −
ms/turn of ``none``; the flatness column is overhead at the largest size / overhead at the smallest size (target
≤ 1.3). Under load, CPU time of the process is the steadier of the two.

``--profile`` instead profiles the traced run (null sink, content on; ``--no-content`` for off) with pyinstrument
and prints ag2-otel's hotspots (inclusive and self share of the sampled wall time), as profile_sink.py does.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONFIGS = ("none", "null+content", "null-content")


_PROVIDER = None


def _setup(config: str) -> None:
    """Switch this process to ``config`` (uninstrument, then instrument again with the content mode asked for)."""
    global _PROVIDER
    from ag2_otel import Ag2Instrumentor

    instrumentor = Ag2Instrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    if config == "none":
        return
    if _PROVIDER is None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

        class Null(SpanExporter):
            def export(self, spans):  # noqa: ANN001
                return SpanExportResult.SUCCESS

        _PROVIDER = TracerProvider()
        _PROVIDER.add_span_processor(SimpleSpanProcessor(Null()))
    instrumentor.instrument(tracer_provider=_PROVIDER,
                            capture_content="SPAN_ONLY" if config == "null+content" else "NO_CONTENT")


def _quiet_stdout():
    real = sys.stdout
    sys.stdout = open(os.devnull, "w")  # AG2 prints tool executions even with silent=True
    return real


def worker(configs: list[str], sizes: list[int], repeat: int) -> dict:
    """All configurations in one process, interleaved run by run: load from other processes hits them alike."""
    sys.path[:0] = [str(REPO), str(HERE)]
    import conversation

    conversation.quiet_ag2()
    real = _quiet_stdout()
    out: dict = {c: {} for c in configs}
    for config in configs:  # imports, first-call caches
        _setup(config)
        conversation.chat(*conversation.build(), 10)
    for n in sizes:
        wall: dict = {c: [] for c in configs}
        cpu: dict = {c: [] for c in configs}
        for r in range(repeat + 1):  # run 0 of each configuration is the warm-up at this size
            for config in configs:
                _setup(config)
                user, assistant = conversation.build()
                gc.collect()
                start, start_cpu = time.perf_counter(), time.process_time()
                conversation.chat(user, assistant, n)
                if r:
                    wall[config].append(time.perf_counter() - start)
                    cpu[config].append(time.process_time() - start_cpu)
        for config in configs:
            out[config][str(n)] = {"best_ms_per_turn": min(wall[config]) * 1000 / n,
                                   "best_cpu_ms_per_turn": min(cpu[config]) * 1000 / n, "all_s": wall[config]}
    _setup("none")
    sys.stdout = real
    return out


def profile(turns: int, runs: int, content: bool, top: int) -> None:
    sys.path[:0] = [str(REPO), str(HERE)]
    import conversation
    from profile_sink import hotspots
    from pyinstrument import Profiler

    conversation.quiet_ag2()
    _setup("null+content" if content else "null-content")
    real = _quiet_stdout()
    conversation.chat(*conversation.build(), turns)  # warm-up
    profiler = Profiler(interval=0.0002)
    started = time.perf_counter()
    profiler.start()
    for _ in range(runs):
        conversation.chat(*conversation.build(), turns)
    profiler.stop()
    wall = time.perf_counter() - started
    sys.stdout = real
    session = profiler.last_session
    root = session.root_frame()
    total = root.time if root is not None else session.duration
    print(f"null sink, content {'on' if content else 'off'}: {runs} x {turns} turns, "
          f"{wall / runs / turns * 1000:.3f} ms/turn (profiled)\n")
    for prefix in ("ag2_otel", "opentelemetry"):
        print(f"{prefix + ' file:function':<78} {'incl %':>7} {'self %':>7}")
        for key, incl, own in hotspots(root, total, prefix)[:top]:
            print(f"{key:<78} {incl:7.1f} {own:7.1f}")
        print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20,100,1000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", help="comma-separated configurations")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-content", action="store_true", help="with --profile: capture off")
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    if args.profile:
        profile(args.turns, args.runs, not args.no_content, args.top)
        return 0
    configs = [c for c in CONFIGS if not args.only or c in args.only.split(",")]
    if "none" not in configs:
        configs.insert(0, "none")
    if args.worker:
        print(json.dumps(worker(args.worker.split(","), sizes, args.repeat)))
        return 0
    print(f"[profile] {','.join(configs)} interleaved, sizes {args.sizes}, best of {args.repeat} ...", file=sys.stderr,
          flush=True)
    load_before = os.getloadavg()[0]
    done = subprocess.run([sys.executable, __file__, "--worker", ",".join(configs), "--sizes", args.sizes,
                           "--repeat", str(args.repeat)], capture_output=True, text=True)
    if done.returncode:
        print(done.stderr, file=sys.stderr)
        return done.returncode
    results = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"best of {args.repeat}, ms/turn (+ overhead vs none); load {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
    for metric, label in (("best_ms_per_turn", "wall time"), ("best_cpu_ms_per_turn", "CPU time of the process")):
        print(f"\n{label}\n")
        print("| config | " + " | ".join(f"{n} turns" for n in sizes) + " | flat (overhead max size / min size) |")
        print("|" + "---|" * (len(sizes) + 2))
        base = results["none"]
        for config in configs:
            cells, overheads = [], []
            for n in sizes:
                ms = results[config][str(n)][metric]
                if config != "none":
                    over = ms - base[str(n)][metric]
                    overheads.append(over)
                    cells.append(f"{ms:.3f} ({over:+.3f})")
                else:
                    cells.append(f"{ms:.3f}")
            flat = f"{overheads[-1] / overheads[0]:.2f}x" if len(overheads) > 1 and overheads[0] > 0 else "-"
            print(f"| {config} | " + " | ".join(cells) + f" | {flat} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
