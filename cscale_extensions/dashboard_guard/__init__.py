"""Dask dashboards answer only requests carrying their cluster's dashboard key.

Shared by two kinds of processes: the Dask gateway, whose dashboard proxy
(:mod:`cscale_extensions.gateway.dashboards`) adds the key to what it forwards after its
owner/admin check, and every scheduler and worker the local gateway starts, which load
:mod:`.preload` (``--preload``) so that their dashboards refuse everything else. Bokeh has no
authentication of its own, and those dashboards listen on random loopback ports that any
local account can find.

The key is an HMAC of the cluster's API token (``DASK_GATEWAY_API_TOKEN``, which the gateway
gives only to the cluster's own processes), not the token itself: what reaches a dashboard's
request handling cannot be used at the gateway's API. This module imports nothing of Dask, so
the gateway does not load distributed. On Kubernetes the variable holds the path of the token
file (the cluster's Secret, mounted by dask-gateway's controller), as dask-gateway's own
scheduler preload reads it: :func:`cluster_token` does the same.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

#: the request header the gateway's dashboard proxy adds
HEADER = "X-CScale-Dashboard-Key"
#: where a Dask process of the gateway finds its cluster's token
TOKEN_ENV = "DASK_GATEWAY_API_TOKEN"
#: the ``--preload`` module of schedulers and workers
PRELOAD = "cscale_extensions.dashboard_guard.preload"


def dashboard_key(token: str) -> str:
    """The dashboard key of the cluster whose API token is ``token``."""
    return hmac.new(token.encode(), b"cscale-dashboard", hashlib.sha256).hexdigest()


def cluster_token(environ: Mapping[str, str] = os.environ) -> str:
    """This Dask process's cluster token: :data:`TOKEN_ENV`, or the file it names (an
    absolute path, as on Kubernetes); empty when there is none."""
    value = environ.get(TOKEN_ENV, "")
    if value.startswith("/"):
        try:
            with open(value, encoding="utf-8") as f:
                return f.read()  # as the gateway reads it from the Secret: unchanged
        except OSError:
            return ""
    return value
