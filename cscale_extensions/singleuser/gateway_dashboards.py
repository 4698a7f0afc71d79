"""Jupyter Server extension: the user's Dask gateway dashboards under their own server.

A gateway cluster's dashboard is served by dask-gateway on its own host
(:mod:`cscale_extensions.gateway.dashboards`), behind a sign-in of that host. JupyterLab runs on
the user's host (:mod:`cscale_extensions.hub.origins`), so the Dask panel (dask-labextension)
could not show it: the panel fetches ``individual-plots.json`` and embeds the plots in frames,
which works only for pages of the lab's own origin. This extension serves

    <server base URL>dask-gateway/clusters/<name>/<path>      (HTTP GET/HEAD and websockets)

by forwarding to the gateway's dashboard route (``gateway.address`` of the Dask configuration,
``DASK_GATEWAY__ADDRESS``) as a program does: with ``Authorization: jupyterhub <token>`` of the
server's own API token, the token the user's kernels already use with the gateway. So the
gateway's owner check decides, for the server's user (other users' clusters: 404), and the
hub gives each server ``DASK_GATEWAY__PUBLIC_ADDRESS`` pointing here
(:mod:`cscale_extensions.hub.spawner`), which makes ``cluster.dashboard_link`` a link on the
user's own origin that the Dask panel finds in a kernel and shows.

Who may use it: whoever may use this server (JupyterHub's check of the server's own login
cookie) and may run code in it (``execute`` on ``kernels``): the proxy acts with the server's
token, which its kernels hold anyway. Nothing of the visitor's request that identifies them
reaches the gateway (only an allowlist of content headers is forwarded: no ``Cookie``,
``Authorization``, XSRF or forwarding headers), no ``Set-Cookie`` of the gateway or the
dashboard reaches the browser, and websockets must come from the server's own origin. The
pages may be framed by pages of this origin only (``frame-ancestors 'self'``, where
jupyterhub-singleuser forbids all framing): the Dask panel shows each plot in a frame.

Clusters the Dask panel starts itself ("+ New": gateway clusters made in this server) are
opened by the panel at dask-labextension's ``dask/dashboard/<id>/…``; for those whose link is
this route, :class:`LabClusterPath` routes that path here too.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote, urlsplit

from jupyter_core.utils import ensure_async
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.services.security import csp_report_uri
from jupyter_server.utils import url_path_join
from tornado import httpclient, web, websocket
from tornado.routing import PathMatches

from cscale_extensions.singleuser import GATEWAY_PROXY_PATH

#: request headers passed on to the gateway (all others, credentials first, are dropped)
FORWARDED_REQUEST = {
    "accept", "accept-language", "cache-control", "if-modified-since", "if-none-match",
    "range", "user-agent",
}
#: response headers passed back to the browser
FORWARDED_RESPONSE = {
    "cache-control", "content-disposition", "content-language", "content-range",
    "content-type", "etag", "expires", "last-modified", "location", "vary",
}
#: a cluster name: dask-gateway's are hex or ``<namespace>.<hex>``; never ``.`` or ``..``
NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
TIMEOUT = 60.0


def gateway_address() -> str:
    """The gateway's address as the user's kernels have it, or ``""`` without a gateway."""
    import dask.config  # dask reads DASK_GATEWAY__* from the environment

    value = dask.config.get("gateway.address", None) or ""
    try:
        return str(value).format(**os.environ).rstrip("/")
    except (KeyError, IndexError, ValueError):
        return ""


def safe_tail(tail: str) -> str:
    """``tail`` quoted for the gateway's URL; ``HTTPError(400)`` for dot segments."""
    if any(part in (".", "..") for part in tail.split("/")):
        raise web.HTTPError(400, "Dashboard paths cannot contain '.' or '..' segments.")
    return quote(tail, safe="/:@!$&'()*+,;=-._~")


class GatewayDashboardHandler(WebSocketMixin, websocket.WebSocketHandler, JupyterHandler):
    """One cluster's dashboard: HTTP GET/HEAD and Bokeh's websocket, through the gateway."""

    auth_resource = "kernels"
    upstream: websocket.WebSocketClientConnection | None = None

    # ------------------------------------------------------------------ who

    def _is_websocket(self) -> bool:
        return self.request.headers.get("Upgrade", "").lower() == "websocket"

    async def prepare(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # a browser without a session is sent to sign in; a websocket gets a 403
        await JupyterHandler.prepare(self, _redirect_to_login=not self._is_websocket())

    def set_default_headers(self) -> None:
        if not self._is_websocket():
            super().set_default_headers()

    @property
    def content_security_policy(self) -> str:
        # jupyterhub-singleuser forbids every frame ('none'); the Dask panel frames these
        # pages in the lab, a page of this same origin: allow that, nothing else
        return "; ".join([
            "frame-ancestors 'self'",
            "report-uri " + self.settings.get("csp_report_uri",
                                              url_path_join(self.base_url, csp_report_uri)),
        ])

    async def _authorize(self) -> None:
        user = self.current_user
        if user is None:
            raise web.HTTPError(403, "Sign in to this server first.")
        allowed = await ensure_async(self.authorizer.is_authorized(self, user, "execute", "kernels"))
        if not allowed:
            raise web.HTTPError(403, "You may not use this server's Dask clusters.")

    def _target(self, name: str, tail: str, scheme: str = "http") -> str:
        base = gateway_address()
        if not base:
            raise web.HTTPError(404, "This server has no Dask gateway.")
        url = f"{base}/clusters/{quote(name, safe='')}/{safe_tail(tail or '')}"
        if self.request.query:
            url += "?" + self.request.query
        if scheme == "ws":
            url = "ws" + url[len("http"):]
        return url

    def _upstream_headers(self) -> dict[str, str]:
        headers = {k: v for k, v in self.request.headers.items() if k.lower() in FORWARDED_REQUEST}
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if token:  # the server's own token: the gateway checks it like a kernel's
            headers["Authorization"] = f"jupyterhub {token}"
        return headers

    # ------------------------------------------------------------------ HTTP

    async def get(self, name: str, tail: str | None = None) -> None:  # type: ignore[override]
        if self._is_websocket():
            await self._open_websocket(name, tail or "")
            return
        if self.current_user is None:
            raise web.HTTPError(403, "Sign in to this server first.")
        await self._authorize()
        await self._forward(name, tail or "")

    async def head(self, name: str, tail: str | None = None) -> None:
        await self.get(name, tail)

    async def _forward(self, name: str, tail: str) -> None:
        url = self._target(name, tail)
        request = httpclient.HTTPRequest(
            url, method=self.request.method or "GET", headers=self._upstream_headers(),
            follow_redirects=False, request_timeout=TIMEOUT, connect_timeout=10,
        )
        try:
            response = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, httpclient.HTTPClientError) as exc:
            self.log.warning("Dask dashboard %s not reachable: %s", name, exc)
            raise web.HTTPError(502, "The Dask gateway did not answer; try again in a moment.") from None
        if response.code == 599:
            self.log.warning("Dask dashboard %s not reachable: %s", name, response.error)
            raise web.HTTPError(502, "The Dask gateway did not answer; try again in a moment.")
        self.set_status(response.code, response.reason)
        for key, value in response.headers.get_all():
            if key.lower() not in FORWARDED_RESPONSE:
                continue
            if key.lower() == "location":
                value = self._location(name, value)
            self.set_header(key, value)
        if self.request.method != "HEAD" and response.body:
            self.write(response.body)
        await self.finish()

    def _location(self, name: str, value: str) -> str:
        """A dashboard's redirect to one of its own paths, under this server's route."""
        if value.startswith("/") and not value.startswith("//"):
            return url_path_join(self.base_url, GATEWAY_PROXY_PATH, "clusters", name, value)
        return value

    # ------------------------------------------------------------------ websocket

    async def _open_websocket(self, name: str, tail: str) -> None:
        await self._authorize()
        origin = self.request.headers.get("Origin")
        if origin is not None and not self.check_origin(origin):
            raise web.HTTPError(403, "Cross-origin websocket refused.")
        protocols = [p.strip() for p in self.request.headers.get(
            "Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        request = httpclient.HTTPRequest(self._target(name, tail, "ws"), headers=self._upstream_headers(),
                                         connect_timeout=10, request_timeout=TIMEOUT)
        try:
            self.upstream = await websocket.websocket_connect(
                request, subprotocols=protocols or None, on_message_callback=self._from_upstream,
            )
        except (OSError, httpclient.HTTPClientError, websocket.WebSocketError) as exc:
            self.log.info("Dask dashboard websocket of %s refused: %s", name, exc)
            code = getattr(exc, "code", 502)
            raise web.HTTPError(code if code in (401, 403, 404) else 502,
                                "The Dask gateway refused the dashboard connection.") from None
        await websocket.WebSocketHandler.get(self, name, tail)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return self.upstream.selected_subprotocol if self.upstream else None

    def _from_upstream(self, message: str | bytes | None) -> None:
        if message is None:  # the gateway or the scheduler closed it
            self.close()
            return
        if self.ws_connection is not None and not self.ws_connection.is_closing():
            self.write_message(message, binary=isinstance(message, bytes))

    async def on_message(self, message: str | bytes) -> None:
        if self.upstream is not None:
            await self.upstream.write_message(message, binary=isinstance(message, bytes))

    def on_close(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None


class LabClusterPath(PathMatches):
    """dask-labextension's ``dask/dashboard/<cluster id>/…`` of a cluster its panel started
    ("+ New": a gateway cluster whose link is this server's route), as that route.

    The labextension forwards those paths to the host and port of the cluster's link without
    a login of its own; here they match only for such gateway clusters (translated to
    ``(name, path)`` for :class:`GatewayDashboardHandler`), others stay the labextension's.
    """

    def __init__(self, pattern: str, route: str) -> None:
        super().__init__(pattern)
        self.route = route.rstrip("/") + "/"

    def match(self, request: Any) -> dict[str, Any] | None:
        params = super().match(request)
        if params is None:
            return None
        # here, not at import: dask-labextension loads at its first request (lazy_extensions)
        from dask_labextension.manager import manager as lab_clusters

        kwargs = {k: v.decode() if isinstance(v, bytes) else (v or "")  # tornado gives bytes
                  for k, v in params["path_kwargs"].items()}
        cluster = lab_clusters.get_cluster(kwargs["cluster_id"])
        path = urlsplit((cluster or {}).get("dashboard_link") or "").path
        if not path.startswith(self.route):
            return None
        name = path[len(self.route):].split("/", 1)[0]
        tail = kwargs["proxied_path"].lstrip("/")
        return {"path_args": [name, tail], "path_kwargs": {}}


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "cscale_extensions.singleuser.gateway_dashboards"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    web_app = serverapp.web_app
    route = url_path_join(web_app.settings["base_url"], GATEWAY_PROXY_PATH, "clusters")
    lab = url_path_join(web_app.settings["base_url"], "dask/dashboard/")
    web_app.add_handlers(".*$", [  # before dask_labextension's (extensions load by name)
        (rf"{route}/({NAME})/?", GatewayDashboardHandler),
        (rf"{route}/({NAME})/(.*)", GatewayDashboardHandler),
        (LabClusterPath(rf"{lab}(?P<cluster_id>[\w-]+)(?P<proxied_path>/.*)", route),
         GatewayDashboardHandler),
    ])
    serverapp.log.info("cscale gateway dashboards: %s/<cluster>/ (gateway %s)",
                       route, gateway_address() or "not configured")
