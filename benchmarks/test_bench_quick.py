"""CI smoke test: the benchmark still runs end to end at tiny sizes (``bench.py --quick``) and prints its table.

Not collected by the default ``pytest`` run (testpaths = tests); CI runs it explicitly::

    python -m pytest benchmarks/test_bench_quick.py

Targets are reported, never asserted: the timings of a shared CI machine are not a unit test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent / "bench.py"


@pytest.mark.timeout(600)
def test_quick_benchmark_runs(tmp_path):
    out_json = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out_json)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=590)
    assert done.returncode == 0, done.stdout[-3000:] + "\n" + done.stderr[-5000:]
    table = done.stdout
    for heading in ("| configuration |", "## Export into a fresh local MLflow store", "## Peak RSS", "## Targets"):
        assert heading in table, table
    for label in ("no tracing", "ag2-otel, null sink", "ag2-otel, MLflow sink (autolog: writer process)", "ag2-otel, MLflow sink in-process (old)",
                  "ag2-otel, OTLP/gRPC to rotel", "AG2 own otel, null exporter", "mlflow.ag2.autolog async",
                  "mlflow.ag2.autolog sync"):
        assert f"| {label} | 10 |" in table, label
    assert "not measured" not in table, table
    assert "PASS" in table or "MISS" in table
