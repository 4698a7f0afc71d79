"""Run as a user (``sudo -nHu <user> python -I as_user.py``): make a job's files, run a Slurm command.

Reads one JSON request on stdin and writes one JSON answer on stdout, ``{"ok": true,
"returncode": …, "stdout": …, "stderr": …}`` or ``{"ok": false, "error": …}``. Actions:

``submit``
    make ``staging_dir`` (mode 0700; its parents as needed, 0700 too) unless it is null,
    then ``dirs`` and ``files`` in it (files 0600, created, never overwritten), then run
    ``argv`` with ``env`` and ``stdin``, in the staging directory (else the home).
``run``
    run ``argv`` with ``env``.
``clean``
    remove ``remove`` (names inside ``staging_dir``: the TLS files and scratch directory of
    an ended cluster; its logs stay), and, with ``prune_days``, the sibling directories of
    ``staging_dir`` untouched for that many days that hold no TLS key any more (finished
    clusters' logs).

It runs as the user, so it can do nothing the user could not; it is run by path with the
interpreter's isolated mode and imports the standard library only, so nothing in the user's
environment (``PYTHONPATH``, user site-packages, the working directory) is loaded into it.
"""

import json
import os
import shutil
import subprocess
import sys
import time

#: a staging directory holding this file belongs to a cluster that has not ended (never pruned)
LIVE_MARK = "dask.pem"


def _answer(**kwargs) -> None:
    json.dump(kwargs, sys.stdout)
    sys.stdout.flush()


def _inside(base: str, name: str) -> str:
    path = os.path.normpath(os.path.join(base, name))
    if os.path.dirname(path) != os.path.normpath(base):
        raise ValueError(f"{name!r} is not a name inside {base}")
    return path


def _run(argv, env, stdin=None, cwd=None) -> None:
    cwd = cwd or os.path.expanduser("~")
    proc = subprocess.run(argv, env=env, input=stdin.encode() if stdin is not None else None,
                          capture_output=True, cwd=cwd if os.path.isdir(cwd) else "/", check=False)
    _answer(ok=True, returncode=proc.returncode, stdout=proc.stdout.decode("utf8", "replace"),
            stderr=proc.stderr.decode("utf8", "replace"))


def submit(argv, env, stdin=None, staging_dir=None, files=None, dirs=None) -> None:
    os.umask(0o077)
    if staging_dir:
        parent = os.path.dirname(os.path.normpath(staging_dir))
        os.makedirs(parent, mode=0o700, exist_ok=True)
        os.mkdir(staging_dir, 0o700)  # a new cluster's: never reused
        for name in dirs or []:
            os.mkdir(_inside(staging_dir, name), 0o700)
        for name, text in (files or {}).items():
            fd = os.open(_inside(staging_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
    _run(argv, env, stdin, cwd=staging_dir)


def clean(staging_dir, remove=(), prune_days=None) -> None:
    for name in remove:
        path = _inside(staging_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.unlink(path)
    removed = []
    if prune_days is not None:
        parent = os.path.dirname(os.path.normpath(staging_dir))
        cutoff = time.time() - float(prune_days) * 86400
        for entry in os.scandir(parent) if os.path.isdir(parent) else ():
            if (entry.is_dir(follow_symlinks=False) and entry.path != os.path.normpath(staging_dir)
                    and entry.stat(follow_symlinks=False).st_mtime < cutoff
                    and not os.path.lexists(os.path.join(entry.path, LIVE_MARK))):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.name)
    _answer(ok=True, returncode=0, stdout=json.dumps(removed), stderr="")


def main() -> None:
    try:
        request = json.load(sys.stdin)
        action = request.pop("action", None)
        if action == "submit":
            submit(**request)
        elif action == "run":
            _run(request["argv"], request["env"])
        elif action == "clean":
            clean(**request)
        else:
            _answer(ok=False, error="actions: submit, run, clean")
    except (OSError, ValueError, TypeError, KeyError) as exc:
        _answer(ok=False, error=f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
