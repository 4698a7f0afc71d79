"""Thin helpers for the workflow notebooks: the federated search's status and labelled plots.

The notebooks show the science themselves; these only hide plumbing that would distract
(walking result pages for the federation's status, axes in km with a colour bar).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

STAC_ENV = "CSCALE_STAC_URL"


def stac_url() -> str:
    """The platform's STAC API (EO-MQS), from ``$CSCALE_STAC_URL``; a clear error when unset."""
    url = os.environ.get(STAC_ENV, "").strip()
    if not url:
        raise RuntimeError(
            f"${STAC_ENV} is not set: start this notebook from a C-SCALE Hub server "
            f"(the platform sets it) or export {STAC_ENV}=<a STAC API URL>"
        )
    return url


def stac_client(timeout: float = 60):
    """A ``pystac_client.Client`` for :func:`stac_url` (with a request timeout)."""
    from pystac_client import Client

    return Client.open(stac_url(), timeout=timeout)


def federated_search(search) -> tuple[list, dict[str, dict[str, Any]]]:
    """All items of a pystac-client ``ItemSearch`` and the per-site status EO-MQS reported.

    Every result page of EO-MQS names the sites it could not search (``federation:missing``)
    and reports each site (``federation:sites``: status, items returned, reason). The status
    returned here merges all pages: ``{site: {"status": "ok"|"missing", "returned": n,
    "reason": str}}``; a site missing on any page is missing. A plain STAC API (one site)
    reports nothing: the status is then empty.
    """
    import pystac

    items: list = []
    status: dict[str, dict[str, Any]] = {}
    for page in search.pages_as_dicts():
        for site, entry in (page.get("federation:sites") or {}).items():
            s = status.setdefault(site, {"status": "ok", "returned": 0, "reason": ""})
            s["returned"] += int(entry.get("returned") or 0)
            if entry.get("status", "ok") != "ok":
                s["status"] = "missing"
                s["reason"] = str(entry.get("reason") or entry.get("detail") or "")
        for site in page.get("federation:missing") or []:
            s = status.setdefault(str(site), {"status": "missing", "returned": 0, "reason": ""})
            s["status"] = "missing"
        items.extend(pystac.Item.from_dict(f) for f in page.get("features", []))
    return items, status


def search_with_status(search) -> tuple[list, dict[str, str]]:
    """All items of a pystac-client ``ItemSearch`` and the sites the federation reported
    missing on any page, as {site: reason} (empty when the result is complete)."""
    items, status = federated_search(search)
    return items, {site: s["reason"] for site, s in status.items() if s["status"] != "ok"}


def item_sites(item) -> list[str]:
    """The sites an item came from (``federation:sites``), or ["?"] when not reported."""
    sites = item.properties.get("federation:sites")
    if isinstance(sites, str):
        return [sites]
    return list(sites) if sites else ["?"]


def union_bbox(items: Iterable) -> list[float]:
    """[west, south, east, north] covering every item's bbox."""
    boxes = [i.bbox for i in items if i.bbox]
    if not boxes:
        raise ValueError("no item has a bbox")
    return [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]


def plot_map(
    ax,
    da,
    *,
    title: str,
    label: str,
    cmap: str = "viridis",
    vmin=None,
    vmax=None,
    colorbar: bool = True,
):
    """``da`` (2-D, dims y/x in metres of a projected CRS) on ``ax`` with axes in km and a
    colour bar labelled ``label``; returns the image."""
    x, y = da["x"].values / 1000, da["y"].values / 1000
    dx = (x[1] - x[0]) / 2 if x.size > 1 else 0.015
    dy = (y[1] - y[0]) / 2 if y.size > 1 else -0.015
    im = ax.imshow(
        da.values,
        extent=[x[0] - dx, x[-1] + dx, y[-1] + dy, y[0] - dy],
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
    )
    crs = ""
    try:
        epsg = da.odc.crs.epsg
        crs = f"EPSG:{epsg}" if epsg else ""
    except Exception:  # noqa: BLE001 - plain xarray without odc metadata
        pass
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.yaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel(f"easting (km{', ' + crs if crs else ''})")
    ax.set_ylabel("northing (km)")
    ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, label=label, shrink=0.85)
    return im


def plot_footprints(
    ax, items, colour_by: str = "collection", colours: dict[str, str] | None = None
):
    """Item footprints (lon/lat) on ``ax``, one colour per value of ``colour_by``
    (``"collection"`` or ``"site"``), with a legend. Pass the same ``colours`` dict to several
    calls to keep colours consistent between axes."""
    from matplotlib.ticker import MaxNLocator
    from shapely.geometry import shape

    colours = {} if colours is None else colours
    used: list[str] = []
    drawn: set[tuple[str, bytes]] = set()
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for item in items:
        keys = [item.collection_id] if colour_by == "collection" else item_sites(item)
        geom = shape(item.geometry)
        for key in keys:
            colour = colours.setdefault(key, palette[len(colours) % len(palette)])
            if key not in used:
                used.append(key)
            if (key, geom.wkb) in drawn:  # identical footprints (a time series) drawn once
                continue
            drawn.add((key, geom.wkb))
            for poly in getattr(geom, "geoms", [geom]):
                xs, ys = poly.exterior.xy
                ax.fill(xs, ys, facecolor=colour, edgecolor=colour, alpha=0.25, linewidth=2)
    for key in used:
        ax.plot([], [], color=colours[key], linewidth=6, alpha=0.4, label=key)
    ax.margins(0.15)
    ax.ticklabel_format(useOffset=False)
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    lats = [c[1] for i in items for c in shape(i.geometry).envelope.exterior.coords]
    if lats:  # degrees of longitude shrink with latitude
        ax.set_aspect(
            1 / max(0.1, math.cos(math.radians(sum(lats) / len(lats)))), adjustable="datalim"
        )
    if used:
        ax.legend(loc="upper right", fontsize="small", title=colour_by)
