#!/usr/bin/env python3
"""Open the demo's calculator trace in MLflow's own trace UI in headless Chromium and save PNGs (issue #10, part 6).

What it does, end to end, with real components only:

1. runs ``ag2-otel demo`` in a fresh temp dir (it writes ``./mlflow.db``, experiment ``ag2-otel-demo``), unless
   ``--store DIR`` names a directory that already holds an ``mlflow.db``;
2. starts ``mlflow ui --backend-store-uri sqlite:///DIR/mlflow.db --workers 1`` on a free port (or uses
   ``--server-url``) and waits until ``/health`` answers;
3. reads the trace (default: the first with a TOOL span; or ``--trace-id``) and its span ids with ``MlflowClient``;
4. opens ``#/experiments/<id>/traces?selectedEvaluationId=<trace id>&traceId=<trace id>`` (the URL MLflow 3.17's
   "View trace" links build) in Debian's ``/usr/bin/chromium`` driven by playwright, waits for the span tree, clicks
   spans by their ``timeline-tree-node-<span id>`` test id and saves a PNG per view: the root, the first and the last
   chat span (the last one also scrolled to its output), a tool span, and that tool span's output in JSON mode.

For each view it prints whether MLflow rendered the span's Inputs and Outputs "as chat" (MLflow 3.17's trace drawer
has no separate Chat tab: its "Pretty" mode shows one card per message, headed by the role, when its message parser
recognises the value, and the raw keys as YAML otherwise), whether a Chat tab exists (older UIs), and the text shown.

Needs the ``playwright`` Python package (only its driver: no browser download; it runs ``/usr/bin/chromium``) in a
venv of its own, and MLflow + ag2-otel in the project's venv:

    apt-get install -y chromium
    python3 -m venv .venv-ui && .venv-ui/bin/pip install playwright
    .venv-ui/bin/python scripts/mlflow_ui_screenshots.py            # PNGs into docs/screenshots/

Options: ``--out DIR``, ``--store DIR`` (an existing store), ``--experiment NAME``, ``--trace-id ID``,
``--server-url URL`` (a running ``mlflow ui``), ``--mlflow-python PATH`` (default ``.venv/bin/python`` of this
repo), ``--timeout S`` (per wait, default 300: on a busy 2-core box ``mlflow ui`` needs ~100 s to answer).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [  # --headless and --user-data-dir are passed by playwright (headless=True, a fresh profile dir)
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 1000}
EXPERIMENT = "ag2-otel-demo"
# MLflow 3.17's UI opens its assistant panel and two guidance popovers on a first visit from localhost; they sit
# over the trace drawer (which is modal: they cannot be clicked away). Its useLocalStorage hook stores `<key>_v<n>`:
# mark them as already seen before the app starts.
SEEN = {
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
    "mlflow.assistant.panelOpen_v1": "false",
    "mlflow.detectIssues.guidanceShown_v1": "true",
    "mlflow.flagForReview.guidanceShown_v1": "true",
}

# Runs in the MLflow venv: the calculator trace and its spans, as JSON on stdout.
_READ_TRACE = r"""
import json, sys
import mlflow
from mlflow import MlflowClient
mlflow.set_tracking_uri(sys.argv[1])
client = MlflowClient()
exp = client.get_experiment_by_name(sys.argv[2])
traces = client.search_traces(locations=[exp.experiment_id])
out = []
for t in traces:
    spans = [{"span_id": s.span_id, "parent_id": s.parent_id, "name": s.name, "type": s.span_type,
              "outputs": s.outputs, "start": s.start_time_ns} for s in t.data.spans]
    out.append({"trace_id": t.info.trace_id, "spans": sorted(spans, key=lambda s: s["start"])})
print(json.dumps({"experiment_id": exp.experiment_id, "traces": out}, default=str))
"""


def log(msg: str) -> None:
    print(f"[ui-shots] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str, interval: float = 0.5):
    """Poll ``check()`` until it returns a truthy value; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)  # polling interval of a condition wait with a deadline, not a synchronisation sleep


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def run_demo(workdir: Path, mlflow_python: Path) -> None:
    ag2_otel = mlflow_python.parent / "ag2-otel"
    cmd = [str(ag2_otel), "demo"] if ag2_otel.exists() else [str(mlflow_python), "-m", "ag2_otel.cli", "demo"]
    log(f"running {' '.join(cmd)} in {workdir}")
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    (workdir / "demo.out").write_text(result.stdout + result.stderr)
    if result.returncode != 0 or not (workdir / "mlflow.db").exists():
        sys.exit(f"demo failed (rc {result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def start_ui(db: Path, mlflow_python: Path, port: int, logfile: Path) -> subprocess.Popen:
    mlflow_cli = mlflow_python.parent / "mlflow"
    # --workers 1: uvicorn's multi-worker supervisor kills workers that miss its health check, which they do on a
    # loaded 2-core box while still importing MLflow.
    cmd = [str(mlflow_cli), "ui", "--backend-store-uri", f"sqlite:///{db}", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    log(f"starting {' '.join(cmd)}")
    out = open(logfile, "w")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=db.parent, start_new_session=True)


def stop_ui(proc: subprocess.Popen) -> None:
    """Stop the server we started: its own process group (mlflow ui -> uvicorn, job runner)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    try:  # uvicorn can linger on its children: make sure the group is gone
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def read_trace(db: Path, mlflow_python: Path, experiment: str, trace_id: str | None) -> tuple[str, dict]:
    result = subprocess.run([str(mlflow_python), "-c", _READ_TRACE, f"sqlite:///{db}", experiment],
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"could not read the traces:\n{result.stderr[-3000:]}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    if trace_id:
        chosen = [t for t in data["traces"] if t["trace_id"] == trace_id]
    else:  # the calculator chat: the trace with tool spans
        chosen = [t for t in data["traces"] if any(s["type"] == "TOOL" for s in t["spans"])]
    if not chosen:
        sys.exit(f"no such trace in experiment {experiment!r}: {trace_id or 'one with a TOOL span'}")
    return data["experiment_id"], chosen[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    ap.add_argument("--store", type=Path, help="directory holding an mlflow.db (default: run the demo in a temp dir)")
    ap.add_argument("--experiment", default=EXPERIMENT, help=f"experiment name (default {EXPERIMENT!r})")
    ap.add_argument("--trace-id", help="trace to open (default: the first trace with a TOOL span)")
    ap.add_argument("--server-url", help="a running `mlflow ui` serving that store (default: start one)")
    ap.add_argument("--mlflow-python", type=Path, default=ROOT / ".venv" / "bin" / "python")
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("needs playwright: python3 -m venv .venv-ui && .venv-ui/bin/pip install playwright")
    if not os.path.exists(CHROMIUM):
        sys.exit(f"needs Debian's chromium at {CHROMIUM}: apt-get install -y chromium")

    tmp = Path(tempfile.mkdtemp(prefix="ag2-otel-ui-"))
    server = None
    try:
        store = args.store.resolve() if args.store else tmp
        if not args.store:
            run_demo(tmp, args.mlflow_python)
        db = store / "mlflow.db"
        experiment_id, trace = read_trace(db, args.mlflow_python, args.experiment, args.trace_id)
        trace_id = trace["trace_id"]
        spans = trace["spans"]
        log(f"trace {trace_id} (experiment {experiment_id}), {len(spans)} spans")

        base = args.server_url
        if not base:
            port = free_port()
            server = start_ui(db, args.mlflow_python, port, tmp / "mlflow-ui.log")
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: server.poll() is not None or http_ok(f"{base}/health"), args.timeout, "mlflow ui")
            if server.poll() is not None:
                sys.exit(f"mlflow ui exited:\n{(tmp / 'mlflow-ui.log').read_text()[-3000:]}")
        log(f"mlflow ui answers at {base}")

        root = next(s for s in spans if s["parent_id"] is None)
        chats = [s for s in spans if s["type"] == "CHAT_MODEL"]
        tools = [s for s in spans if s["type"] == "TOOL"]
        # (png, span, what, extra step)
        views = [("01-trace-root.png", root, "the trace tree, root span selected", None)]
        if chats:
            views.append(("02-chat-first-call.png", chats[0], "first chat span (its Inputs / Outputs)", None))
        if len(chats) > 1:
            views.append(("03-chat-last-call.png", chats[-1], "last chat span: the conversation so far", None))
            views.append(("03b-chat-last-call-answer.png", chats[-1], "last chat span, scrolled to its output",
                          "scroll-to-outputs"))
        if tools:
            views.append(("04-tool-span.png", tools[0], "a TOOL span, Pretty rendering", None))
            views.append(("05-tool-span-json.png", tools[0], "the same TOOL span, outputs in JSON mode",
                          "outputs-json"))
        args.out.mkdir(parents=True, exist_ok=True)
        url = f"{base}/#/experiments/{experiment_id}/traces?selectedEvaluationId={trace_id}&traceId={trace_id}"
        report = []
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                str(tmp / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport=VIEWPORT)
            ctx.set_default_timeout(args.timeout * 1000)
            ctx.add_init_script("".join(f"localStorage.setItem({k!r}, {v!r});" for k, v in SEEN.items()))
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            log(f"opening {url}")
            page.goto(url, wait_until="commit")
            page.get_by_test_id(f"timeline-tree-node-{root['span_id']}").wait_for(state="visible")
            current = None
            for filename, span, what, step in views:
                if span is not current:
                    shown = show_span(page, span, args.timeout)
                    current = span
                if step == "scroll-to-outputs":
                    page.get_by_test_id("model-trace-explorer-output-section-toggle").scroll_into_view_if_needed()
                elif step == "outputs-json":
                    shown = outputs_as_json(page, args.timeout)
                path = args.out / filename
                page.screenshot(path=str(path))
                report.append({"png": str(path), "span": span["name"], "type": span["type"], "view": what, **shown,
                               "kb": path.stat().st_size // 1024})
                log(f"{path.name}: {span['name']} ({span['type']}); inputs as chat: {shown['inputs_as_chat']}, "
                    f"outputs as chat: {shown['outputs_as_chat']}, Chat tab: {shown['chat_tab']}; "
                    f"{path.stat().st_size // 1024} KB")
            ctx.close()
        print(json.dumps({"trace_id": trace_id, "url": url, "views": report}, indent=2))
        return 0
    finally:
        if server is not None:
            stop_ui(server)
        shutil.rmtree(tmp, ignore_errors=True)


def _panel_text(page) -> str:
    panels = page.locator('[role="tabpanel"][data-state="active"]')
    try:
        return panels.last.inner_text(timeout=2000) if panels.count() else ""
    except Exception:  # detached while React re-renders: read again at the next poll
        return ""


def _settled(page, timeout: float, what: str, ready) -> str:
    """Wait until the active tab panel satisfies ``ready(text)`` and reads the same on two polls in a row."""
    last = [None]

    def check():
        text = _panel_text(page)
        ok = bool(text) and ready(text) and text == last[0]
        last[0] = text
        return text if ok else None

    return wait_until(check, timeout, what)


ROLE_LABELS = ("System", "User", "Assistant", "Tool")


def _section(page, which: str) -> tuple[str | None, str]:
    """(render mode, text) of the span view's Inputs or Outputs section; (None, "") when the span has none.

    MLflow 3.17 renders a section "as chat" (one card per message, headed by its role) when its message parser
    recognises the value; otherwise it shows the value's keys (e.g. ``messages``) with YAML-like bodies.
    """
    toggle = page.get_by_test_id(f"model-trace-explorer-{which}-section-toggle")
    if not toggle.count():
        return None, ""
    section = toggle.first.locator("xpath=../..")
    lines = [ln.strip() for ln in section.inner_text().splitlines() if ln.strip()]
    mode = lines[1] if len(lines) > 1 else None  # "Inputs", then the render-mode button (Pretty / YAML / JSON)
    return mode, "\n".join(lines[2:])


def _describe(page, chat_tab: bool) -> dict:
    in_mode, inputs = _section(page, "input")
    out_mode, outputs = _section(page, "output")
    first = lambda text: text.split("\n", 1)[0] if text else ""  # noqa: E731
    return {
        "chat_tab": chat_tab,
        "inputs_as_chat": in_mode == "Pretty" and first(inputs) in ROLE_LABELS,
        "outputs_as_chat": out_mode == "Pretty" and first(outputs) in ROLE_LABELS,
        "inputs_text": inputs[:1500],
        "outputs_text": outputs[:1500],
    }


def show_span(page, span: dict, timeout: float) -> dict:
    """Select ``span`` in the tree (and its Chat tab, where the UI has one); describe what the span pane shows."""
    before = _panel_text(page)
    node = page.get_by_test_id(f"timeline-tree-node-{span['span_id']}")
    node.scroll_into_view_if_needed()
    node.click()
    # The pane's header names the selected span (span[title=name]); several chat spans share a name, so also wait
    # for the panel to change (the root is selected on open: it is the first view and needs no change).
    page.locator(f'span[title="{span["name"]}"]').first.wait_for(state="visible")
    first = span["parent_id"] is None
    _settled(page, timeout, f"the span pane of {span['name']}", lambda t: first or t != before)
    # MLflow 3.17's trace drawer renders chat inline in Inputs / Outputs; older UIs (and its legacy right pane)
    # have a separate "Chat" tab, shown only when the UI parsed the span's messages.
    chat_tab = page.get_by_role("tab", name="Chat", exact=True)
    has_chat_tab = chat_tab.count() > 0
    if has_chat_tab:
        chat_tab.first.click()
        _settled(page, timeout, f"the Chat tab of {span['name']}", lambda t: "Messages" in t)
    return _describe(page, has_chat_tab)


def outputs_as_json(page, timeout: float) -> dict:
    """Switch the Outputs section to JSON: shows whether a value is a string ("200") or a number (200)."""
    page.locator('[data-component-id="shared.model-trace-explorer.default-span-view.render-mode"]').last.click()
    page.get_by_role("menuitemradio", name="JSON", exact=True).click()
    wait_until(lambda: _section(page, "output")[0] == "JSON", timeout, "the Outputs section in JSON mode")
    _settled(page, timeout, "the Outputs section in JSON mode", lambda t: True)
    return _describe(page, False)


if __name__ == "__main__":
    sys.exit(main())
