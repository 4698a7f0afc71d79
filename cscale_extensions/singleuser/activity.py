"""Jupyter Server extension: real work that produces no traffic counts as activity.

Jupyter Server reports the newest of several ``*_last_activity`` settings to JupyterHub (and
so to the idle culler). Two kinds of work produce no messages and would otherwise look idle:

- a kernel running a long, silent computation (``cscale_busy_kernels_last_activity``);
- a headless run executing in this server (a detached papermill process with a kernel of
  its own, see :mod:`cscale_extensions.services.runs.active`): ``cscale_runs_last_activity``.

Every ``CSCALE_BUSY_CHECK_SECONDS`` (default 15) the extension stamps these with the current
time while such work goes on.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from tornado.ioloop import PeriodicCallback

from cscale_extensions.services.runs.active import running


def _jupyter_server_extension_points():
    return [{"module": "cscale_extensions.singleuser.activity"}]


def busy_kernels(kernel_manager) -> list[str]:
    """Ids of the kernels currently executing code."""
    kernels = getattr(kernel_manager, "_kernels", {})
    return [kid for kid, k in kernels.items() if getattr(k, "execution_state", None) == "busy"]


def _load_jupyter_server_extension(serverapp) -> None:
    settings = serverapp.web_app.settings
    interval = float(os.environ.get("CSCALE_BUSY_CHECK_SECONDS", "15"))
    root = Path(os.path.expanduser(serverapp.root_dir))

    def stamp() -> None:
        now = datetime.now(UTC)
        if busy_kernels(serverapp.kernel_manager):
            settings["cscale_busy_kernels_last_activity"] = now
        if running(root):
            settings["cscale_runs_last_activity"] = now

    callback = PeriodicCallback(stamp, interval * 1000)
    callback.start()
    settings["cscale_busy_kernels_callback"] = callback
    serverapp.log.info(
        "cscale activity: busy kernels and running headless runs count as activity (every %ss)",
        interval,
    )
