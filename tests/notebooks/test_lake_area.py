"""07-lake-area-timeseries runs headless on the shared stack (papermill in the demo member's
server, as the user would) and its numbers agree with oracles computed here, independently of
the notebook's helpers: water areas recomputed with rasterio/numpy straight from the prepared
COGs, the reference polygons' own areas measured with shapely, the gap flags and the filled
area from the CFmask COGs of the Landsat series."""

from __future__ import annotations

import json
import math
import os
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from pyproj import Transformer
from rasterio.warp import Resampling, reproject, transform_bounds
from rasterio.windows import from_bounds
from shapely import transform as shapely_transform
from shapely.geometry import box, mapping, shape

pytestmark = pytest.mark.slow

NB = "07-lake-area-timeseries"
L5, S2 = "landsat-5-tm-sr", "sentinel-2-l1c"
S2_SCENE = "S2A_MSIL1C_20170216T102101_T33UUU_subset"
#: the notebook's default area (a lake of the Havel) and the OpenStreetMap polygon of that lake
S2_BBOX = [12.669, 52.513, 12.689, 52.525]
LAKE_OSM_ID = "241049680"
L5_BBOX = [-106.925, 40.280, -106.904, 40.296]
#: LT50350322008222PAC01: CFmask marks 95 % of the sample raster as cloud or cloud shadow
CLOUDY_L5_DATE = "2008-08-09"


def ok(result: dict) -> dict:
    assert result["error"] is None, result["error"]
    return result["scraps"]


def check_products(result: dict) -> pd.DataFrame:
    """The CSV and the occurrence COG exist in the user's home; the CSV is the series scrap."""
    home = os.path.dirname(os.path.dirname(result["out"]))
    products = result["scraps"]["products"]
    assert set(products) == {"series_csv", "occurrence"}
    for path in products.values():
        assert path.startswith(home + os.sep) and os.path.exists(path), path
    with rasterio.open(products["occurrence"]) as ds:
        assert ds.crs is not None and ds.profile.get("tiled") and ds.width > 0
    csv = pd.read_csv(products["series_csv"])
    scraps = pd.DataFrame(result["scraps"]["series"])
    assert list(csv["date"]) == list(scraps["date"])
    assert np.allclose(csv["area_km2"], scraps["area_km2"].astype(float), equal_nan=True)
    assert list(csv["flagged"]) == list(scraps["flagged"])
    return csv


def s2_dir(platform) -> Path:
    return platform.state_dir / "eodata" / "cogs" / S2 / S2_SCENE


def utm(crs: str):
    """(lon/lat -> crs, crs -> lon/lat) coordinate functions for shapely."""
    fw = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    bw = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    return (
        lambda xy: np.column_stack(fw.transform(xy[:, 0], xy[:, 1])),
        lambda xy: np.column_stack(bw.transform(xy[:, 0], xy[:, 1])),
    )


def osm_water_km2(platform, bbox, crs="EPSG:32633") -> float:
    """Area of the OpenStreetMap water polygons inside ``bbox``, measured in UTM with shapely."""
    doc = json.loads((s2_dir(platform) / "reference-polygons.geojson").read_text())
    to_utm, _ = utm(crs)
    area = shapely_transform(box(*bbox), to_utm)
    return (
        sum(
            shapely_transform(shape(f["geometry"]), to_utm).intersection(area).area
            for f in doc["features"]
            if f["properties"].get("class") == "water"
            and f["properties"].get("source") == "OpenStreetMap"
        )
        / 1e6
    )


def disk_mndwi_area_km2(platform, bbox, threshold: float) -> float:
    """Oracle: MNDWI = (B03 − B11)/(B03 + B11) > ``threshold`` on the native 20 m grid of B11 over
    ``bbox``, B03 (10 m) averaged onto it, read with rasterio (no odc-stac, no EO-MQS)."""
    folder = s2_dir(platform)
    with rasterio.open(folder / "B11.tif") as ds:
        window = from_bounds(*transform_bounds("EPSG:4326", ds.crs, *bbox), ds.transform)
        window = window.round_offsets().round_lengths()
        swir = ds.read(1, window=window).astype(float) * 1e-4
        transform, crs = ds.window_transform(window), ds.crs
    green = np.zeros(swir.shape)
    with rasterio.open(folder / "B03.tif") as ds:
        reproject(rasterio.band(ds, 1), green, dst_transform=transform, dst_crs=crs,
                  resampling=Resampling.average)  # fmt: skip
    green *= 1e-4
    mndwi = (green - swir) / (green + swir)
    return int((mndwi > threshold).sum()) * 20 * 20 / 1e6


def test_07_defaults_lake_area_against_the_cogs_and_the_reference(run_notebook, platform):
    """The default run (one Sentinel-2 scene over a lake): its water area is the one MNDWI gives
    at the notebook's threshold when recomputed from the COGs, and the OpenStreetMap water in the
    area is within a few percent of it (mixed shore pixels count as water, so a little above)."""
    result = run_notebook(NB, "07-defaults")
    s = ok(result)
    csv = check_products(result)
    assert s["collection"] == S2 and s["n_items"] == 1 and s["n_usable"] == 1
    assert s["flagged_dates"] == [] and s["unmaskable_flags"] == ["shadow", "snow"]
    (scene,) = s["series"]
    assert scene["date"] == "2017-02-16" and not scene["flagged"] and scene["valid_fraction"] > 0.99
    assert 0.0 < scene["threshold"] < 0.3  # Otsu between the water and the land mode
    area = scene["area_km2"]
    assert area == pytest.approx(
        disk_mndwi_area_km2(platform, S2_BBOX, scene["threshold"]), rel=0.08
    )
    reference = osm_water_km2(platform, S2_BBOX)
    assert 0.3 < reference < 0.4
    assert reference * 0.95 <= area <= reference * 1.2, (area, reference)
    v = s["validation"]
    assert v["source"] == "OpenStreetMap" and v["precision"] > 0.95 and v["recall"] > 0.9
    # one usable scene: the occurrence map is that scene's water mask
    with rasterio.open(s["products"]["occurrence"]) as ds:
        occ = ds.read(1)
        px_km2 = abs(ds.transform.a * ds.transform.e) / 1e6
    assert int((occ >= 0.5).sum()) * px_km2 == pytest.approx(area, rel=1e-6)
    assert s["occurrence_area_km2"] == pytest.approx(area) and csv["filled"].tolist() == [False]


def test_07_with_a_lake_polygon(run_notebook, platform):
    """A second parameter set: only the pixels of the lake's OpenStreetMap outline, buffered by
    100 m, count. The lake area the notebook reports is the buffered polygon's, and the water in
    it is the lake's own area within 15 %."""
    doc = json.loads((s2_dir(platform) / "reference-polygons.geojson").read_text())
    lake = shape(
        next(f for f in doc["features"] if f["properties"].get("osm_id") == LAKE_OSM_ID)["geometry"]
    )
    to_utm, to_lonlat = utm("EPSG:32633")
    buffered = shapely_transform(lake, to_utm).buffer(100)
    s = ok(
        run_notebook(NB, "07-polygon", lake_polygon=mapping(shapely_transform(buffered, to_lonlat)))
    )
    assert s["lake_polygon"] is True
    assert s["lake_km2"] == pytest.approx(buffered.area / 1e6, rel=0.05)
    lake_km2 = shapely_transform(lake, to_utm).area / 1e6
    (scene,) = s["series"]
    assert lake_km2 * 0.9 <= scene["area_km2"] <= min(lake_km2 * 1.15, s["lake_km2"])


def l5_cfmask_valid_fraction(platform) -> dict[str, float]:
    """Oracle: per date of the Landsat 5 sample, the share of the raster CFmask calls clear land
    or water (not cloud, shadow, snow or fill), read from the fmask COGs."""
    out = {}
    for folder in sorted((platform.state_dir / "eodata" / "cogs" / L5).iterdir()):
        year, doy = int(folder.name[9:13]), int(folder.name[13:16])
        day = date.fromordinal(date(year, 1, 1).toordinal() + doy - 1).isoformat()
        with rasterio.open(folder / "fmask.tif") as ds:
            fmask = ds.read(1)
        out[day] = float(np.isin(fmask, (0, 1)).mean())
    return out


def test_07_on_landsat_flags_the_cloudy_scenes_and_fills_the_gaps(run_notebook, platform):
    """The Landsat 5 series (03's rule, no green band): scenes CFmask shows mostly clouded are
    flagged and get no area, the others are used. The area has no water, so the fill is tested at
    the one level where it does something there, ``fill_occurrence=0``: every masked pixel of a
    usable scene that some usable scene saw counts as water, so the filled area must be the
    CFmask-masked area (up to the grid's one-pixel edge)."""
    s = ok(
        run_notebook(
            NB, "07-l5", collection=L5, bbox=L5_BBOX, water_index="red-swir", water_threshold=0.0,
            qa_band="fmask", min_valid_fraction=0.5, fill_occurrence=0.0,
        )
    )  # fmt: skip
    oracle = l5_cfmask_valid_fraction(platform)
    series = {row["date"]: row for row in s["series"]}
    assert s["n_items"] == len(oracle) == len(series) and set(series) == set(oracle)
    assert series[CLOUDY_L5_DATE]["flagged"] and CLOUDY_L5_DATE in s["flagged_dates"]
    px_km2 = 30 * 30 / 1e6
    n_filled = 0
    for day, row in series.items():
        assert row["valid_fraction"] == pytest.approx(oracle[day], abs=0.05), day
        if abs(oracle[day] - 0.5) > 0.05:
            assert row["flagged"] == (oracle[day] < 0.5), day
        if row["flagged"]:
            assert row["area_km2"] is None and row["filled_km2"] == 0, day
            continue
        assert row["observed_water_km2"] < 0.2, day  # no lake: little false water
        masked_km2 = (1 - oracle[day]) * 61 * 61 * px_km2
        assert row["filled_km2"] == pytest.approx(masked_km2, abs=122 * px_km2), (
            day
        )  # the edge row and column
        assert row["area_km2"] == pytest.approx(row["observed_water_km2"] + row["filled_km2"])
        n_filled += row["filled"]
    assert n_filled >= 3 and s["filled_dates"]
    assert not math.isnan(s["median_area_km2"])


def test_07_mndwi_on_landsat_names_the_missing_green_band(run_notebook):
    """MNDWI needs green, which the Landsat sample lacks: the run stops with a message naming the
    collection and the band, not odc-stac's 'No such band/alias'."""
    result = run_notebook(NB, "07-l5-mndwi", collection=L5, bbox=L5_BBOX, qa_band="fmask")
    err = result["error"] or ""
    assert err.startswith("BandNotFound") and f"'{L5}'" in err and "'green'" in err, err
    assert "No such band" not in err
