"""Errors a user reads: JupyterHub shows an HTTPError's text on its spawn and error pages only
when it carries a ``jupyterhub_message`` (else a generic failure)."""

from __future__ import annotations

from tornado import web


def user_error(status: int, message: str) -> web.HTTPError:
    """An HTTPError whose ``message`` the hub's pages show as it is."""
    exc = web.HTTPError(status, message)
    exc.jupyterhub_message = message  # type: ignore[attr-defined]
    return exc
