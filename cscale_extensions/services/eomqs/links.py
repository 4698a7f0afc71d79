"""Links of site documents made reachable for users.

Sites advertise their own addresses (e.g. a collection's ``queryables`` link at
``http://127.0.0.1:<port>/collections/<id>/queryables``); users reach EO-MQS only, often through
the hub. A link into a site is rewritten to the same resource in EO-MQS when EO-MQS serves it
(a collection, its items, one item) and dropped otherwise. Rewritten links carry hrefs relative
to EO-MQS's base URL (the base differs per request); :func:`absolute` completes them. Links
elsewhere (licences, documentation) are kept as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urljoin, urlsplit

#: link relations that point into a site's own API and are replaced by EO-MQS's own links
API_RELS = frozenset(
    {
        "self",
        "root",
        "parent",
        "child",
        "item",
        "items",
        "next",
        "prev",
        "previous",
        "queryables",
        "http://www.opengis.net/def/rel/ogc/1.0/queryables",
        "aggregate",
        "aggregations",
        "collection",
        "search",
        "data",
        "conformance",
        "service-desc",
        "service-doc",
    }
)
#: site paths EO-MQS serves under the same path (relative to the site's and EO-MQS's base)
_SERVED = re.compile(r"^collections/[^/?#]+(?:/items(?:/[^/?#]+)?)?$")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class SiteLinks:
    """Rewrites links of documents from the sites whose base URLs are ``site_urls``."""

    def __init__(self, site_urls: Iterable[str]):
        self.bases = [u if u.endswith("/") else u + "/" for u in site_urls]
        self.origins = {_origin(u) for u in self.bases}

    def is_site_url(self, url: str) -> bool:
        """Whether ``url`` (absolute) points at a host and port of a site."""
        return _origin(url) in self.origins

    def public(self, links: Any, doc_url: str | None = None) -> list[dict[str, Any]]:
        """The ``links`` a user may get: API relations and unreachable site links dropped, site
        links to resources EO-MQS serves rewritten to hrefs relative to EO-MQS's base.

        ``doc_url`` is the address the document came from (to resolve relative hrefs); without
        it a relative href cannot be placed and its link is dropped.
        """
        out: list[dict[str, Any]] = []
        for ln in links if isinstance(links, list) else []:
            if not isinstance(ln, dict) or not isinstance(ln.get("href"), str):
                continue
            if ln.get("rel") in API_RELS:
                continue
            href = urljoin(doc_url, ln["href"]) if doc_url else ln["href"]
            scheme, netloc = _origin(href)
            if not scheme or not netloc:
                continue
            if (scheme, netloc) not in self.origins:
                out.append(ln if href == ln["href"] else {**ln, "href": href})
                continue
            local = self._served_path(href)
            if local is not None:
                out.append({**ln, "href": local})
        return out

    def _served_path(self, href: str) -> str | None:
        """The path relative to EO-MQS's base of a site URL EO-MQS serves too, else None."""
        for base in self.bases:
            if href.startswith(base):
                rest = href[len(base) :]
                if _SERVED.match(rest):
                    return rest
        return None


def absolute(links: list[dict[str, Any]], base: str) -> list[dict[str, Any]]:
    """``links`` with hrefs relative to EO-MQS (from :meth:`SiteLinks.public`) made absolute."""
    out = []
    for ln in links:
        href = ln["href"]
        out.append(ln if urlsplit(href).scheme else {**ln, "href": base + href})
    return out
