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
the gateway does not load distributed.
"""

from __future__ import annotations

import hashlib
import hmac

#: the request header the gateway's dashboard proxy adds
HEADER = "X-CScale-Dashboard-Key"
#: where a Dask process of the gateway finds its cluster's token
TOKEN_ENV = "DASK_GATEWAY_API_TOKEN"
#: the ``--preload`` module of schedulers and workers
PRELOAD = "cscale_extensions.dashboard_guard.preload"


def dashboard_key(token: str) -> str:
    """The dashboard key of the cluster whose API token is ``token``."""
    return hmac.new(token.encode(), b"cscale-dashboard", hashlib.sha256).hexdigest()
