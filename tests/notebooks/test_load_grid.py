"""The notebooks' load grid is the data's own pixel grid (fast; no stack).

The notebooks call ``odc.stac.load(items, bands=..., bbox=..., resolution=...)`` without a
``crs``; odc-stac then anchors the output grid on the items' ``proj:transform``, so at the
native resolution each loaded pixel is a source pixel, not a resampling of four neighbours
half a pixel away. Landsat grids have their pixel *centres* on multiples of 30 m (edges at
odd multiples of 15 m), so a grid snapped to 30 m edges would be off by half a pixel; the
Sentinel-2 grids have their edges on multiples of 60 m. The oracle is rasterio: the pixel
centres of the source GeoTIFF from its transform, and its values read directly.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import odc.stac
import pystac
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds

PROJ = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"


def _item(tmp_path, crs: str, origin: tuple[float, float], res: float, shape=(40, 50)):
    """One item with a ``band`` asset: a uint16 GeoTIFF of distinct values on ``origin``/``res``."""
    transform = from_origin(*origin, res, res)
    data = np.arange(1, shape[0] * shape[1] + 1, dtype="uint16").reshape(shape)
    href = str(tmp_path / f"band-{res}.tif")
    with rasterio.open(
        href, "w", driver="GTiff", width=shape[1], height=shape[0], count=1, dtype="uint16",
        crs=crs, transform=transform, nodata=0,
    ) as ds:  # fmt: skip
        ds.write(data, 1)
    left, top = origin
    bounds = transform_bounds(
        crs, "EPSG:4326", left, top - shape[0] * res, left + shape[1] * res, top
    )
    w, s, e, n = bounds
    geom = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    item = pystac.Item("scene", geom, list(bounds), datetime(2020, 7, 1, tzinfo=UTC), {})
    item.stac_extensions.append(PROJ)
    item.properties.update(
        {"proj:code": crs, "proj:shape": list(shape), "proj:transform": list(transform)[:6]}
    )
    asset = pystac.Asset(href, media_type=pystac.MediaType.GEOTIFF, roles=["data"])
    asset.extra_fields["raster:bands"] = [{"nodata": 0, "spatial_resolution": res}]
    item.add_asset("band", asset)
    return item, href, bounds


@pytest.mark.parametrize(
    ("name", "crs", "origin", "res"),
    [
        ("landsat-like (centres on 30 m multiples)", "EPSG:32613", (336375.0, 4462425.0), 30.0),
        ("sentinel-2-like (edges on 60 m multiples)", "EPSG:32633", (330000.0, 5822040.0), 20.0),
    ],
)
def test_loaded_pixels_are_the_cogs_pixels(tmp_path, name, crs, origin, res):
    item, href, (w, s, e, n) = _item(tmp_path, crs, origin, res)
    bbox = [w + (e - w) * 0.2, s + (n - s) * 0.2, e - (e - w) * 0.2, n - (n - s) * 0.2]
    da = odc.stac.load([item], bands=["band"], bbox=bbox, resolution=res)["band"].isel(time=0)
    with rasterio.open(href) as src:
        data = src.read(1)
        cols, rows = ~src.transform * (da.x.values[0], da.y.values[0])
        row0, col0 = int(np.floor(rows)), int(np.floor(cols))
        ny, nx = da.shape
        # rasterio's centres of the source pixels the loaded window should be
        centre_x = [src.xy(row0, c)[0] for c in range(col0, col0 + nx)]
        centre_y = [src.xy(r, col0)[1] for r in range(row0, row0 + ny)]
        assert np.allclose(da.x.values, centre_x) and np.allclose(da.y.values, centre_y), name
        assert np.array_equal(da.values, data[row0 : row0 + ny, col0 : col0 + nx]), name
        # one pixel by coordinates: rasterio's own read of the pixel holding that point
        x, y = float(da.x[3]), float(da.y[5])
        r, c = src.index(x, y)
        assert int(da.sel(x=x, y=y)) == int(data[r, c])
