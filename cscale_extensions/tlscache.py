"""One TLS context per certificate files, not one per request.

``jupyterhub.utils.make_ssl_context`` loads the system's whole CA bundle into every context it
makes (20–40 ms of CPU on an idle machine, far more on a loaded one), and JupyterHub calls it for
every request its clients make with a certificate: a user server's ``HubAuth`` for each hub API
request (the OAuth callback's token exchange, every token check), the hub for each check that a
new server is up. With a certificate of its own for every user server
(:mod:`cscale_extensions.hub.servertls`), that was most of a pre-warmed server's CPU per sign-in
and 0.2 CPU-s of the hub's per server start (py-spy, a 30-user storm on 2 cores).

:func:`cached` wraps that function so it returns the same context while the arguments and the
files they name are unchanged (size and modification time: a renewed certificate is picked up at
the next call). An SSL context is meant to be shared by many connections and holds no
per-request state. :func:`install` puts the wrapper in place of the name a JupyterHub module
looks up (``jupyterhub.services.auth`` in a user server, ``jupyterhub.objects`` in the hub).
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from jupyterhub import utils as _utils

_lock = threading.Lock()
#: contexts kept per wrapper before old ones (of renewed files) are dropped
KEEP = 8


def _stamp(path: str | None) -> tuple[int, int] | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def cached(make: Callable[..., ssl.SSLContext | None]) -> Callable[..., ssl.SSLContext | None]:
    """``make`` (``jupyterhub.utils.make_ssl_context``'s signature) with its contexts kept per
    (arguments, the files' stamps)."""
    kept: dict[tuple, ssl.SSLContext | None] = {}

    def make_ssl_context(keyfile, certfile, cafile=None, **kwargs: Any) -> ssl.SSLContext | None:
        key = (
            keyfile, certfile, cafile, tuple(sorted(kwargs.items())),
            _stamp(keyfile), _stamp(certfile), _stamp(cafile),
        )  # fmt: skip
        with _lock:
            if key in kept:
                return kept[key]
        context = make(keyfile, certfile, cafile=cafile, **kwargs)
        with _lock:
            if len(kept) >= KEEP:
                kept.clear()
            kept[key] = context
        return context

    make_ssl_context.__wrapped__ = make  # type: ignore[attr-defined]
    return make_ssl_context


#: JupyterHub's function, cached (for this package's own callers)
make_ssl_context = cached(_utils.make_ssl_context)


def install(module: ModuleType) -> None:
    """Make ``module``'s ``make_ssl_context`` the cached one (once: idempotent). JupyterHub's
    own function gets this module's wrapper, so a process keeps one cache for all its callers
    (the hub's start queue and ``Server.wait_up`` ask for the same context)."""
    current = module.make_ssl_context
    if hasattr(current, "__wrapped__"):
        return
    module.make_ssl_context = (
        make_ssl_context if current is _utils.make_ssl_context else cached(current)
    )
