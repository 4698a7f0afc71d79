"""A per-user-server fork server for executors: papermill is imported once, each run forks.

Started by the launcher kernel (``python -m cscale_extensions.services.runs.forkserver --root HOME
--server-pid PID --parent-pid KERNEL``) and bound to it (it ends with the launcher kernel, e.g.
when the user server stops), it listens on ``HOME/runs/.executor.sock`` (mode 0600: only the user).
A request is one JSON line ``{"run_dir": ..., "env": {...}}``; the server forks, the child
starts its own session, takes the launcher's environment, sends its output to the run's
``log.txt`` and runs :func:`executor.execute`. The answer is ``{"pid": N}``. Children do not
depend on the server. It exits when the user server (``--server-pid``) is gone or after
``--idle`` seconds without requests. Saves the interpreter start and the papermill import
(about 1 s of CPU) per run.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import sys
import time
from pathlib import Path

from cscale_extensions import fastimport

SOCKET = ".executor.sock"
LOCK = ".executor.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when its parent (the launcher kernel) ends (Linux prctl)."""
    import ctypes

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        sys.exit(0)


def _child(run_dir: Path, root: Path, env: dict[str, str]) -> None:
    """In the forked child: become the run's executor; never returns."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.setsid()
        os.environ.clear()
        os.environ.update(env)
        fd = os.open(run_dir / "log.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.chdir(root)
        from cscale_extensions.services.runs.executor import execute

        code = 0 if execute(run_dir, root) in ("succeeded", "claimed") else 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def serve(root: Path, server_pid: int, idle: float, parent: int | None = None) -> int:
    if parent:
        _die_with_parent(parent)
    runs = root / "runs"
    runs.mkdir(exist_ok=True)
    lock = open(runs / LOCK, "w")  # noqa: SIM115 (held for the server's lifetime)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another fork server is already serving this home
    fastimport.install()  # jsonschema's IRI checker at first use, not in every run
    import papermill  # noqa: F401 (the point: imported once, before forking)
    import papermill.engines  # noqa: F401

    path = runs / SOCKET
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    old = os.umask(0o077)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.umask(old)
    listener.listen(16)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
    last = time.monotonic()
    try:
        while _alive(server_pid) and time.monotonic() - last < idle:
            ready, _, _ = select.select([listener], [], [], 1.0)
            if not ready:
                continue
            conn, _ = listener.accept()
            last = time.monotonic()
            with conn:
                conn.settimeout(10)
                try:
                    request = json.loads(conn.makefile("r").readline())
                    run_dir = Path(request["run_dir"]).resolve()
                    if run_dir.parent != runs.resolve() or not (run_dir / "spec.json").exists():
                        raise ValueError(f"not a run directory: {run_dir}")
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    conn.sendall((json.dumps({"error": str(exc)}) + "\n").encode())
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    lock.close()
                    _child(run_dir, root, dict(request.get("env") or os.environ))
                print(f"pid {pid} forked for {run_dir.name}", flush=True)
                conn.sendall((json.dumps({"pid": pid}) + "\n").encode())
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cscale_extensions.services.runs.forkserver")
    p.add_argument("--root", required=True, help="the user's home (server root)")
    p.add_argument("--server-pid", type=int, required=True, help="exit when this process is gone")
    p.add_argument("--parent-pid", type=int, help="end with this process (the launcher kernel)")
    p.add_argument("--idle", type=float, default=600.0, help="exit after this many idle seconds")
    args = p.parse_args(argv)
    return serve(Path(args.root).resolve(), args.server_pid, args.idle, args.parent_pid)


if __name__ == "__main__":
    sys.exit(main())
