"""Jupyter Server extension: the server's TLS context for the hub is built once, not per request.

Each user server has a certificate of its own (:mod:`cscale_extensions.hub.servertls`, passed
as ``JUPYTERHUB_SSL_KEYFILE`` / ``JUPYTERHUB_SSL_CERTFILE``). With those set, JupyterHub's
``HubAuth._api_request`` makes a new SSL context, with the system's whole CA bundle, for every
request to the hub: four-fifths of what a pre-warmed workshop server spent on a sign-in
(py-spy; 0.2–0.3 CPU-s of each arrival, which a room arriving at once on a small machine queues
behind). At load this extension caches that function as ``jupyterhub.services.auth`` sees it
(:mod:`cscale_extensions.tlscache`) and builds the context ``HubAuth`` will ask for, so that a
pre-warmed server has paid for it before anyone signs in. Everything here is the user's own
process.
"""

from __future__ import annotations

import os
from typing import Any

from jupyterhub.services import auth

from cscale_extensions import tlscache


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": __name__}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    tlscache.install(auth)
    # HubAuth's own defaults (jupyterhub.services.auth.HubAuth.keyfile, certfile, client_ca)
    auth.make_ssl_context(
        os.getenv("JUPYTERHUB_SSL_KEYFILE", ""),
        os.getenv("JUPYTERHUB_SSL_CERTFILE", ""),
        cafile=os.getenv("JUPYTERHUB_SSL_CLIENT_CA", ""),
    )
