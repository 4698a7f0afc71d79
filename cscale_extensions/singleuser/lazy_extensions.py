"""Heavy server extensions loaded at their first request instead of at every server start.

Why: two extensions of the user environment cost about half of a server's start in imports
alone: panel's (JupyterLab's "Panel Preview": bokeh and panel, ~2 CPU-s) and
dask_labextension's (the Dask panel's cluster API and dashboard proxy: distributed, ~1.2
CPU-s). Most servers serve neither for minutes, many never; a workshop paid them for each of
its 50 starts on 2 cores. Here each is switched off in jupyter_server's configuration
(``share/jupyter-server-config/z-cscale-lazy-extensions.json``, read after the packages' own
files) and this extension routes its URL prefixes instead: the first authenticated request
there loads the real extension with its own load function (so its routes are exactly its
own, registered behind this one) and is answered with a redirect to the same URL (307: method
and body kept), which the real routes then serve; this route matches nothing any more.

The import blocks the server once, for its second or so (dask-labextension's import needs the
server's event loop, so it cannot run in a thread); concurrent first requests wait for the one
load, and a load that fails is a 503 that names the extension (the next request tries again). An anonymous request loads nothing (403, or the login
redirect for a page). A websocket can't follow a redirect: these extensions' websockets are
opened by pages they served first (a dashboard, a preview), which loaded them.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.httputil import HTTPServerRequest
from tornado.routing import Matcher, Rule

#: module -> the URL prefixes (under the server's base URL) its handlers serve
LAZY: dict[str, tuple[str, ...]] = {
    "dask_labextension": ("dask/",),
    "panel.io.jupyter_server_extension": ("panel-preview/", "panel_dist/"),
}


class Pending(Matcher):
    """Matches the prefixes of one lazy extension until it is loaded."""

    def __init__(self, prefixes: list[str]):
        self.prefixes = prefixes
        self.loaded = False
        self.lock = asyncio.Lock()

    def match(self, request: HTTPServerRequest) -> dict[str, Any] | None:
        if self.loaded or not any(request.path.startswith(p) for p in self.prefixes):
            return None
        return {}


class LoadOnFirstRequest(JupyterHandler):
    """Loads the extension behind this route, then sends the client to the same URL."""

    def initialize(self, module: str, pending: Pending) -> None:
        self.module, self.pending = module, pending

    async def _load_then_redirect(self) -> None:
        if self.current_user is None:
            if self.request.method in ("GET", "HEAD"):
                self.redirect(self.get_login_url())
                return
            raise web.HTTPError(403)
        async with self.pending.lock:
            if not self.pending.loaded:
                try:  # on the event loop's thread: dask-labextension's import needs its loop
                    mod = importlib.import_module(self.module)
                    load = getattr(mod, "_load_jupyter_server_extension", None)
                    load = load or mod.load_jupyter_server_extension
                    load(self.settings["serverapp"])
                except Exception:
                    self.log.exception("server extension %s failed to load", self.module)
                    raise web.HTTPError(
                        503, f"{self.module} could not be loaded; the server log says why"
                    ) from None
                self.pending.loaded = True
                self.log.info("server extension %s loaded at its first request", self.module)
        self.redirect(self.request.uri or "/", status=307)

    get = head = post = put = patch = delete = options = _load_then_redirect  # type: ignore[assignment]

    def check_xsrf_cookie(self) -> None:
        """Nothing is changed here; the real handler checks the redirected request."""


def _load_jupyter_server_extension(serverapp: Any) -> None:
    base = serverapp.web_app.settings["base_url"]
    rules = []
    for module, prefixes in LAZY.items():
        if serverapp.jpserver_extensions.get(module):
            continue  # loaded at start as usual (enabled again in the configuration)
        pending = Pending([url_path_join(base, p) for p in prefixes])
        rules.append(Rule(pending, LoadOnFirstRequest, {"module": module, "pending": pending}))
    if rules:
        serverapp.web_app.add_handlers(".*$", rules)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": __name__}]
