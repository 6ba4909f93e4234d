"""What ``AG2_OTEL_OTLP_MLFLOW`` costs on the wire: OTLP protobuf bytes per span, plain GenAI spans vs the same spans
with MLflow's keys (``MlflowKeysExporter``), for the calculator chat (AG2's OpenAIClient over HTTP to the scripted
local model), content capture on and off; then the CPU the wrapper spends per span (on the batch span processor's
thread, not the agents'), mapping the same trace again and again.

    python benchmarks/otlp_mlflow_bytes.py
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from ag2_otel import Ag2Instrumentor  # noqa: E402
from ag2_otel.sinks.otlp_mlflow import MlflowKeysExporter, enrich  # noqa: E402


class _Collect(InMemorySpanExporter):
    def export(self, spans):
        super().export(spans)
        return SpanExportResult.SUCCESS


def _spans(capture: bool):
    from tests.test_instrumentation_basic import CALCULATOR_SCRIPT, make_calculator_agents

    plain, keyed = _Collect(), _Collect()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(plain))
    provider.add_span_processor(SimpleSpanProcessor(MlflowKeysExporter(keyed)))
    instrumentor = Ag2Instrumentor()
    instrumentor.instrument(tracer_provider=provider, capture_content=capture)
    try:
        user, assistant = make_calculator_agents(CALCULATOR_SCRIPT)
        user.initiate_chat(assistant, message="What is (44232 + 13312 / (232 - 32)) * 5?", max_turns=10, silent=True)
    finally:
        instrumentor.uninstrument()
    provider.shutdown()
    return plain.get_finished_spans(), keyed.get_finished_spans()


def _size(span) -> int:
    return len(encode_spans([span]).SerializeToString())


def main() -> None:
    print("| content | span | spans | plain bytes/span | with MLflow keys | added | added % |")
    print("|---|---|---:|---:|---:|---:|---:|")
    cpu: dict[bool, float] = {}
    for capture in (True, False):
        plain, keyed = _spans(capture)
        by_kind: dict[str, list[tuple[int, int]]] = defaultdict(list)
        keyed_by_id = {s.context.span_id: s for s in keyed}
        for span in plain:
            kind = "root" if span.parent is None else span.name.split(" ")[0]
            by_kind[kind].append((_size(span), _size(keyed_by_id[span.context.span_id])))
        by_kind["all"] = [pair for pairs in list(by_kind.values()) for pair in pairs]
        for kind, pairs in by_kind.items():
            before = sum(p for p, _ in pairs) / len(pairs)
            after = sum(k for _, k in pairs) / len(pairs)
            print(f"| {'on' if capture else 'off'} | {kind} | {len(pairs)} | {before:.0f} | {after:.0f} | "
                  f"{after - before:+.0f} | {100 * (after - before) / before:+.0f}% |")
        cpu[capture] = _cpu_per_span(plain)
    print()
    print("| content | CPU per span (enrich, best of 5 x 200 traces) |")
    print("|---|---:|")
    for capture, micros in cpu.items():
        print(f"| {'on' if capture else 'off'} | {micros:.0f} µs |")


def _cpu_per_span(spans) -> float:
    import time

    root = next(s for s in spans if s.parent is None)
    rest = [s for s in spans if s is not root]
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(200):
            enrich(rest, root)
        best = min(best, time.process_time() - started)
    return best / (200 * len(spans)) * 1e6


if __name__ == "__main__":
    main()
