"""Virtual environments built from scratch for the install tests (tests/test_install.py) and the compatibility grid
(scripts/compat_grid.py): each is cached as ``.venv-<tag>-<key>`` in the repository root, the key a hash of its
requirement set (and of pyproject.toml and the Python version when ag2-otel itself is in it), so CI builds each once
per run and a developer's second run reuses it.

``ensure(tag, requirements)`` returns a ready venv holding exactly what those requirements resolve to (plus
``packaging``). ``reset(venv)`` uninstalls whatever was added after it was built (a test that installs ag2-otel into
a base venv starts again from the base)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parent.parent
REPO = "<repo>"  # stands for the ag2-otel checkout in a requirement list (a real, non-editable install of it)
BUILD_TIMEOUT_S = 1800.0
_READY = "ag2-otel-venv.json"


def _key(requirements: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(sys.version.encode())
    for requirement in requirements:
        h.update(requirement.encode() + b"\n")
        if requirement.startswith(REPO):
            h.update((ROOT / "pyproject.toml").read_bytes())
    return h.hexdigest()[:10]


def path_for(tag: str, requirements: Sequence[str]) -> Path:
    return ROOT / f".venv-{tag}-{_key(requirements)}"


def python(venv: Path) -> str:
    return str(venv / "bin" / "python")


def _resolve(requirement: str) -> str:
    return str(ROOT) + requirement[len(REPO):] if requirement.startswith(REPO) else requirement


def pip(venv: Path, *args: str, timeout: float = BUILD_TIMEOUT_S) -> subprocess.CompletedProcess:
    """``python -m pip ARGS`` in the venv; raises with pip's output when it fails."""
    done = subprocess.run([python(venv), "-m", "pip", "--disable-pip-version-check", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PIP_PROGRESS_BAR": "off"})
    if done.returncode != 0:
        raise RuntimeError(f"pip {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")
    return done


def installed(venv: Path) -> dict[str, str]:
    """Canonical distribution name -> version of everything in the venv."""
    listing = json.loads(pip(venv, "list", "--format", "json", timeout=300).stdout)
    return {canonical(d["name"]): d["version"] for d in listing}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def ensure(tag: str, requirements: Sequence[str]) -> Path:
    """The venv for this requirement set, built on first use (one ``pip install`` of them all, so pip resolves them
    together as a user's single command would)."""
    venv = path_for(tag, requirements)
    ready = venv / _READY
    if ready.exists() and Path(python(venv)).exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    try:
        if requirements:
            pip(venv, "install", "-q", *[_resolve(r) for r in requirements])
        ready.write_text(json.dumps({"requirements": list(requirements), "installed": installed(venv)}, indent=1))
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)  # never leave a half-built venv that looks ready
        raise
    return venv


def base_set(venv: Path) -> dict[str, str]:
    return json.loads((venv / _READY).read_text())["installed"]


def reset(venv: Path) -> None:
    """Back to what the venv held when it was built: uninstall what was added since (versions changed since the
    build are reported by the caller's own assertions, which compare against :func:`base_set`)."""
    added = sorted(set(installed(venv)) - set(base_set(venv)))
    if added:
        pip(venv, "uninstall", "-y", "-q", *added, timeout=600)


def run(venv: Path, code: str, *, env: dict[str, str] | None = None, timeout: float = 600.0,
        args: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """Run ``code`` with the venv's Python, ag2-otel imported from this checkout (PYTHONPATH), in a scratch working
    directory so no stray mlflow.db lands in the repository."""
    scratch = venv / "scratch"
    scratch.mkdir(exist_ok=True)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AG2_OTEL_", "MLFLOW_"))}
    full_env.update({"PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_MODEL_CATALOG_URI": "",
                     "PYTHONUNBUFFERED": "1"})
    full_env.update(env or {})
    return subprocess.run([python(venv), "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=scratch, env=full_env)
