"""EO-MQS's outgoing client: sites addressed by host name (system resolver) and redirects."""

from __future__ import annotations

import random

import requests
from sitekit import TestSite, eomqs_server, make_item, serve
from starlette.responses import RedirectResponse
from starlette.routing import Route


def test_site_by_host_name_and_redirected_search():
    """``localhost`` is resolved like any host name (getaddrinfo, /etc/hosts); a site whose
    search answers with a redirect is followed."""
    rng = random.Random(8)
    items = [make_item("c1", n, rng) for n in range(7)]
    site = TestSite(items)
    moved = TestSite(items)
    redirected = []

    def redirect(request):
        redirected.append(request.method)
        return RedirectResponse("/found", 307)

    moved.app.router.routes.insert(0, Route("/search", redirect, methods=["GET", "POST"]))
    moved.app.router.routes.append(Route("/found", moved.search, methods=["GET", "POST"]))
    with serve(site.app) as s, serve(moved.app) as m:
        entries = [
            {"name": "named", "url": f"http://localhost:{s.port}/"},
            {"name": "moved", "url": m.url},
        ]
        with eomqs_server(entries) as srv:
            doc = requests.post(srv.url + "search", json={"limit": 50}, timeout=30).json()
    assert doc["federation:missing"] == []
    assert {i["id"] for i in doc["features"]} == {i["id"] for i in items}
    assert all(i["properties"]["federation:sites"] == ["named", "moved"] for i in doc["features"])
    assert redirected == ["POST"]  # one search, sent again to where it was redirected


def test_site_cookies_are_not_sent_back():
    """The client serves every user's searches: a cookie a site sets is not replayed to it."""
    rng = random.Random(9)
    site = TestSite([make_item("c1", n, rng) for n in range(5)])
    seen: list[str | None] = []
    landing, search = site.landing, site.search

    async def landing_with_cookie(request):
        resp = await landing(request)
        resp.set_cookie("session", "someone-else")
        return resp

    async def search_seen(request):
        seen.append(request.headers.get("cookie"))
        resp = await search(request)
        resp.set_cookie("session", "someone-else")
        return resp

    site.app.router.routes[:0] = [
        Route("/", landing_with_cookie),
        Route("/search", search_seen, methods=["GET", "POST"]),
    ]
    with serve(site.app) as s:
        entries = [{"name": "one", "url": f"http://localhost:{s.port}/"}]  # a name: cookies stick
        with eomqs_server(entries) as srv:
            for n in range(3):
                r = requests.post(srv.url + "search", json={"limit": 2 + n}, timeout=30)
                assert r.status_code == 200 and len(r.json()["features"]) == 2 + n
    assert len(seen) >= 3 and seen == [None] * len(seen)


def test_environment_proxies_and_netrc_switch_the_client_to_read_them(monkeypatch, tmp_path):
    """aiohttp reads proxies and netrc on every request only when the environment has any."""
    from cscale_extensions.services.eomqs.client import _uses_environment

    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not _uses_environment()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.org:3128")
    assert _uses_environment()
    monkeypatch.delenv("HTTPS_PROXY")
    (tmp_path / "netrc").write_text("machine site.example.org login a password b\n")
    assert _uses_environment()
