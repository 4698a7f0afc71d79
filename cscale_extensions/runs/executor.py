"""Execute one run with papermill inside the submitting user's server, detached from it.

``python -m cscale_extensions.runs.executor RUN_DIR --root HOME`` reads ``RUN_DIR/spec.json``
(written by the runs service through the Jupyter contents API) and writes, as the user:

- ``status.json``: state, pid, heartbeat, progress (code cell n of m), error cell; rewritten
  atomically on every change and every few seconds (the heartbeat tells the service it lives);
- ``output.ipynb``: papermill's output notebook, saved after every cell, kept when the run
  fails (the failing cell carries its traceback), is cancelled or times out;
- ``log.txt`` (stdout/stderr, redirected by the launcher): papermill's log with cell outputs.

A ``cancel`` file in RUN_DIR, or the run's timeout, interrupts the kernel (SIGINT, then SIGKILL
after a grace period). A ``claim`` file created exclusively makes a second launch a no-op.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

STATUS = "status.json"
OUTPUT = "output.ipynb"
INPUT = "input.ipynb"
SPEC = "spec.json"
CANCEL = "cancel"
CLAIM = "claim"
HEARTBEAT_SECONDS = 5.0
KILL_GRACE_SECONDS = 5.0


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class Reporter:
    """Keeps status.json current; thread-safe."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / STATUS
        self.lock = threading.Lock()
        self.status: dict[str, Any] = {
            "state": "running",
            "pid": os.getpid(),
            "started": time.time(),
            "heartbeat": time.time(),
            "cell": 0,
            "cells": 0,
            "error": None,
            "message": "",
        }
        self.code_index: dict[int, int] = {}
        self.write()

    def write(self, **changes: Any) -> None:
        with self.lock:
            self.status.update(changes, heartbeat=time.time())
            write_json_atomic(self.path, self.status)

    def plan(self, cells: list[Any]) -> None:
        """Number the code cells of the (parameterised) notebook for progress."""
        n = 0
        for i, cell in enumerate(cells):
            if cell.get("cell_type") == "code":
                n += 1
                self.code_index[i] = n
        self.write(cells=n)

    def cell_started(self, index: int | None) -> None:
        if index in self.code_index:
            self.write(cell=self.code_index[index])


class Watchdog(threading.Thread):
    """Heartbeat; interrupts, then kills, the kernel on cancel or timeout."""

    def __init__(self, run_dir: Path, reporter: Reporter, timeout: float):
        super().__init__(daemon=True)
        self.run_dir = run_dir
        self.reporter = reporter
        self.timeout = timeout
        self.reason: str | None = None
        self.stopped = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        last_beat = 0.0
        signalled_at = 0.0
        while not self.stopped.wait(0.5):
            now = time.monotonic()
            if self.reason is None:
                if (self.run_dir / CANCEL).exists():
                    self.reason = "cancelled"
                elif self.timeout and now - start > self.timeout:
                    self.reason = "timeout"
                if self.reason:
                    logging.getLogger("cscale.runs").warning("run %s: stopping", self.reason)
                    self.reporter.write(message=f"{self.reason}: interrupting the kernel")
                    self._signal_kernels(signal.SIGINT)
                    signalled_at = now
            elif signalled_at and now - signalled_at > KILL_GRACE_SECONDS:
                self._signal_kernels(signal.SIGKILL)
                signalled_at = 0.0
            if now - last_beat >= HEARTBEAT_SECONDS:
                self.reporter.write()
                last_beat = now

    @staticmethod
    def _signal_kernels(sig: int) -> None:
        import psutil

        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.send_signal(sig)


def _engine(reporter: Reporter):
    """A papermill engine that reports progress to ``reporter``."""
    from papermill.engines import NBClientEngine

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            reporter.plan(nb_man.nb.cells)
            start = nb_man.cell_start

            def cell_start(cell, cell_index=None, **kw):
                start(cell, cell_index, **kw)
                reporter.cell_started(cell_index)

            nb_man.cell_start = cell_start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    return ProgressEngine


def _inside(root: Path, rel: str) -> Path:
    path = (root / rel).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"{rel!r} is outside the home directory")
    return path


def execute(run_dir: Path, root: Path) -> str:
    """Run the spec in ``run_dir``; return the final state."""
    try:
        fd = os.open(run_dir / CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        print("run already claimed by another executor; nothing to do", flush=True)
        return "claimed"
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    reporter = Reporter(run_dir)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s"
    )
    watchdog: Watchdog | None = None
    try:
        spec = json.loads((run_dir / SPEC).read_text())
        if spec.get("notebook") is not None:
            (run_dir / INPUT).write_text(json.dumps(spec["notebook"]))
            source = run_dir / INPUT
            cwd = run_dir
        else:
            source = _inside(root, spec["path"])
            cwd = source.parent
        if spec.get("cwd"):
            cwd = _inside(root, spec["cwd"])
        watchdog = Watchdog(run_dir, reporter, float(spec.get("timeout") or 0))
        watchdog.start()
        # jsonschema imports the optional rfc3987_syntax (it builds a grammar: ~3 s) for an
        # "iri" format check that notebook validation never uses; skip it, like a missing extra
        sys.modules.setdefault("rfc3987_syntax", None)
        import papermill
        from papermill.engines import papermill_engines
        from papermill.exceptions import PapermillExecutionError

        papermill_engines.register("cscale-progress", _engine(reporter))
        try:
            papermill.execute_notebook(
                str(source),
                str(run_dir / OUTPUT),
                parameters=spec.get("parameters") or {},
                engine_name="cscale-progress",
                kernel_name=spec.get("kernel_name") or None,
                cwd=str(cwd),
                progress_bar=False,
                log_output=True,
                request_save_on_cell_execute=True,
                execution_timeout=spec.get("cell_timeout") or None,
            )
            state, error, message = "succeeded", None, ""
        except PapermillExecutionError as exc:
            state = watchdog.reason or "failed"
            error = {
                "cell": exc.cell_index,
                "exec_count": exc.exec_count,
                "ename": exc.ename,
                "evalue": exc.evalue,
            }
            message = f"{exc.ename}: {exc.evalue}"
        except Exception as exc:  # kernel died, bad notebook, missing kernel …
            state = watchdog.reason or "failed"
            error = {"cell": None, "ename": type(exc).__name__, "evalue": str(exc)}
            message = f"{type(exc).__name__}: {exc}"
    except Exception as exc:
        state, error, message = (
            "failed",
            {"cell": None, "ename": type(exc).__name__, "evalue": str(exc)},
            f"{type(exc).__name__}: {exc}",
        )
    finally:
        if watchdog:
            watchdog.stopped.set()
    if state == "timeout":
        message = "the run exceeded its timeout; " + message
    reporter.write(state=state, error=error, message=message, finished=time.time())
    print(f"run finished: {state} {message}", flush=True)
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cscale_extensions.runs.executor")
    parser.add_argument("run_dir")
    parser.add_argument("--root", default=None, help="home directory (default: RUN_DIR/../..)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir).resolve()
    root = Path(args.root).resolve() if args.root else run_dir.parent.parent
    state = execute(run_dir, root)
    return 0 if state in ("succeeded", "claimed") else 1


if __name__ == "__main__":
    sys.exit(main())
