"""``--preload`` of the gateway's schedulers and workers: their dashboard needs the key.

distributed imports preload modules in the scheduler's and worker's ``__init__``, before
either creates its HTTP server (the dashboard, Bokeh and distributed's own routes, on a
random loopback port). Importing this module makes distributed build that server's
application as :class:`GuardedApplication`, which answers 403 to every request, HTTP and
websocket, whose :data:`~cscale_extensions.dashboard_guard.HEADER` is not the key of this
process's cluster. Without a cluster token in the environment nothing is served. The
cluster's owner can still reach it (their processes hold the token): it is theirs.
"""

from __future__ import annotations

import hmac
import logging

import distributed.node
from distributed.http.routing import RoutingApplication
from tornado import web

from cscale_extensions.dashboard_guard import HEADER, cluster_token, dashboard_key

log = logging.getLogger("cscale.dashboard_guard")
_TOKEN = cluster_token()
_KEY = dashboard_key(_TOKEN).encode() if _TOKEN else b""


def allowed(presented: str) -> bool:
    """Whether ``presented`` is this process's dashboard key."""
    return bool(_KEY) and hmac.compare_digest(presented.encode(), _KEY)


class GuardedApplication(RoutingApplication):
    """distributed's dashboard application, 403 to requests without the key."""

    def find_handler(self, request, **kwargs):
        if not allowed(request.headers.get(HEADER, "")):
            return self.get_handler_delegate(request, web.ErrorHandler, {"status_code": 403})
        return super().find_handler(request, **kwargs)


# distributed.node builds every Scheduler's and Worker's dashboard application by this name
distributed.node.RoutingApplication = GuardedApplication


def dask_setup(server) -> None:
    """Stop a dashboard that was built without the guard (the import came too late)."""
    app = getattr(server, "http_application", None)
    if app is not None and not isinstance(app, GuardedApplication):
        log.error("the dashboard of %s was built before the guard: stopping it", server)
        server.http_server.stop()
