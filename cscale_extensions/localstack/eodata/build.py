"""Turn sample scenes into Cloud-Optimized GeoTIFFs and STAC Items / Collections."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pystac
import rasterio
from pystac.extensions.eo import Band as EOBand
from pystac.extensions.eo import EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from rasterio.io import MemoryFile
from rasterio.shutil import copy as rio_copy
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping, shape

from cscale_extensions.localstack.eodata import s2cloud
from cscale_extensions.localstack.eodata.scenes import FMASK_CLASSES, Band, Family, Scene

COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
#: surface / TOA reflectance are stored as integers x 1e4
REFLECTANCE_SCALE = 0.0001
CLASSIFICATION_SCHEMA = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"


def to_cog(src: Path, dst: Path, nodata: float | None = None) -> None:
    """Write ``src`` as a DEFLATE-compressed COG (256-pixel tiles, overviews when larger)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.Env(GDAL_NUM_THREADS="1"), rasterio.open(src) as ds:
        data = ds.read()
        profile = {
            "driver": "GTiff", "width": ds.width, "height": ds.height, "count": ds.count,
            "dtype": ds.dtypes[0], "crs": ds.crs, "transform": ds.transform,
            "nodata": ds.nodata if nodata is None else nodata,
        }  # fmt: skip
        with MemoryFile() as mem, mem.open(**profile) as tmp:
            tmp.write(data)
            rio_copy(
                tmp, str(dst), driver="COG", COMPRESS="DEFLATE", PREDICTOR="2", BLOCKSIZE="256",
                OVERVIEW_RESAMPLING="NEAREST" if nodata is not None else "AVERAGE",
            )  # fmt: skip


def footprint(path: Path) -> tuple[dict, list[float], dict]:
    """WGS84 footprint, bbox and projection facts of a raster, from its real transform."""
    with rasterio.open(path) as ds:
        native = box(*ds.bounds)
        geom = transform_geom(
            ds.crs, "EPSG:4326", mapping(native), precision=7, antimeridian_cutting=True
        )
        facts = {
            "code": f"EPSG:{ds.crs.to_epsg()}",
            "shape": [ds.height, ds.width],
            "transform": list(ds.transform)[:6],
            "bbox": list(ds.bounds),
            "res": abs(ds.transform.a),
            "dtype": ds.dtypes[0],
            "nodata": ds.nodata,
        }
    bbox = [round(v, 7) for v in shape(geom).bounds]
    return geom, bbox, facts


def cloud_cover(fmask: Path) -> float:
    """Percentage of cloud pixels (CFmask class 4) among the non-fill pixels."""
    with rasterio.open(fmask) as ds:
        mask = ds.read(1)
    valid = mask != 255
    if not valid.any():
        return 100.0
    return round(float(np.count_nonzero(mask[valid] == 4)) * 100.0 / float(valid.sum()), 2)


def _eo_band(b: Band) -> EOBand:
    return EOBand.create(
        name=b.key, common_name=b.common_name, description=b.description,
        center_wavelength=b.center, full_width_half_max=b.fwhm,
    )  # fmt: skip


def _set_proj(target: ProjectionExtension, facts: dict) -> None:
    target.code = facts["code"]
    target.shape = facts["shape"]
    target.transform = facts["transform"]
    target.bbox = facts["bbox"]


def build_item(scene: Scene, cog_root: Path) -> pystac.Item:
    """Convert a scene's files to COGs under ``cog_root`` and describe it as a STAC Item."""
    fam = scene.family
    out = cog_root / fam.collection / scene.id
    cogs: dict[str, Path] = {}
    for key, src in scene.files.items():
        cogs[key] = out / f"{key}.tif"
        to_cog(src, cogs[key])
    if scene.fmask:
        cogs["fmask"] = out / "fmask.tif"
        to_cog(scene.fmask, cogs["fmask"], nodata=255)

    finest = min(fam.bands, key=lambda b: b.gsd).key
    geom, bbox, item_facts = footprint(cogs[finest])
    props: dict = {
        "platform": fam.platform,
        "instruments": list(fam.instruments),
        "constellation": fam.constellation,
        "gsd": item_facts["res"],
    }
    item = pystac.Item(scene.id, geom, bbox, scene.datetime, props, collection=fam.collection)
    EOExtension.add_to(item)
    ProjectionExtension.add_to(item)
    RasterExtension.add_to(item)
    proj = ProjectionExtension.ext(item)
    _set_proj(proj, item_facts)
    if scene.fmask:
        EOExtension.ext(item).cloud_cover = cloud_cover(cogs["fmask"])
    elif set(s2cloud.BANDS) <= set(cogs):  # no mask shipped: one from the scene's bands
        mask, grid = s2cloud.cloud_mask(cogs)
        raw = out / ".cloud-mask.tif"
        s2cloud.write_mask(mask, grid, raw)
        cogs["cloud-mask"] = out / "cloud-mask.tif"
        to_cog(raw, cogs["cloud-mask"], nodata=255)
        raw.unlink()
        EOExtension.ext(item).cloud_cover = s2cloud.cover_percent(mask)

    for band in fam.bands:
        _, _, facts = footprint(cogs[band.key])
        asset = pystac.Asset(
            str(cogs[band.key]),
            title=band.description,
            media_type=COG_TYPE,
            roles=["data", "reflectance"],
        )
        item.add_asset(band.key, asset)
        EOExtension.ext(asset).bands = [_eo_band(band)]
        RasterExtension.ext(asset).bands = [
            RasterBand.create(
                nodata=facts["nodata"],
                data_type=DataType(facts["dtype"]),
                scale=REFLECTANCE_SCALE,
                offset=0.0,
                spatial_resolution=facts["res"],
            )  # fmt: skip
        ]
        if facts["shape"] != item_facts["shape"]:
            _set_proj(ProjectionExtension.ext(asset), facts)
    if scene.fmask:
        classes = ", ".join(f"{k} = {v}" for k, v in FMASK_CLASSES.items())
        asset = pystac.Asset(
            str(cogs["fmask"]), title="CFmask pixel classes", description=classes,
            media_type=COG_TYPE, roles=["cloud", "cloud-shadow", "snow-ice", "water", "data-mask"],
        )  # fmt: skip
        item.add_asset("fmask", asset)
        qa_band = RasterBand.create(
            nodata=255, data_type=DataType.UINT8, spatial_resolution=item_facts["res"]
        )
        # what each code means, machine-readable (classification extension): notebooks read
        # the codes from here instead of assuming CFmask's
        qa_band.properties["classification:classes"] = [
            {"value": k, "name": v.replace(" ", "_"), "description": v, **({"nodata": True} if k == 255 else {})}
            for k, v in FMASK_CLASSES.items()
        ]  # fmt: skip
        RasterExtension.ext(asset).bands = [qa_band]
        if CLASSIFICATION_SCHEMA not in item.stac_extensions:
            item.stac_extensions.append(CLASSIFICATION_SCHEMA)
    if "cloud-mask" in cogs:
        _add_class_asset(
            item, "cloud-mask", cogs["cloud-mask"], s2cloud.CLOUD_MASK_CLASSES,
            title="Cloud mask (spectral test of the preparation, not ESA's)",
            description=s2cloud.DESCRIPTION,
            roles=["cloud"],
        )  # fmt: skip
    return item


def _add_class_asset(
    item: pystac.Item, key: str, path: Path, classes: dict[int, str], *, title: str,
    description: str, roles: list[str],
) -> None:  # fmt: skip
    """A uint8 class raster as an asset, its codes machine-readable (classification extension)."""
    _, _, facts = footprint(path)
    asset = pystac.Asset(
        str(path), title=title, description=description, media_type=COG_TYPE, roles=roles
    )
    item.add_asset(key, asset)
    band = RasterBand.create(nodata=255, data_type=DataType.UINT8, spatial_resolution=facts["res"])
    band.properties["classification:classes"] = [
        {"value": k, "name": v.replace(" ", "_"), "description": v, **({"nodata": True} if k == 255 else {})}
        for k, v in classes.items()
    ]  # fmt: skip
    RasterExtension.ext(asset).bands = [band]
    ProjectionExtension.ext(asset).shape = facts["shape"]
    ProjectionExtension.ext(asset).transform = facts["transform"]
    if CLASSIFICATION_SCHEMA not in item.stac_extensions:
        item.stac_extensions.append(CLASSIFICATION_SCHEMA)


def build_collection(fam: Family, items: list[pystac.Item]) -> pystac.Collection:
    """A Collection of ``items`` with its extent computed from them."""
    times: list[datetime] = sorted(i.datetime for i in items if i.datetime)
    boxes = np.array([i.bbox for i in items])
    bbox = [
        float(boxes[:, 0].min()),
        float(boxes[:, 1].min()),
        float(boxes[:, 2].max()),
        float(boxes[:, 3].max()),
    ]
    coll = pystac.Collection(
        id=fam.collection,
        title=fam.title,
        description=fam.description,
        extent=pystac.Extent(
            pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[times[0], times[-1]]])
        ),
        license=fam.license,
        keywords=[fam.constellation, *fam.instruments, "earth observation", "sample data"],
        providers=[
            pystac.Provider(fam.producer, roles=["producer", "licensor"], url=fam.producer_url)
        ],
        summaries=pystac.Summaries(
            {
                "platform": [fam.platform],
                "instruments": list(fam.instruments),
                "constellation": [fam.constellation],
                "gsd": sorted({b.gsd for b in fam.bands}),
                "eo:bands": [_eo_band(b).to_dict() for b in fam.bands],
            }
        ),
    )
    coll.add_link(pystac.Link("license", fam.producer_url, "text/html", "Terms of use"))
    EOExtension.add_to(coll)
    ProjectionExtension.add_to(coll)
    RasterExtension.add_to(coll)
    for item in items:
        coll.add_item(item)
    return coll
