"""EO-MQS searches as openEO ``load_stac`` sources, with the federation's per-site status."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from cscale_extensions.notebook.helpers import federated_search, stac_client, stac_url

log = logging.getLogger(__name__)


def connect(local_collections_path: str = "."):
    """An ``openeo.local.LocalConnection`` with the platform's fixes installed."""
    from cscale_extensions.notebook.openeo_local import compat

    compat.install()
    from openeo.local import LocalConnection

    return LocalConnection(local_collections_path)


def _temporal_extent(time_range: str) -> list[str]:
    """A STAC ``start/end`` date range (both days included) as openEO's [start, end) extent."""
    try:
        start, end = (part.strip() for part in time_range.split("/"))
        first = date.fromisoformat(start[:10])
        last = date.fromisoformat(end[:10])
    except ValueError as exc:
        raise ValueError(
            f"time_range must be 'YYYY-MM-DD/YYYY-MM-DD', got {time_range!r}: {exc}"
        ) from None
    if last < first:
        raise ValueError(f"time_range {time_range!r} ends before it starts")
    return [first.isoformat(), (last + timedelta(days=1)).isoformat()]


@dataclass
class FederatedSource:
    """A collection of the federation, narrowed to an area and a time range.

    ``url`` is the collection's address on EO-MQS (what ``load_stac`` reads); ``items`` and
    ``sites`` are what the same search on EO-MQS returned, so a notebook can show which
    sites answered before it loads anything (``missing`` names those that did not).
    """

    collection: str
    url: str
    bbox: list[float]
    time_range: str
    items: list = field(repr=False)
    sites: dict[str, dict[str, Any]]

    @property
    def missing(self) -> dict[str, str]:
        return {s: v["reason"] for s, v in self.sites.items() if v["status"] != "ok"}

    @property
    def spatial_extent(self) -> dict[str, float]:
        w, s, e, n = self.bbox
        return {"west": w, "south": s, "east": e, "north": n, "crs": 4326}

    @property
    def temporal_extent(self) -> list[str]:
        return _temporal_extent(self.time_range)

    def load(self, connection, bands: list[str]):
        """``connection.load_stac`` of this source's collection, area, time range and bands."""
        if self.missing:
            log.warning("sites missing from %s: %s", self.collection, self.missing)
        absent = [b for b in bands if self.items and b not in self.items[0].assets]
        if absent:
            have = sorted(self.items[0].assets)
            raise ValueError(f"{self.collection} has no band(s) {absent}; its assets are {have}")
        return connection.load_stac(
            url=self.url,
            spatial_extent=self.spatial_extent,
            temporal_extent=self.temporal_extent,
            bands=list(bands),
        )

    def describe(self) -> str:
        """One line per site: status and number of items it returned."""
        lines = [f"{len(self.items)} items of {self.collection} in {self.time_range}"]
        for site, s in sorted(self.sites.items()):
            extra = f" ({s['reason']})" if s["status"] != "ok" and s["reason"] else ""
            lines.append(f"  {site}: {s['status']}, {s['returned']} items{extra}")
        return "\n".join(lines)


def federated_source(
    collection: str, *, bbox: list[float], time_range: str, timeout: float = 60
) -> FederatedSource:
    """Search EO-MQS (``$CSCALE_STAC_URL``) and describe the result as a ``load_stac`` source.

    Raises ``ValueError`` for an unknown collection, a malformed bbox or time range, and when the
    search finds nothing (``load_stac`` would fail later with a less helpful message).
    """
    if len(bbox) != 4 or not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
        raise ValueError(f"bbox must be [west, south, east, north] with west<east, got {bbox}")
    _temporal_extent(time_range)
    client = stac_client(timeout=timeout)
    known = [c.id for c in client.get_collections()]
    if collection not in known:
        raise ValueError(f"unknown collection {collection!r}; EO-MQS offers {sorted(known)}")
    search = client.search(collections=[collection], bbox=bbox, datetime=time_range)
    items, sites = federated_search(search)
    if not items:
        raise ValueError(f"no item of {collection} in {bbox} during {time_range}")
    url = stac_url().rstrip("/") + f"/collections/{collection}"
    return FederatedSource(collection, url, list(bbox), time_range, items, sites)
