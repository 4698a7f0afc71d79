"""Jupyter Server extension: a kernel busy computing counts as activity.

Jupyter Server reports the newest of several ``*_last_activity`` settings to JupyterHub (and
so to the idle culler). A kernel running a long, silent computation produces no messages, so
without this the culler would stop a server in the middle of real work. Every
``CSCALE_BUSY_CHECK_SECONDS`` (default 15) this extension stamps
``cscale_busy_kernels_last_activity`` with the current time while any kernel is busy.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from tornado.ioloop import PeriodicCallback


def _jupyter_server_extension_points():
    return [{"module": "cscale_extensions.activity"}]


def busy_kernels(kernel_manager) -> list[str]:
    """Ids of the kernels currently executing code."""
    kernels = getattr(kernel_manager, "_kernels", {})
    return [kid for kid, k in kernels.items() if getattr(k, "execution_state", None) == "busy"]


def _load_jupyter_server_extension(serverapp) -> None:
    settings = serverapp.web_app.settings
    interval = float(os.environ.get("CSCALE_BUSY_CHECK_SECONDS", "15"))

    def stamp() -> None:
        if busy_kernels(serverapp.kernel_manager):
            settings["cscale_busy_kernels_last_activity"] = datetime.now(UTC)

    callback = PeriodicCallback(stamp, interval * 1000)
    callback.start()
    settings["cscale_busy_kernels_callback"] = callback
    serverapp.log.info("cscale activity: busy kernels count as activity (every %ss)", interval)
