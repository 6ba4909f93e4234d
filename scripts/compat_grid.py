#!/usr/bin/env python3
"""The whole compatibility grid: each AG2 classic minor 0.9 → 0.14 under each distribution name it is published as,
× MLflow 3.1, 3.5, 3.10 and the newest (each at its last patch), the seed (tests/test_seed.py: the calculator example
through ag2_otel.autolog(), sync and async, exact totals read back right after the chat) in every cell. Prints the
markdown table the README shows.

    .venv/bin/python scripts/compat_grid.py [--out FILE] [--budget SECONDS] [--server] [--only SUBSTRING]

Not run in CI (it takes hours on the 2-core box): .ci/run runs three cells of it on every run. One venv per AG2 row
(``.venv-grid-<dist>-<version>``, kept for the next run); the MLflow versions are installed into it oldest first
(MLflow < 3.6 with SQLAlchemy < 2.1: those releases do not import with SQLAlchemy 2.1). ``autogen`` 0.9 → 0.14.0 and
``ag2==0.9`` are metapackages (``autogen==X`` requires ``ag2==X``; ``autogen/ag2==0.9`` require ``pyautogen==0.9``):
one venv tests the files both names install, and the row says so. A cell is ``pass``, ``FAIL: <first failure>`` or
``not installable: <pip's reason>``. ``--server`` adds the seed against a real ``mlflow server`` (+~30 s per cell).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import venvs  # noqa: E402

MLFLOW_MINORS = ("3.1", "3.5", "3.10", "newest")
# (distribution, minor): the newest patch of that minor is looked up with `pip index versions`
AG2_ROWS = (
    ("pyautogen", "0.9"),
    ("ag2", "0.9.1.post0"),  # exact: the oldest ag2 that ships its own files (CI cell b)
    ("autogen", "0.9"),
    ("autogen", "0.10"),
    ("autogen", "0.11"),
    ("autogen", "0.12"),
    ("autogen", "0.13"),
    ("ag2", "0.14"),
    ("autogen", "0.14"),
)
SQLALCHEMY_PIN = "sqlalchemy<2.1"  # MLflow < 3.6 fails to import with SQLAlchemy >= 2.1


def _vkey(v: str) -> tuple:
    return tuple(int(p) for p in re.findall(r"\d+", v))


def published(name: str) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "pip", "index", "versions", name], capture_output=True, text=True,
                          timeout=300)
    match = re.search(r"Available versions: (.*)", done.stdout)
    if not match:
        raise RuntimeError(f"pip index versions {name}: {done.stdout[-500:]} {done.stderr[-500:]}")
    return [v.strip() for v in match.group(1).split(",")]


def newest_mlflow(mlflow_versions: list[str]) -> str | None:
    """The newest full release whose mlflow-skinny of the same version is published (mlflow==X requires
    mlflow-skinny==X: a release whose skinny part is not out yet cannot be installed)."""
    skinny = set(published("mlflow-skinny"))
    return newest_of([v for v in mlflow_versions if v in skinny], "newest")


def newest_of(versions: list[str], minor: str) -> str | None:
    if re.fullmatch(r"\d+\.\d+\.\d+.*", minor):
        return minor if minor in versions else None
    if minor == "newest":
        final = [v for v in versions if re.fullmatch(r"[\d.]+", v)]
        return max(final, key=_vkey) if final else None
    mine = [v for v in versions if v == minor or v.startswith(minor + ".")]
    return max(mine, key=_vkey) if mine else None


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "is ignored: it is neither" not in ln]
    for ln in lines:
        if ln.startswith("ERROR:"):
            return ln[6:].strip()[:160]
    return (lines[-1] if lines else "no output")[:160]


def _pip(venv: Path, *args: str, timeout: float = 2400) -> tuple[bool, str]:
    done = subprocess.run([venvs.python(venv), "-m", "pip", "--disable-pip-version-check", "install", "-q", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PIP_PROGRESS_BAR": "off"})
    return done.returncode == 0, _last_error(done.stderr + "\n" + done.stdout)


def _seed(venv: Path, server: bool, timeout: float) -> str:
    selection = [] if server else ["-k", "local"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AG2_OTEL_", "MLFLOW_"))}
    try:
        done = subprocess.run([venvs.python(venv), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                               "tests/test_seed.py", *selection], capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return f"FAIL: seed still running after {timeout:.0f} s"
    out = done.stdout
    if done.returncode == 0 and re.search(r"\d+ passed", out) and "failed" not in out.splitlines()[-1]:
        return "pass"
    # the first `E ` line of the first failure, else pytest's summary line
    reason = next((ln[1:].strip() for ln in out.splitlines() if ln.startswith("E ")), None)
    reason = reason or (out.strip().splitlines() or ["no output"])[-1]
    return "FAIL: " + reason.replace("|", "\\|")[:160]


def _versions(venv: Path) -> dict[str, str]:
    return venvs.installed(venv)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    parser.add_argument("--budget", type=float, default=6 * 3600, help="stop starting new cells after this many s")
    parser.add_argument("--cell-timeout", type=float, default=900, help="seconds for one seed run")
    parser.add_argument("--server", action="store_true", help="also run the seed against a real mlflow server")
    parser.add_argument("--only", help="only AG2 rows whose requirement contains this")
    parser.add_argument("--mlflow", help="comma list of MLflow columns instead of 3.1,3.5,3.10,newest")
    args = parser.parse_args()
    started = time.monotonic()

    mlflow_all = published("mlflow")
    columns = tuple(args.mlflow.split(",")) if args.mlflow else MLFLOW_MINORS
    mlflow_versions = {minor: newest_mlflow(mlflow_all) if minor == "newest" else newest_of(mlflow_all, minor)
                       for minor in columns}
    cache: dict[str, list[str]] = {}
    rows: list[tuple[int, str, dict[str, str]]] = []
    # the ends of the range first (a bounded run still says the most), printed in AG2_ROWS order
    order = sorted(range(len(AG2_ROWS)), key=lambda i: (i not in (0, 1, len(AG2_ROWS) - 1), -i))
    for index in order:
        dist, minor = AG2_ROWS[index]
        cache.setdefault(dist, published(dist))
        ag2_version = newest_of(cache[dist], minor)
        requirement = f"{dist}=={ag2_version}" if ag2_version else f"{dist}~={minor}"
        if args.only and args.only not in requirement:
            continue
        cells: dict[str, str] = {}
        label = requirement
        if ag2_version is None:
            rows.append((index, label, {m: f"not installable: no {dist} {minor}.x published" for m in columns}))
            continue
        if time.monotonic() - started > args.budget:
            rows.append((index, label, {m: "not run (grid time budget spent)" for m in columns}))
            continue
        venv = ROOT / f".venv-grid-{dist}-{ag2_version}"
        if not Path(venvs.python(venv)).exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        for minor_m in columns:
            mlflow_version = mlflow_versions[minor_m]
            if time.monotonic() - started > args.budget:
                cells[minor_m] = "not run (grid time budget spent)"
                continue
            if mlflow_version is None:
                cells[minor_m] = f"not installable: no mlflow {minor_m}.x published"
                continue
            pins = [requirement, f"mlflow=={mlflow_version}"]
            if _vkey(mlflow_version) < (3, 6):
                pins.append(SQLALCHEMY_PIN)
            ok, why = _pip(venv, "-e", f"{ROOT}[test]", *pins)
            if not ok:
                cells[minor_m] = f"not installable: {why}".replace("|", "\\|")
                continue
            have = _versions(venv)
            via = [f"{n} {have[n]}" for n in ("ag2", "pyautogen") if n in have and n != dist]
            if via:
                label = f"{requirement} (installs {', '.join(via)})"
            t0 = time.monotonic()
            cells[minor_m] = _seed(venv, args.server, args.cell_timeout)
            print(f"  {requirement} × mlflow {mlflow_version}: {cells[minor_m]} ({time.monotonic() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
        rows.append((index, label, cells))

    header = "| AG2 classic install | " + " | ".join(
        f"MLflow {mlflow_versions[m] or m}" for m in columns) + " |"
    lines = [header, "|---|" + "---|" * len(columns)]
    for _index, label, cells in sorted(rows):
        lines.append(f"| `{label}` | " + " | ".join(cells.get(m, "") for m in columns) + " |")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    what = "seed sync+async, local sqlite store" + (" and mlflow server" if args.server else "")
    lines.append("")
    lines.append(f"scripts/compat_grid.py, {datetime.date.today()}, commit {commit.strip()}: {what}; "
                 f"{time.monotonic() - started:.0f} s.")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0 if all(c == "pass" for _, _, cells in rows for c in cells.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
