"""Collections of the federation under one endpoint.

A collection id held by several sites is ONE logical collection: its metadata comes from the first
site in ``federation.sites`` order that holds it, its extents are the union of all, and
``federation:sites`` lists every site serving it (in configuration order); each serving site is
also added to ``providers`` with the role ``host``. Links and provider URLs that point into a site
are rewritten or dropped (links.py): users reach the sites' metadata through EO-MQS only.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urljoin

from cscale_extensions.services.eomqs.links import SiteLinks

#: the STAC version of EO-MQS's landing page and collections (conformance URIs stay v1.0.0)
STAC_VERSION = "1.1.0"


def _union_bbox(boxes: list[list[float]]) -> list[float]:
    boxes = [b for b in boxes if isinstance(b, list) and len(b) in (4, 6)]
    if not boxes:
        return [-180.0, -90.0, 180.0, 90.0]
    four = [[b[0], b[1], b[len(b) // 2], b[len(b) // 2 + 1]] for b in boxes]
    crosses = any(b[0] > b[2] for b in four)
    west = min(b[0] for b in four)
    east = max(b[2] for b in four)
    if crosses:
        west, east = -180.0, 180.0
    return [west, min(b[1] for b in four), east, max(b[3] for b in four)]


def _union_interval(intervals: list[list[Any]]) -> list[Any]:
    from cscale_extensions.services.eomqs.ordering import instant

    starts = [i[0] if isinstance(i, list) and len(i) == 2 else None for i in intervals]
    ends = [i[1] if isinstance(i, list) and len(i) == 2 else None for i in intervals]
    start = (
        None if any(s is None or instant(s) is None for s in starts) else min(starts, key=instant)
    )
    end = None if any(e is None or instant(e) is None for e in ends) else max(ends, key=instant)
    return [start, end]


def _extent(colls: list[dict[str, Any]]) -> dict[str, Any]:
    boxes, intervals = [], []
    for c in colls:
        ext = c.get("extent") if isinstance(c.get("extent"), dict) else {}
        sp = (
            (ext.get("spatial") or {}).get("bbox") if isinstance(ext.get("spatial"), dict) else None
        )
        tm = (
            (ext.get("temporal") or {}).get("interval")
            if isinstance(ext.get("temporal"), dict)
            else None
        )
        if isinstance(sp, list) and sp and isinstance(sp[0], list):
            boxes.append(sp[0])
        if isinstance(tm, list) and tm and isinstance(tm[0], list):
            intervals.append(tm[0])
    return {
        "spatial": {"bbox": [_union_bbox(boxes)]},
        "temporal": {"interval": [_union_interval(intervals) if intervals else [None, None]]},
    }


def merge_collections(
    per_site: list[tuple[Any, list[dict[str, Any]]]], links: SiteLinks
) -> dict[str, dict[str, Any]]:
    """``[(site, [collection, ...]), ...]`` in configuration order -> merged collections by id;
    ``links`` knows every site's address (their links are rewritten or dropped)."""
    by_id: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for site, colls in per_site:
        for c in colls:
            by_id.setdefault(c["id"], []).append((site, c))
    out: dict[str, dict[str, Any]] = {}
    for cid in sorted(by_id):
        holders = by_id[cid]
        merged = copy.deepcopy(holders[0][1])
        merged["type"] = "Collection"
        merged["stac_version"] = (
            STAC_VERSION  # one version across EO-MQS (1.0 documents are valid 1.1)
        )
        merged.setdefault("description", merged.get("title") or cid)
        merged.setdefault("license", "other")
        if len(holders) > 1 or not isinstance(merged.get("extent"), dict):
            merged["extent"] = _extent([c for _, c in holders])
        providers = [p for p in merged.get("providers") or [] if isinstance(p, dict)]
        names = {p.get("name") for p in providers}
        for _site, c in holders[1:]:
            for p in c.get("providers") or []:
                if isinstance(p, dict) and p.get("name") not in names:
                    providers.append(p)
                    names.add(p.get("name"))
        for site, _ in holders:
            if site.title not in names:
                providers.append({"name": site.title, "roles": ["host"]})
                names.add(site.title)
        merged["providers"] = [_public_provider(p, links) for p in providers]
        merged["federation:sites"] = [site.name for site, _ in holders]
        merged["links"] = links.public(merged.get("links"), _doc_url(*holders[0]))
        out[cid] = merged
    return out


def _public_provider(provider: dict[str, Any], links: SiteLinks) -> dict[str, Any]:
    """The provider without a ``url`` that points into a site (users cannot reach it)."""
    url = provider.get("url")
    if isinstance(url, str) and links.is_site_url(url):
        return {k: v for k, v in provider.items() if k != "url"}
    return provider


def _doc_url(site: Any, coll: dict[str, Any]) -> str:
    """Where the collection document of ``site`` lives (to resolve its relative links)."""
    for ln in coll.get("links") or []:
        if isinstance(ln, dict) and ln.get("rel") == "self" and isinstance(ln.get("href"), str):
            return urljoin(site.url, ln["href"])
    caps = getattr(site, "caps", None)
    return caps.collections_href if caps else site.url
