"""Dask dashboards for the cluster's owner and the hub's admins only (local gateway).

dask-gateway's proxy routes ``<gateway>/clusters/<name>/…`` straight to the scheduler's
dashboard (Bokeh, no authentication of its own): anyone who could reach the gateway's host and
knew or guessed a cluster name saw its tasks, workers' logs and call stacks. Here the proxy gets
no dashboard route at all (:class:`DashboardAccess` drops them), so those paths fall through
to the gateway's own web application, where this module's handler

1. identifies the visitor: a browser by a session cookie of the gateway's host, obtained by
   OAuth with the hub (the gateway is a hub service: ``service-dask-gateway`` client, its API
   token as secret, the user's hub login); a program by ``Authorization: jupyterhub <token>``,
   checked like every gateway API call;
2. serves the dashboard only to the cluster's owner or a hub admin (others get a 404, as the
   gateway's API does for other users' clusters);
3. forwards the request (HTTP and Bokeh's websocket) to the scheduler's dashboard without the
   visitor's cookies or ``Authorization`` (the scheduler is the owner's process and could log
   them), with the cluster's dashboard key instead (:mod:`cscale_extensions.dashboard_guard`:
   the scheduler's loopback port answers nothing else, so other local accounts cannot go
   round this check), and drops any ``Set-Cookie`` of the dashboard (no cookies tossed onto
   the gateway's host).

Sessions live in the gateway's memory (``dask_gateway.dashboard_session_timeout``); a restart
of the gateway means signing in again (one redirect through the hub). A dashboard page is
still content of its owner: an admin who opens a hostile user's dashboard runs its scripts on
the gateway's host, where they could read other dashboards that admin has a session for (never
the hub: another host, see :mod:`cscale_extensions.hub.origins`).

On Kubernetes dask-gateway's controller routes each dashboard through traefik, not through
this process: :meth:`DashboardGate.forward_auth` is the same check as a traefik
``ForwardAuth`` endpoint (the chart's Middleware ``dashboard-auth-…``, put in front of every
cluster's dashboard route): 200 with the key in :data:`HEADER` (traefik copies it into the
request to the scheduler, never to the browser) for the owner or an admin; a sign-in redirect,
401 or 403 for everyone else (:mod:`cscale_extensions.gateway.kubernetes`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web

from cscale_extensions.dashboard_guard import HEADER, PRELOAD, dashboard_key

SESSION_COOKIE = "cscale-dashboard-session"
STATE_COOKIE = "cscale-dashboard-state"
#: pending sign-ins kept at most (anonymous visitors create them)
MAX_PENDING = 5000
STATE_TTL = 600.0
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host",
}
#: request headers never passed to the owner's scheduler
PRIVATE_REQUEST = {"cookie", "authorization"}
#: the path of the forward-auth endpoint (Kubernetes: traefik asks it, in the cluster network)
FORWARD_AUTH_PATH = "/cscale-dashboard-auth"


@dataclass(frozen=True)
class Visitor:
    name: str
    admin: bool
    expires: float


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


def _page(status: int, title: str, text: str) -> web.Response:
    body = (f"<!doctype html><title>{title}</title><h1>{title}</h1><p>{text}</p>")
    return web.Response(status=status, text=body, content_type="text/html")


class DashboardGate:
    """The aiohttp handlers: sign-in through the hub, the owner check, the forwarding."""

    def __init__(self, backend: Any, app: web.Application, session_timeout: float,
                 clusters_prefix: str = "", urls: dict[str, str] | None = None) -> None:
        """``urls``: ``JUPYTERHUB_*`` values for a gateway the hub did not start (Kubernetes),
        used where the environment has none; the hub's API URL is the authenticator's."""
        self.backend = backend
        self.app = app
        self.timeout = float(session_timeout)
        env = {**(urls or {}), **os.environ}
        self.client_id = env.get("JUPYTERHUB_CLIENT_ID", "service-dask-gateway")
        self.client_secret = env.get("JUPYTERHUB_API_TOKEN", "")
        api_url = env.get("JUPYTERHUB_API_URL") or getattr(
            app.get("authenticator"), "jupyterhub_api_url", ""
        )
        self.api_url = str(api_url or "").rstrip("/")
        self.public_hub = env.get("JUPYTERHUB_PUBLIC_HUB_URL", "").rstrip("/") + "/"
        self.callback = env.get("JUPYTERHUB_OAUTH_CALLBACK_URL", "")
        public = env.get("JUPYTERHUB_PUBLIC_URL", "")
        self.public = public if public.endswith("/") else public + "/"
        self.prefix = urlsplit(self.public).path or env.get("JUPYTERHUB_SERVICE_PREFIX", "/")
        self.secure = self.public.startswith("https://")
        #: the dashboards' public paths, ``<clusters_prefix>/clusters/<name>/…`` (forward auth)
        self.clusters_path = re.compile(
            re.escape(clusters_prefix.rstrip("/")) + r"/clusters/(?P<cluster>[^/?#]+)(?:[/?#]|$)"
        )
        self.sessions: dict[str, Visitor] = {}
        self.pending: dict[str, tuple[str, float]] = {}
        self.http: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ set-up

    def install(self) -> None:
        self.app.add_routes([
            web.get("/oauth_callback", self.oauth_callback),
            web.route("*", "/clusters/{cluster}", self.dashboard),
            web.route("*", "/clusters/{cluster}/{tail:.*}", self.dashboard),
        ])
        self.app.on_cleanup.append(self._close)

    def install_forward_auth(self) -> None:
        """The Kubernetes variant: traefik forwards the dashboards, this only checks them."""
        self.app.add_routes([
            web.get("/oauth_callback", self.oauth_callback),
            web.route("*", FORWARD_AUTH_PATH, self.forward_auth),
        ])
        self.app.on_cleanup.append(self._close)

    def _client(self) -> aiohttp.ClientSession:
        if self.http is None or self.http.closed:
            self.http = aiohttp.ClientSession(
                auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, connect=10)
            )
        return self.http

    async def _close(self, _app: web.Application) -> None:
        if self.http is not None:
            await self.http.close()

    # ------------------------------------------------------------------ identity

    def _cookie(self, response: web.StreamResponse, name: str, value: str, max_age: float) -> None:
        response.set_cookie(name, value, max_age=int(max_age), path=self.prefix, httponly=True,
                            samesite="Lax", secure=self.secure)

    def _session(self, request: web.Request) -> Visitor | None:
        sid = request.cookies.get(SESSION_COOKIE, "")
        visitor = self.sessions.get(sid)
        if visitor is None:
            return None
        if visitor.expires < time.time():
            self.sessions.pop(sid, None)
            return None
        return visitor

    async def _token_visitor(self, request: web.Request) -> Visitor | None:
        """``Authorization: jupyterhub <token>``, checked by the gateway's authenticator."""
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("jupyterhub "):
            return None
        try:
            user = await self.app["authenticator"].authenticate(request)
        except web.HTTPException:
            return None
        except (TimeoutError, aiohttp.ClientError) as exc:  # the hub did not answer
            self.backend.log.warning("dashboard token not checked: %s", exc)
            return None
        if isinstance(user, tuple):
            user = user[0]
        return Visitor(user.name, bool(getattr(user, "admin", False)), time.time())

    def _sign_in(self, request: web.Request, target: str | None = None) -> web.StreamResponse:
        """Redirect a browser to the hub's authorisation page, back to ``target`` (default:
        where it was going)."""
        now = time.time()
        for key in [k for k, (_, exp) in self.pending.items() if exp < now]:
            del self.pending[key]
        while len(self.pending) >= MAX_PENDING:
            del self.pending[next(iter(self.pending))]
        state = secrets.token_urlsafe(24)
        if target is None:
            target = self.public + request.path_qs.lstrip("/")
        self.pending[state] = (target, now + STATE_TTL)
        query = urlencode({"client_id": self.client_id, "redirect_uri": self.callback,
                           "response_type": "code", "state": state})
        response = _redirect(f"{self.public_hub}api/oauth2/authorize?{query}")
        self._cookie(response, STATE_COOKIE, state, STATE_TTL)
        return response

    async def oauth_callback(self, request: web.Request) -> web.StreamResponse:
        state = request.query.get("state", "")
        code = request.query.get("code", "")
        pending = self.pending.pop(state, None) if state else None
        if not code or pending is None or request.cookies.get(STATE_COOKIE) != state:
            return _page(400, "Sign-in not completed",
                         "This sign-in link is not valid any more. Open the dashboard again.")
        target, _expires = pending
        try:
            visitor = await self._visitor_for_code(code)
        except (TimeoutError, aiohttp.ClientError, ValueError, KeyError) as exc:
            self.backend.log.warning("dashboard sign-in failed: %s", exc)
            return _page(403, "Sign-in refused",
                         "The hub did not confirm your sign-in. Open the dashboard again.")
        now = time.time()
        for key in [k for k, v in self.sessions.items() if v.expires < now]:
            del self.sessions[key]
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = visitor
        self.backend.log.info("dashboard session for %s%s", visitor.name,
                              " (admin)" if visitor.admin else "")
        response = _redirect(target)
        self._cookie(response, SESSION_COOKIE, sid, self.timeout)
        response.del_cookie(STATE_COOKIE, path=self.prefix)
        return response

    async def _visitor_for_code(self, code: str) -> Visitor:
        http = self._client()
        form = {"client_id": self.client_id, "client_secret": self.client_secret,
                "grant_type": "authorization_code", "code": code,
                "redirect_uri": self.callback}
        async with http.post(f"{self.api_url}/oauth2/token", data=form,
                             timeout=aiohttp.ClientTimeout(total=30)) as r:
            if r.status != 200:
                raise ValueError(f"token endpoint answered {r.status}")
            token = json.loads(await r.read())["access_token"]
        async with http.get(f"{self.api_url}/user", headers={"Authorization": f"token {token}"},
                            timeout=aiohttp.ClientTimeout(total=30)) as r:
            if r.status != 200:
                raise ValueError(f"user endpoint answered {r.status}")
            model = json.loads(await r.read())
        if model.get("kind") != "user":
            raise ValueError("not a user")
        return Visitor(model["name"], bool(model.get("admin")), time.time() + self.timeout)

    # ------------------------------------------------------------------ the dashboard

    async def _visitor(self, request: web.Request) -> Visitor | None:
        return self._session(request) or await self._token_visitor(request)

    async def _cluster_for(self, visitor: Visitor, name: str) -> Any | None:
        """The cluster ``name`` when ``visitor`` owns it or is an admin, else None (logged)."""
        cluster = await self.backend.dashboard_cluster(name)
        if cluster is None or (cluster.username != visitor.name and not visitor.admin):
            self.backend.log.info("dashboard of cluster %r refused to %s", name, visitor.name)
            return None
        return cluster

    async def dashboard(self, request: web.Request) -> web.StreamResponse:
        visitor = await self._visitor(request)
        if visitor is None:
            if _browser_navigation(request.method, request.headers):
                return self._sign_in(request)
            return _page(401, "Sign-in needed", "Open the dashboard in your browser first.")
        name = request.match_info["cluster"]
        cluster = await self._cluster_for(visitor, name)
        if cluster is None:
            return _page(404, "No such cluster",
                         f"You have no Dask cluster named {name!r}. Clusters' dashboards are "
                         "open to their owner only.")
        target = cluster.dashboard_address
        if not target:
            return _page(503, "Dashboard not running",
                         "This cluster has no dashboard (yet). Try again in a moment.")
        url = target.rstrip("/") + "/" + request.match_info.get("tail", "")
        if request.query_string:
            url += "?" + request.query_string
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in HOP_BY_HOP | PRIVATE_REQUEST | {HEADER.lower()}}
        headers[HEADER] = dashboard_key(cluster.token)  # its dashboard answers nothing else
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, url, headers)
        return await self._http(request, url, headers)

    async def forward_auth(self, request: web.Request) -> web.StreamResponse:
        """traefik's ``ForwardAuth`` question for one dashboard request (``X-Forwarded-Uri``,
        ``-Method``; the visitor's own cookies and ``Authorization``): 200 with the cluster's
        key in :data:`HEADER` for its owner or an admin, otherwise the answer traefik returns
        to the visitor (sign-in redirect, 401, 403). Never through the public API route
        (traefik's prefix stripping marks those requests with ``X-Forwarded-Prefix``)."""
        if "X-Forwarded-Prefix" in request.headers:
            return _page(404, "Not found", "There is nothing here.")
        uri = request.headers.get("X-Forwarded-Uri", "")
        match = self.clusters_path.match(uri)
        if match is None:
            return _page(403, "Not a dashboard", "Only clusters' dashboards are checked here.")
        visitor = await self._visitor(request)
        if visitor is None:
            if request.headers.get("Authorization", "").lower().startswith("jupyterhub "):
                return _page(403, "Token not accepted",
                             "The hub did not accept this token. Use a valid JupyterHub token.")
            method = request.headers.get("X-Forwarded-Method", request.method)
            origin = _origin(self.public)
            if origin and _browser_navigation(method, request.headers):
                return self._sign_in(request, origin + uri)
            return _page(401, "Sign-in needed", "Open the dashboard in your browser first.")
        cluster = await self._cluster_for(visitor, match["cluster"])
        if cluster is None:
            return _page(403, "Not your cluster",
                         "Clusters' dashboards are open to their owner only.")
        if not cluster.token:
            return _page(503, "Dashboard not running",
                         "This cluster has no dashboard (yet). Try again in a moment.")
        return web.Response(status=200, headers={HEADER: dashboard_key(cluster.token),
                                                 "Cache-Control": "no-store"})

    async def _http(self, request: web.Request, url: str, headers: dict[str, str]) -> web.StreamResponse:
        body = await request.read() if request.can_read_body else None
        try:
            async with self._client().request(request.method, url, headers=headers, data=body,
                                              allow_redirects=False) as up:
                out = {k: v for k, v in up.headers.items()
                       if k.lower() not in HOP_BY_HOP | {"set-cookie"}}
                response = web.StreamResponse(status=up.status, headers=out)
                await response.prepare(request)
                async for chunk in up.content.iter_chunked(1 << 16):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except aiohttp.ClientError as exc:
            self.backend.log.info("dashboard %s unreachable: %s", url, exc)
            return _page(502, "Dashboard not reachable", "The cluster's scheduler did not answer.")

    async def _websocket(self, request: web.Request, url: str,
                         headers: dict[str, str]) -> web.StreamResponse:
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                     if p.strip()]
        headers = {k: v for k, v in headers.items() if not k.lower().startswith("sec-websocket")}
        try:
            upstream = await self._client().ws_connect(
                url.replace("http", "ws", 1), protocols=protocols, headers=headers
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            self.backend.log.info("dashboard websocket %s unreachable: %s", url, exc)
            return _page(502, "Dashboard not reachable", "The cluster's scheduler did not answer.")
        down = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else ())
        await down.prepare(request)

        async def pump(src, dst) -> None:
            async for msg in src:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await dst.send_str(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await dst.send_bytes(msg.data)
                else:
                    break

        tasks = [asyncio.ensure_future(pump(upstream, down)),
                 asyncio.ensure_future(pump(down, upstream))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await upstream.close()
            await down.close()
        return down


def _browser_navigation(method: str, headers: Any) -> bool:
    """A browser opening a page (worth a sign-in redirect), not a script or a websocket."""
    return method == "GET" and "upgrade" not in headers.get("Connection", "").lower()


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, empty when it has none."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


class DashboardAccess:
    """Backend mixin: no direct dashboard routes in the gateway's proxy; :class:`DashboardGate`
    serves them instead, to the owner and admins. Schedulers and workers load
    :mod:`cscale_extensions.dashboard_guard.preload`: their dashboards' loopback ports answer
    only requests with the cluster's key, which only :class:`DashboardGate` adds."""

    #: dask_gateway.dashboard_session_timeout of the settings (set by gateway.configure)
    dashboard_session_timeout: float = 3600.0

    def get_scheduler_command(self, cluster):
        cmd = super().get_scheduler_command(cluster)
        n = len(cluster.config.scheduler_cmd)  # before dask-gateway's own preload and its options
        return [*cmd[:n], "--preload", PRELOAD, *cmd[n:]]

    def get_worker_command(self, cluster, worker_name, scheduler_address=None):
        cmd = super().get_worker_command(cluster, worker_name, scheduler_address)
        return [*cmd, "--preload", PRELOAD]

    async def dashboard_cluster(self, name: str):
        """The cluster ``name`` of the gateway's database, None if unknown."""
        return self.db.get_cluster(name)

    async def setup(self, app):
        await super().setup(app)
        add_route = self.proxy.add_route

        async def add_route_but_dashboards(kind=None, sni=None, path=None, target=None):
            if kind == "PATH" and path and path.startswith("/clusters/"):
                return  # through DashboardGate (the default route: the gateway's application)
            await add_route(kind=kind, sni=sni, path=path, target=target)

        self.proxy.add_route = add_route_but_dashboards
        # clusters reconciled while the proxy was being set up may have had theirs added
        prefix = self.proxy.prefix + "/clusters/"
        for kind, path in [k for k in self.proxy.routes if k[0] == "PATH"]:
            if path.startswith(prefix):
                await self.proxy.remove_route(kind=kind, path=path[len(self.proxy.prefix):])
        DashboardGate(self, app, self.dashboard_session_timeout).install()
