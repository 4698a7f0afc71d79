"""Jupyter Server extension: the server's TLS context for the hub is built once, not per request.

Each user server has a certificate of its own (:mod:`cscale_extensions.hub.servertls`, passed
as ``JUPYTERHUB_SSL_KEYFILE`` / ``JUPYTERHUB_SSL_CERTFILE``). With those set, JupyterHub's
``HubAuth._api_request`` calls ``make_ssl_context`` for every request it makes to the hub —
the OAuth callback's token exchange, every token check — and each call loads the system's
whole CA bundle: 20–40 ms of CPU, four-fifths of what a user server spends on a sign-in
(measured with py-spy on a pre-warmed workshop server; 0.2–0.3 CPU-s of each arrival, which
a room of people arriving at once on a small machine queues behind).

At load, this extension replaces that function, as ``jupyterhub.services.auth`` sees it, by
one that returns the same context while its files are unchanged (keyed by the arguments and
each file's size and modification time, so a renewed certificate is picked up at the next
request), and builds the context ``HubAuth`` will ask for, so that a pre-warmed server has
paid for it before anyone signs in. An SSL context is meant to be shared by many connections; it holds no per-request
state. Everything here is the user's own process.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Callable
from typing import Any

from jupyterhub.services import auth as _auth

_lock = threading.Lock()


def _stamp(path: str | None) -> tuple[int, int] | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def cached(make: Callable[..., ssl.SSLContext | None]) -> Callable[..., ssl.SSLContext | None]:
    """``make`` (``jupyterhub.utils.make_ssl_context``'s signature) with its last contexts kept
    per (arguments, files' stamps)."""
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
            if len(kept) > 8:  # old stamps of renewed files
                kept.clear()
            kept[key] = context
        return context

    make_ssl_context.__wrapped__ = make  # type: ignore[attr-defined]
    return make_ssl_context


def install() -> None:
    """Use the cached context in ``jupyterhub.services.auth`` (once per process)."""
    if not hasattr(_auth.make_ssl_context, "__wrapped__"):
        _auth.make_ssl_context = cached(_auth.make_ssl_context)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": __name__}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    install()
    # HubAuth's own defaults (jupyterhub.services.auth.HubAuth.keyfile, certfile, client_ca)
    _auth.make_ssl_context(
        os.getenv("JUPYTERHUB_SSL_KEYFILE", ""),
        os.getenv("JUPYTERHUB_SSL_CERTFILE", ""),
        cafile=os.getenv("JUPYTERHUB_SSL_CLIENT_CA", ""),
    )
