"""Execute one run with papermill inside the submitting user's server, detached from it.

``python -m cscale_extensions.services.runs.executor RUN_DIR --root HOME`` reads ``RUN_DIR/spec.json``
(written by the runs service through the Jupyter contents API) and writes, as the user:

- ``status.json``: state, pid, heartbeat, progress (code cell n of m), error cell; rewritten
  atomically on every change and every few seconds (the heartbeat tells the service it lives);
- ``output.ipynb``: papermill's output notebook, saved after every cell, kept when the run
  fails (the failing cell carries its traceback), is cancelled or times out;
- ``log.txt`` (stdout/stderr, redirected by the launcher): papermill's log with cell outputs.

A ``cancel`` file in RUN_DIR, or the run's timeout, interrupts the kernel (SIGINT, then SIGKILL
after a grace period); the file's first line (the service writes why) starts the message.
Started by Slurm (a run on an HPC site, see :mod:`.slurmjobs`), the executor also takes
SIGTERM — Slurm's notice at ``scancel`` or at the walltime — as the end of the run:
``cancelled`` (a ``cancel`` file is there, or no walltime was near) or ``timeout``, with the
output notebook kept, instead of dying without a final status (the service then records the
state Slurm gives the job: its own guess is only a fallback). A ``claim`` file created
exclusively makes a second launch a no-op.

A full disk loses nothing already written: every save of the output notebook goes to a
temporary file that replaces the previous save only when complete, and a small reserve file
made at the start is given up so the final status (``failed``, "the disk is full …") can
still be written. While it runs the executor keeps a marker in ``runs/.active`` (see
:mod:`.active`) so the idle culler does not stop its server.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cscale_extensions import fastimport
from cscale_extensions.services.runs.active import marked

STATUS = "status.json"
OUTPUT = "output.ipynb"
INPUT = "input.ipynb"
SPEC = "spec.json"
#: what the service writes into spec.json of every run (+ "walltime" on a Slurm site)
SPEC_KEYS = ("id", "notebook", "path", "parameters", "timeout", "kernel_name", "cwd")
CANCEL = "cancel"
CLAIM = "claim"
RESERVE = ".reserve"
RESERVE_BYTES = 64 * 1024
HEARTBEAT_SECONDS = 5.0
KILL_GRACE_SECONDS = 5.0
#: longest message / exception value written to status.json (the service reads at most this)
TEXT_MAX = 8000


def clip(text: str, limit: int = TEXT_MAX) -> str:
    """``text`` cut to ``limit`` characters (a long exception message stays readable)."""
    return text if len(text) <= limit else text[: limit - 20] + " … (truncated)"


def replace_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``:
    a failure (e.g. a full disk) leaves the previous content of ``path`` as it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    replace_text(path, json.dumps(data))


def disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is "no space left" or "quota exceeded"."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _save_outputs_atomically() -> None:
    """Make papermill save local notebooks with :func:`replace_text` (its own handler
    truncates the file first, so a failed save destroyed the previous one)."""
    from papermill.iorw import LocalHandler, papermill_io

    class ReplacingLocalHandler(LocalHandler):
        def write(self, buf: str, path: str) -> None:
            target = Path(self._cwd or ".", path) if not os.path.isabs(path) else Path(path)
            if not target.parent.exists():
                raise FileNotFoundError(f"output folder {target.parent} doesn't exist.")
            replace_text(target, buf)

    papermill_io._handlers = [
        (scheme, ReplacingLocalHandler() if scheme == "local" else handler)
        for scheme, handler in papermill_io._handlers
    ]


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
            try:
                write_json_atomic(self.path, self.status)
            except OSError as exc:
                # a full disk: a heartbeat or progress update that cannot be written is
                # skipped; for the final status the reserve file is given up to make room
                if not disk_full(exc):
                    raise
                if "state" not in changes:
                    return
                self.path.with_name(RESERVE).unlink(missing_ok=True)
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
        #: set by :meth:`end` (a signal handler): (reason, message), acted on by the thread
        self.ended: tuple[str, str] | None = None
        self.detail = ""
        self.stopped = threading.Event()

    def end(self, reason: str, detail: str) -> None:
        """Stop the run for ``reason`` (from a signal handler: only records it)."""
        if self.ended is None:
            self.ended = (reason, detail)

    def why(self) -> str | None:
        """Why the run was stopped (None: it was not); also right after :meth:`end`."""
        if self.reason is None and self.ended is not None:
            self.reason, self.detail = self.ended
        return self.reason

    def run(self) -> None:
        start = time.monotonic()
        last_beat = 0.0
        signalled_at = 0.0
        while not self.stopped.wait(0.5):
            now = time.monotonic()
            if self.reason is None:
                if self.ended is not None:
                    self.reason, self.detail = self.ended
                elif (self.run_dir / CANCEL).exists():
                    self.reason, self.detail = "cancelled", cancel_reason(self.run_dir)
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
            with _private_kernel_sockets(kernel_name) as config:
                if config is not None:
                    kwargs["config"] = config
                return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    return ProgressEngine


@contextlib.contextmanager
def _private_kernel_sockets(kernel_name: str | None):
    """Kernel config for IPC sockets in a private directory, for ipykernel kernels.

    Over TCP, jupyter_client picks ports that are free at that moment and the kernel binds
    them a little later: runs started together race for them and one kernel dies with
    "Address already in use". Unix sockets in a directory of this run's own cannot collide,
    and only the run's user can open them. Other kernels (not all support IPC) keep TCP.
    Yields None when IPC is not used.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from traitlets.config import Config

    try:
        argv = KernelSpecManager().get_kernel_spec(kernel_name or "python3").argv
    except Exception:  # unknown kernel: nbclient reports it when it starts the kernel
        argv = []
    if not any("ipykernel" in arg for arg in argv):
        yield None
        return
    directory = tempfile.mkdtemp(prefix="cscale-kernel-")
    try:
        config = Config()
        config.KernelManager.transport = "ipc"
        config.KernelManager.ip = os.path.join(directory, "k")
        yield config
    finally:
        shutil.rmtree(directory, ignore_errors=True)


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
    with contextlib.suppress(OSError):  # room for the final status if the disk fills up
        (run_dir / RESERVE).write_bytes(b"\0" * RESERVE_BYTES)
    with marked(root, run_dir.name):
        return _execute(run_dir, root)


def _execute(run_dir: Path, root: Path) -> str:
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
        if os.environ.get("SLURM_JOB_ID"):
            _end_on_sigterm(watchdog, run_dir, float(spec.get("walltime") or 0))
        # jsonschema's IRI checker (a grammar built at import, ~3 s) only at its first use
        fastimport.install()
        import papermill
        from papermill.engines import papermill_engines
        from papermill.exceptions import PapermillExecutionError

        papermill_engines.register("cscale-progress", _engine(reporter))
        _save_outputs_atomically()
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
            state = watchdog.why() or "failed"
            error = {
                "cell": exc.cell_index,
                "exec_count": exc.exec_count,
                "ename": exc.ename,
                "evalue": exc.evalue,
            }
            message = f"{exc.ename}: {exc.evalue}"
        except Exception as exc:  # kernel died, bad notebook, missing kernel …
            state = watchdog.why() or "failed"
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
    if watchdog and watchdog.detail and state == watchdog.reason:
        message = watchdog.detail + ("; " + message if message else "")
    elif state == "timeout":
        message = "the run exceeded its timeout; " + message
    elif state == "failed" and disk_full_error(error, message):
        saved = (run_dir / OUTPUT).exists()
        message = (
            "the disk is full (no space left or quota exceeded): "
            + (
                "the output notebook keeps everything saved before that"
                if saved
                else "no output notebook could be saved"
            )
            + "; free some space and run again. "
            + message
        )
    if error:
        error = {
            **error,
            "ename": clip(str(error.get("ename") or ""), 200),
            "evalue": clip(str(error.get("evalue") or "")),
        }
    reporter.write(state=state, error=error, message=clip(message), finished=time.time())
    with contextlib.suppress(OSError):
        (run_dir / RESERVE).unlink()
    with contextlib.suppress(OSError):  # the log may be on the full disk too
        print(f"run finished: {state} {message}", flush=True)
    return state


def cancel_reason(run_dir: Path) -> str:
    """Why the run is being stopped: the first line the runs service wrote into its cancel
    file (e.g. ``cancelled by its owner (scancel 42)``), whichever of the watchdog or Slurm's
    SIGTERM notices first."""
    first: list[str] = []
    try:  # a regular file only: a FIFO or device planted there must not block the watchdog
        fd = os.open(run_dir / CANCEL, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                first = os.read(fd, 400).decode("utf-8", "replace").splitlines()
        finally:
            os.close(fd)
    except OSError:
        pass
    return clip(first[0].strip(), 200) if first and first[0].strip() else "cancelled"


def _end_on_sigterm(watchdog: Watchdog, run_dir: Path, walltime: float) -> None:
    """Make Slurm's SIGTERM (scancel, walltime) end the run with a final status."""
    started = time.monotonic()

    def on_term(signum: int, frame: Any) -> None:
        if (run_dir / CANCEL).exists():
            watchdog.end("cancelled", cancel_reason(run_dir))
        elif walltime and time.monotonic() - started >= walltime - 90:
            watchdog.end("timeout", f"the Slurm job reached its walltime ({walltime:g} s)")
        else:
            watchdog.end(
                "cancelled", "Slurm ended the job (scancel, preemption or the node going down)"
            )

    signal.signal(signal.SIGTERM, on_term)


def disk_full_error(error: dict[str, Any] | None, message: str) -> bool:
    """Whether the run's failure was the disk filling up (the exception is gone by now)."""
    text = f"{(error or {}).get('evalue', '')} {message}"
    return "No space left on device" in text or "Disk quota exceeded" in text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cscale_extensions.services.runs.executor")
    parser.add_argument("run_dir")
    parser.add_argument("--root", default=None, help="home directory (default: RUN_DIR/../..)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir).resolve()
    root = Path(args.root).resolve() if args.root else run_dir.parent.parent
    state = execute(run_dir, root)
    return 0 if state in ("succeeded", "claimed") else 1


if __name__ == "__main__":
    sys.exit(main())
