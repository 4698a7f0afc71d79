"""The science helpers of the workflow notebooks (cscale_extensions.notebook.bands, .nbstats) on
synthetic data with known answers (fast; no stack): real GeoTIFFs read by odc-stac, STAC items
built with pystac, oracles computed independently of the helpers."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import numpy as np
import odc.stac
import pandas as pd
import pystac
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.transform import from_origin

from cscale_extensions.notebook.bands import (
    BandNotFound,
    find_band,
    qa_scheme,
    reflectance,
    snow_like,
)
from cscale_extensions.notebook.stats import doy_anomalies, seasonal_by_year, theil_sen

#: Landsat Collection 2 Level-2 surface reflectance encoding
C2_SCALE, C2_OFFSET = 0.0000275, -0.2
ORIGIN = (500000.0, 4460000.0)  # UTM 13N, metres


def _tif(path, data, nodata=None, dtype="uint16"):
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
        dtype=dtype, crs="EPSG:32613", transform=from_origin(*ORIGIN, 30, 30), nodata=nodata,
    ) as ds:  # fmt: skip
        ds.write(data.astype(dtype), 1)
    return str(path)


def _item(tmp_path, bands: dict, qa=None, collection="synthetic-c2", day=1):
    """A STAC item with one asset per band: {key: (common_name, DN array, scale, offset)} and
    an optional quality asset (key, array, raster:bands extra fields)."""
    geom = {"type": "Polygon", "coordinates": [[[-105, 40], [-104.9, 40], [-104.9, 40.1],
                                                [-105, 40.1], [-105, 40]]]}  # fmt: skip
    item = pystac.Item(f"scene-{day}", geom, [-105, 40, -104.9, 40.1],
                       datetime(2020, 7, day, tzinfo=UTC), {}, collection=collection)  # fmt: skip
    shape = next(iter(bands.values()))[1].shape
    item.stac_extensions.append("https://stac-extensions.github.io/projection/v1.1.0/schema.json")
    item.properties.update({"proj:epsg": 32613, "proj:shape": list(shape),
                            "proj:transform": list(from_origin(*ORIGIN, 30, 30))[:6]})  # fmt: skip
    for key, (common, dn, scale, offset) in bands.items():
        href = _tif(tmp_path / f"{key}-{day}.tif", dn, nodata=0)
        asset = pystac.Asset(href, media_type=pystac.MediaType.GEOTIFF, roles=["data"])
        asset.extra_fields["eo:bands"] = [{"name": key, "common_name": common}]
        asset.extra_fields["raster:bands"] = [
            {"nodata": 0, "scale": scale, "offset": offset, "spatial_resolution": 30}
        ]
        item.add_asset(key, asset)
    if qa is not None:
        key, data, fields = qa
        asset = pystac.Asset(_tif(tmp_path / f"{key}-{day}.tif", data), roles=["data-mask"])
        asset.extra_fields["raster:bands"] = [{"spatial_resolution": 30, **fields}]
        item.add_asset(key, asset)
    return item


#: exactly the pixels of the synthetic rasters
GRID = GeoBox((4, 4), from_origin(*ORIGIN, 30, 30), "EPSG:32613")


def _dn(reflectance_value, shape=(4, 4)):
    return np.full(shape, round((reflectance_value - C2_OFFSET) / C2_SCALE))


def test_scale_and_offset_from_raster_bands_give_the_known_ndvi(tmp_path):
    """A collection stored like Landsat Collection 2 (scale 2.75e-5, offset -0.2): red 0.04 and
    NIR 0.40 must give NDVI 0.36/0.44 = 0.818; applying only the scale (the old notebooks) gives
    a very different value, which is what the oracle rules out."""
    item = _item(
        tmp_path,
        {"SR_B4": ("red", _dn(0.04), C2_SCALE, C2_OFFSET),
         "SR_B5": ("nir08", _dn(0.40), C2_SCALE, C2_OFFSET)},
    )  # fmt: skip
    red_b, nir_b = find_band([item], "red"), find_band([item], ["nir08", "nir"])
    assert (red_b.key, nir_b.key) == ("SR_B4", "SR_B5") and red_b.offset == C2_OFFSET
    cube = odc.stac.load([item], bands=[red_b.key, nir_b.key], geobox=GRID)
    red, nir = reflectance(cube[red_b.key], red_b), reflectance(cube[nir_b.key], nir_b)
    ndvi = float(((nir - red) / (nir + red)).mean())
    assert ndvi == pytest.approx(0.36 / 0.44, abs=1e-4)
    scale_only = (_dn(0.40) - _dn(0.04)) / (_dn(0.40) + _dn(0.04))
    assert abs(float(scale_only.mean()) - ndvi) > 0.3  # what ignoring the offset would print


def test_nodata_becomes_nan_before_scaling(tmp_path):
    dn = _dn(0.1)
    dn[0, 0] = 0
    item = _item(tmp_path, {"red": ("red", dn, C2_SCALE, C2_OFFSET)})
    b = find_band([item], "red")
    r = reflectance(odc.stac.load([item], bands=["red"], geobox=GRID)["red"], b)
    assert int(r.isnull().sum()) == 1 and float(r.max()) == pytest.approx(0.1, abs=1e-4)


def test_a_collection_without_the_band_gets_a_message_naming_collection_and_band(tmp_path):
    """02 pointed at a collection that has no SWIR1 band: the error names the collection, the
    band and the bands it has (not odc-stac's bare 'No such band/alias')."""
    item = _item(
        tmp_path, {"B04": ("red", _dn(0.1), 1e-4, 0.0), "B08": ("nir", _dn(0.3), 1e-4, 0.0)},
        collection="sentinel-2-l1c-subset",
    )  # fmt: skip
    with pytest.raises(BandNotFound) as exc:
        find_band([item], "swir16")
    msg = str(exc.value)
    assert "'sentinel-2-l1c-subset'" in msg and "'swir16'" in msg and "B04 (red)" in msg
    assert "No such band" not in msg
    with pytest.raises(BandNotFound, match="no quality band 'fmask'.*its assets: B04, B08"):
        qa_scheme([item], "fmask")


def test_rededge_is_chosen_by_wavelength_among_bands_sharing_a_common_name(tmp_path):
    item = _item(tmp_path, {k: ("rededge", _dn(0.1), 1e-4, 0.0) for k in ("B05", "B06", "B07")})
    for key, centre in zip(("B05", "B06", "B07"), (0.704, 0.740, 0.783), strict=True):
        item.assets[key].extra_fields["eo:bands"][0]["center_wavelength"] = centre
    assert find_band([item], "rededge", near_um=0.705).key == "B05"
    assert find_band([item], "rededge", near_um=0.78).key == "B07"


def _veg_and_snow(tmp_path, qa):
    """Item whose left half is forest (red 0.03, NIR 0.35, SWIR1 0.12) and right half snow
    (red 0.60, NIR 0.55, SWIR1 0.05); ``qa`` is the quality asset."""
    red, nir, swir = _dn(0.03), _dn(0.35), _dn(0.12)
    red[:, 2:], nir[:, 2:], swir[:, 2:] = _dn(0.60)[:, 2:], _dn(0.55)[:, 2:], _dn(0.05)[:, 2:]
    item = _item(
        tmp_path,
        {"red": ("red", red, C2_SCALE, C2_OFFSET), "nir": ("nir08", nir, C2_SCALE, C2_OFFSET),
         "swir": ("swir16", swir, C2_SCALE, C2_OFFSET)},
        qa=qa,
    )  # fmt: skip
    cube = odc.stac.load([item], bands=["red", "nir", "swir", qa[0]], geobox=GRID).isel(time=0)
    refl = {k: reflectance(cube[k], find_band([item], k)) for k in ("red", "nir", "swir")}
    return item, cube, refl


def test_snow_coded_in_classification_classes_is_excluded(tmp_path):
    """The snow code is read from the item's classification:classes (here 7, not CFmask's 3): the
    snow pixels are unusable, the forest pixels usable; with CFmask's code assumed they would pass."""
    codes = np.zeros((4, 4))
    codes[:, 2:] = 7
    classes = [{"value": 0, "name": "clear"}, {"value": 7, "name": "snow_ice"},
               {"value": 9, "name": "cloud"}, {"value": 255, "name": "fill", "nodata": True}]  # fmt: skip
    item, cube, _ = _veg_and_snow(
        tmp_path, ("qa", codes, {"nodata": 255, "classification:classes": classes})
    )
    scheme = qa_scheme([item], "qa")
    assert scheme.classes["snow"] == (7,) and scheme.source == "classification:classes"
    bad = scheme.unusable(cube["qa"], ["cloud", "shadow", "snow"]).values
    assert bad[:, 2:].all() and not bad[:, :2].any()


def test_snow_flagged_in_classification_bitfields_is_excluded(tmp_path):
    """A Landsat Collection 2 style qa_pixel: bit 5 is snow, bit 6 clear, bits 8-9 a cloud
    confidence (not a flag). Snow pixels are unusable; clear ones are not, whatever the
    confidence bits say."""
    qa = np.full((4, 4), (1 << 6) | (1 << 8))  # clear, low cloud confidence
    qa[:, 2:] = (1 << 5) | (1 << 8)  # snow
    fields = [
        {"offset": 0, "length": 1, "name": "fill", "classes": [{"value": 1, "name": "fill"}]},
        {"offset": 3, "length": 1, "name": "cloud", "classes": [{"value": 1, "name": "cloud"}]},
        {"offset": 4, "length": 1, "name": "cloud_shadow", "classes": [{"value": 1, "name": "shadow"}]},
        {"offset": 5, "length": 1, "name": "snow", "classes": [{"value": 1, "name": "snow"}]},
        {"offset": 6, "length": 1, "name": "clear", "classes": [{"value": 1, "name": "clear"}]},
        {"offset": 8, "length": 2, "name": "cloud_confidence", "classes": []},
    ]  # fmt: skip
    item, cube, _ = _veg_and_snow(
        tmp_path, ("qa_pixel", qa, {"nodata": 1, "classification:bitfields": fields})
    )
    scheme = qa_scheme([item], "qa_pixel")
    assert scheme.bits["snow"] == (5,) and "cloud" in scheme.bits and 8 not in scheme.bits["cloud"]
    bad = scheme.unusable(cube["qa_pixel"], ["cloud", "shadow", "snow"]).values
    assert bad[:, 2:].all() and not bad[:, :2].any()


def test_snow_that_the_quality_band_calls_clear_is_caught_by_the_spectral_test(tmp_path):
    """CFmask labels much late-spring snow of the sample as clear (code 0): the spectral test
    removes it and leaves the forest, and the NDVI of what is left is the forest's."""
    codes = np.zeros((4, 4))  # all 'clear' by the quality band
    item, cube, r = _veg_and_snow(tmp_path, ("fmask", codes, {"nodata": 255}))
    scheme = qa_scheme([item], "fmask")  # no metadata: CFmask's well-known codes
    assert "well-known" in scheme.source and scheme.classes["snow"] == (3,)
    clear = ~scheme.unusable(cube["fmask"], ["cloud", "shadow", "snow"])
    assert bool(clear.all())
    snow = snow_like(r["red"], r["swir"]).values
    assert snow[:, 2:].all() and not snow[:, :2].any()
    ndvi = ((r["nir"] - r["red"]) / (r["nir"] + r["red"])).where(clear & ~snow)
    assert float(ndvi.mean()) == pytest.approx(0.32 / 0.38, abs=1e-4)


def test_unknown_quality_band_values_are_a_clear_error(tmp_path):
    item = _item(tmp_path, {"red": ("red", _dn(0.1), 1e-4, 0.0)},
                 qa=("mask", np.zeros((4, 4)), {}))  # fmt: skip
    with pytest.raises(BandNotFound, match="cannot tell what the values of quality band 'mask'"):
        qa_scheme([item], "mask")


def test_a_misspelt_quality_flag_is_refused():
    import xarray as xr

    from cscale_extensions.notebook.bands import QAScheme

    with pytest.raises(ValueError, match="unknown quality flags \\['clouds'\\]"):
        QAScheme("m", "test", classes={"cloud": (4,)}).unusable(xr.DataArray([0, 4]), ["clouds"])


# -- statistics ----------------------------------------------------------------------------------


def _seasonal_series():
    """Scenes every 16 days over 2008-2011: a seasonal cycle plus a known offset per year."""
    dates = pd.date_range("2008-01-05", "2011-12-31", freq="16D")
    offset = {2008: 0.0, 2009: 0.02, 2010: -0.02, 2011: 0.04}
    cycle = 0.4 + 0.3 * np.sin(2 * np.pi * (dates.dayofyear - 100) / 365)
    values = cycle + np.array([offset[y] for y in dates.year])
    return pd.Series(values, index=dates), offset


def test_doy_anomalies_recover_the_year_offsets_and_count_their_baselines():
    """With a seasonal cycle plus an offset per year, a scene's anomaly against the other years'
    scenes near the same day of year is its year's offset minus the mean of the others' (up to
    the cycle's change within the window), and n_baseline counts exactly those scenes."""
    s, offset = _seasonal_series()
    a = doy_anomalies(s, window_days=8, min_scenes=2)
    for d, row in a.iterrows():
        doy = d.dayofyear
        others = [
            o for o in s.index
            if o.year != d.year and min(abs(o.dayofyear - doy), 365 - abs(o.dayofyear - doy)) <= 8
        ]  # fmt: skip
        assert row["n_baseline"] == len(others)
        if len(others) >= 2:
            want = offset[d.year] - np.mean([offset[o.year] for o in others])
            assert row["anomaly"] == pytest.approx(want, abs=0.03)
        else:
            assert np.isnan(row["anomaly"])


def test_doy_baseline_is_not_a_calendar_month_mean():
    """A scene on 1 May and one on 31 May of another year are 30 days apart: with a 16-day
    window neither is in the other's baseline (a calendar-month mean would pair them)."""
    s = pd.Series([0.3, 0.6], index=pd.to_datetime(["2009-05-01", "2010-05-31"]))
    a = doy_anomalies(s, window_days=16, min_scenes=1)
    assert a["n_baseline"].tolist() == [0, 0] and a["anomaly"].isna().all()


def test_seasonal_by_year_counts_scenes():
    s = pd.Series([0.5, 0.7, 0.9, 0.2], index=pd.to_datetime(
        ["2010-06-10", "2010-08-01", "2011-07-07", "2011-12-01"]))  # fmt: skip
    t = seasonal_by_year(s, [6, 7, 8])
    assert t["mean"].to_dict() == pytest.approx({2010: 0.6, 2011: 0.9})
    assert t["n_scenes"].to_dict() == {2010: 2, 2011: 1}


def test_theil_sen_is_the_median_pairwise_slope_with_an_interval():
    """The slope is the median of all pairwise slopes (computed here by brute force); one wild
    outlier does not move it; the 95 % interval contains it."""
    x = np.arange(2000, 2012, dtype=float)
    y = 0.01 * (x - 2000) + 0.5
    y[3] = 5.0  # an outlier that a least-squares fit would follow
    pairs = [(y[j] - y[i]) / (x[j] - x[i]) for i, j in itertools.combinations(range(len(x)), 2)]
    t = theil_sen(x, y)
    assert t["slope"] == pytest.approx(float(np.median(pairs))) == pytest.approx(0.01)
    assert t["low"] <= t["slope"] <= t["high"] and t["n"] == 12
    assert abs(np.polyfit(x, y, 1)[0] - 0.01) > 0.05  # least squares is dragged away
    assert np.isnan(theil_sen([1, 2], [1, 2])["slope"])
