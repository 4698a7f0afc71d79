"""A cloud mask for the Sentinel-2 sample, from the scene's own bands, and its cloud cover.

Why: every sample item must carry ``eo:cloud_cover`` (users filter and sort on it, as in the
C-SCALE EO-MQS tutorial), and it must describe the pixels. The Landsat scenes ship a CFmask
band and their cover is counted from it (build.py). The sample package ships the Sentinel-2
L1C granule's band files only, without its ``QI_DATA`` masks, so the preparation classifies the
scene's pixels itself with a small, stated spectral test and ships the result as the item's
``cloud-mask`` asset: the cover can be recomputed from that COG, and the mask from the bands.

The test, on the 60 m grid of the cirrus band (B02/B03 averaged over 6x6 pixels, B11 over
3x3; top-of-atmosphere reflectance = DN / 10000), a pixel is

- ``cloud`` (1) when B10 > 0.012 (cirrus: the surface is dark at 1.375 µm, water vapour
  absorbs), or when B02 > 0.20 and B11 > 0.20 and NDSI = (B03 - B11) / (B03 + B11) < 0.4
  (bright in the blue and the short-wave infrared, unlike snow, which is dark in the SWIR);
- ``no data`` (255) when any of those bands is 0 there (L1C fill); else ``clear`` (0).

It is deliberately simple: bright man-made surfaces pass the opaque-cloud test, so on the
sample (a clear winter day over Brandenburg) it is an upper bound of a few percent.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import rasterio

#: pixel classes of the ``cloud-mask`` asset
CLOUD_MASK_CLASSES = {0: "clear", 1: "cloud", 255: "no data"}
CIRRUS_MIN = 0.012
BRIGHT_MIN = 0.20
SNOW_NDSI_MIN = 0.4
DN_SCALE = 10000.0
#: bands the test reads, the grid band first
BANDS = ("B10", "B02", "B03", "B11")
DESCRIPTION = (
    f"0 = clear, 1 = cloud, 255 = no data, on the 60 m B10 grid: cloud where B10 > {CIRRUS_MIN} "
    f"(cirrus) or where B02 > {BRIGHT_MIN:.2f} and B11 > {BRIGHT_MIN:.2f} and "
    f"NDSI(B03, B11) < {SNOW_NDSI_MIN} (top-of-atmosphere reflectance; bright roofs pass too)"
)


def _on_grid(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The band as DNs averaged over whole blocks to ``shape`` (block means; exact factors)."""
    with rasterio.open(path) as ds:
        a = ds.read(1).astype("float64")
    fy, fx = a.shape[0] // shape[0], a.shape[1] // shape[1]
    if (fy * shape[0], fx * shape[1]) != a.shape:
        raise ValueError(f"{path.name} ({a.shape}) is not a whole multiple of the 60 m grid")
    return a.reshape(shape[0], fy, shape[1], fx).mean(axis=(1, 3))


def cloud_mask(cogs: Mapping[str, Path]) -> tuple[np.ndarray, dict]:
    """The scene's cloud mask (uint8, classes above) and the raster profile of its grid."""
    with rasterio.open(cogs["B10"]) as ds:
        shape = (ds.height, ds.width)
        profile = {"crs": ds.crs, "transform": ds.transform}
    b10, b02, b03, b11 = (_on_grid(cogs[b], shape) for b in BANDS)
    fill = (b10 == 0) | (b02 == 0) | (b03 == 0) | (b11 == 0)
    b10, b02, b03, b11 = (x / DN_SCALE for x in (b10, b02, b03, b11))
    with np.errstate(divide="ignore", invalid="ignore"):
        ndsi = np.where(b03 + b11 > 0, (b03 - b11) / (b03 + b11), 0.0)
    cloud = (b10 > CIRRUS_MIN) | ((b02 > BRIGHT_MIN) & (b11 > BRIGHT_MIN) & (ndsi < SNOW_NDSI_MIN))
    mask = np.where(fill, 255, np.where(cloud, 1, 0)).astype("uint8")
    return mask, profile


def write_mask(mask: np.ndarray, profile: dict, dst: Path) -> None:
    """``mask`` as a single-band GeoTIFF (no data 255), to be made a COG by the caller."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        dst, "w", driver="GTiff", width=mask.shape[1], height=mask.shape[0], count=1,
        dtype="uint8", nodata=255, **profile,
    ) as out:  # fmt: skip
        out.write(mask, 1)


def cover_percent(mask: np.ndarray) -> float:
    """Percentage of cloud pixels among the pixels with data (100 when none has data)."""
    valid = mask != 255
    if not valid.any():
        return 100.0
    return round(float(np.count_nonzero(mask[valid] == 1)) * 100.0 / float(valid.sum()), 2)
