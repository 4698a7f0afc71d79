"""Items found on the sites load with odc-stac over HTTP into xarray, with the real pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import odc.stac
import pytest
import rasterio
from pystac_client import Client

from .conftest import Federation, needs_postgres

pytestmark = [needs_postgres]

GDAL_HTTP = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MAX_RETRY": "2",
    "GDAL_HTTP_TIMEOUT": "20",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif",
}


@pytest.fixture(scope="module", autouse=True)
def gdal_over_http() -> None:
    odc.stac.configure_rio(cloud_defaults=False, **GDAL_HTTP)


def _clearest(client: Client, months: set[int]) -> object:
    items = [
        i
        for i in client.search(collections=["landsat-7-etm-sr"], limit=50).items()
        if i.datetime.month in months
    ]
    assert items, f"no item in months {months}"
    return min(items, key=lambda i: (i.properties["eo:cloud_cover"], i.id))


def _ndvi(ds, fmask: np.ndarray) -> float:
    red = ds["red"].values[0].astype("float64") * 1e-4
    nir = ds["nir08"].values[0].astype("float64") * 1e-4
    ok = (
        (ds["red"].values[0] != -9999)
        & (ds["nir08"].values[0] != -9999)
        & np.isin(fmask, (0, 1, 3))
    )  # clear land, water, snow: not cloud, shadow, fill
    assert ok.sum() > 100, "too few cloud-free pixels to compare"
    return float(np.mean((nir[ok] - red[ok]) / (nir[ok] + red[ok])))


def test_odc_stac_loads_http_assets_with_real_values(federation: Federation) -> None:
    client = Client.open(federation.site("eodc")["url"])
    summer = _clearest(client, {6, 7, 8})
    winter = _clearest(client, {12, 1, 2})
    ndvi = {}
    for label, item in (("summer", summer), ("winter", winter)):
        assert item.assets["red"].href.startswith("http://127.0.0.1:")
        ds = odc.stac.load([item], bands=["red", "nir08", "fmask"])
        assert ds.odc.geobox.crs.epsg == 32613
        assert ds["red"].shape == (1, 61, 61)
        # the pixels came over HTTP and equal the on-site file (the local alternate href)
        local = item.assets["red"].extra_fields["alternate"]["local"]["href"]
        with rasterio.open(local) as src:
            np.testing.assert_array_equal(ds["red"].values[0], src.read(1))
        ndvi[label] = _ndvi(ds, ds["fmask"].values[0])
    assert ndvi["summer"] > ndvi["winter"], ndvi


def test_odc_stac_loads_a_time_series_across_pages(federation: Federation) -> None:
    client = Client.open(federation.site("incd")["url"])
    items = list(client.search(collections=["landsat-7-etm-sr"], limit=5).items())
    assert len(items) > 5
    ds = odc.stac.load(items, bands=["nir08"], groupby="time")
    assert ds.sizes["x"] == 61 and ds.sizes["y"] == 61
    assert ds.sizes["time"] == len({i.datetime.date() for i in items})
    assert ds.odc.geobox.crs.epsg == 32613
    assert Path(items[0].assets["nir08"].extra_fields["alternate"]["local"]["href"]).is_file()
