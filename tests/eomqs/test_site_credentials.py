"""A site's credentials (``federation.sites[].headers``) reach that site and no one else.

The attack: a site (compromised, or one whose catalogue someone else writes) names another
host in its links, or redirects there, to collect the API key EO-MQS sends it. And an
operator who put credentials into a site's URL must not see them shown to every user by
``/federation``.
"""

from __future__ import annotations

import json
import random

import requests
from sitekit import TestSite, eomqs_server, make_item, serve
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

KEY = "site-secret-key"


def recording(app, seen: list[dict[str, str]]):
    """``app`` with the headers of every HTTP request it gets appended to ``seen``."""

    async def wrapped(scope, receive, send):
        if scope["type"] == "http":
            seen.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
        await app(scope, receive, send)

    return wrapped


def test_site_links_and_redirects_to_another_host_get_no_credentials():
    """A site whose search link names another host, and one whose search redirects to another
    host: the other host is asked (the search works) but never sees the site's API key."""
    rng = random.Random(11)
    items = [make_item("c1", n, rng) for n in range(6)]
    elsewhere = TestSite(items)
    linking, redirecting = TestSite(items), TestSite(items)
    at_elsewhere: list[dict[str, str]] = []
    at_linking: list[dict[str, str]] = []
    with serve(recording(elsewhere.app, at_elsewhere)) as other:

        async def landing_naming_other(request):
            body = json.loads((await linking.landing(request)).body)
            for ln in body["links"]:
                if ln["rel"] == "search":
                    ln["href"] = other.url + "search"
            return JSONResponse(body)

        def redirect(request):
            return RedirectResponse(other.url + "search", 307)

        linking.app.router.routes.insert(0, Route("/", landing_naming_other))
        redirecting.app.router.routes.insert(0, Route("/search", redirect, methods=["GET", "POST"]))
        with (
            serve(recording(linking.app, at_linking)) as a,
            serve(redirecting.app) as b,
        ):
            entries = [
                {"name": "linking", "url": a.url, "headers": {"X-Api-Key": KEY}},
                {"name": "redirecting", "url": b.url, "headers": {"X-Api-Key": KEY}},
            ]
            with eomqs_server(entries) as srv:
                doc = requests.post(srv.url + "search", json={"limit": 50}, timeout=30).json()
    assert doc["federation:missing"] == [], doc.get("federation:sites")
    assert at_elsewhere, "the other host was never asked: the test set nothing up"
    leaked = [h for h in at_elsewhere if KEY in h.values()]
    assert not leaked, f"the site's API key reached another host: {leaked[0]}"
    assert at_linking and all(h.get("x-api-key") == KEY for h in at_linking)


def test_federation_page_shows_no_credentials_of_a_site_url():
    """``/federation`` is public: a site URL with user:password@ or an API key in its query
    is shown without them."""
    rng = random.Random(12)
    site = TestSite([make_item("c1", n, rng) for n in range(3)])
    with serve(site.app) as s:
        url = f"http://reader:pa55word@127.0.0.1:{s.port}/?apikey=query-secret"
        with eomqs_server([{"name": "one", "url": url}]) as srv:
            r = requests.get(srv.url + "federation", timeout=30)
    assert r.status_code == 200
    text = r.text
    assert "pa55word" not in text and "query-secret" not in text and "reader" not in text
    assert r.json()["sites"][0]["url"] == f"http://127.0.0.1:{s.port}/"
