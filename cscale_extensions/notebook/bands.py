"""Bands and pixel-quality masks of STAC items, from their metadata rather than hard-coded keys.

Why: a notebook that names asset keys (``"nir08"``, ``"B05"``), applies only ``scale`` and
assumes CFmask codes runs on one collection only. Landsat Collection 2 and Sentinel-2 after
2022 store reflectance with an *offset* (ignoring it turns a summer NDVI of 0.76 into 0.34), and
every collection has its own quality band. The helpers here read what the items say:

- :func:`find_band`: the asset holding a band, by its ``eo:bands`` common name (``red``,
  ``nir``, ``swir16`` ...), with its ``raster:bands`` scale, offset, no-data value and
  resolution; a collection without such a band is a :class:`BandNotFound` naming the
  collection, the band and the bands it does have.
- :func:`reflectance`: ``DN * scale + offset`` with no-data as NaN.
- :func:`qa_scheme` / :class:`QAScheme`: what the values of a quality band mean (fill, clear,
  water, cloud shadow, snow, cloud), from ``classification:classes`` (class codes, e.g.
  CFmask) or ``classification:bitfields`` (bit flags, e.g. Landsat Collection 2 ``qa_pixel``)
  when the item has them, else from the well-known codes of CFmask, Landsat C2 ``qa_pixel`` and
  Sentinel-2 ``SCL`` recognised by asset key.
- :func:`snow_like`: a spectral snow test (NDSI) for the snow a quality band misses: CFmask
  labels much of the late-spring snow of the sample as clear.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: quality flags the masks know, in the order they are reported
QA_FLAGS = ("fill", "clear", "water", "shadow", "snow", "cloud")

#: CFmask class codes (Landsat Collection 1 surface-reflectance ``fmask``/``cfmask`` bands)
CFMASK_CLASSES = {0: "clear", 1: "water", 2: "cloud shadow", 3: "snow", 4: "cloud", 255: "fill"}
#: Landsat Collection 2 ``qa_pixel`` single-bit flags (bit offset -> name)
LANDSAT_C2_BITS = {
    0: "fill",
    1: "dilated cloud",
    2: "cirrus",
    3: "cloud",
    4: "cloud shadow",
    5: "snow",
    6: "clear",
    7: "water",
}
#: Sentinel-2 Level-2A scene classification (``SCL``) codes
SENTINEL2_SCL = {
    0: "no data",
    1: "saturated or defective",
    2: "dark area pixels",
    3: "cloud shadows",
    4: "vegetation",
    5: "not vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud medium probability",
    9: "cloud high probability",
    10: "thin cirrus",
    11: "snow",
}
_WELL_KNOWN_CLASSES = {"fmask": CFMASK_CLASSES, "cfmask": CFMASK_CLASSES, "scl": SENTINEL2_SCL}
_WELL_KNOWN_BITS = {"qa_pixel": LANDSAT_C2_BITS}


class BandNotFound(ValueError):
    """A collection lacks a band a notebook needs; the message names both and what exists."""


# -- spectral bands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BandRef:
    """Where a band is and how its stored values become physical ones."""

    key: str
    common_name: str | None
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    resolution: float | None = None
    center_um: float | None = None


def _collection(items: Sequence[Any], collection: str | None) -> str:
    return collection or (getattr(items[0], "collection_id", None) if items else None) or "?"


def _asset_bands(asset: Any) -> list[dict]:
    """The band descriptions of an asset: ``eo:bands`` (STAC 1.0) or ``bands`` (STAC 1.1)."""
    extra = getattr(asset, "extra_fields", None) or {}
    out = []
    for b in extra.get("eo:bands") or extra.get("bands") or []:
        if isinstance(b, dict):
            out.append(
                {
                    "name": b.get("name"),
                    "common_name": b.get("common_name") or b.get("eo:common_name"),
                    "center": b.get("center_wavelength") or b.get("eo:center_wavelength"),
                }
            )
    return out


def _raster(asset: Any) -> dict:
    extra = getattr(asset, "extra_fields", None) or {}
    bands = extra.get("raster:bands") or extra.get("bands") or [{}]
    first = bands[0] if isinstance(bands[0], dict) else {}
    # STAC 1.1 puts raster fields on the asset or the band without the prefix
    return {
        k.removeprefix("raster:"): v
        for src in (extra, first)
        for k, v in src.items()
        if k in ("nodata", "scale", "offset", "spatial_resolution")
        or k.startswith("raster:")
        or k.startswith("classification:")
    }


def band_table(item: Any) -> list[tuple[str, str | None]]:
    """(asset key, common name) of every asset of ``item`` that describes a band."""
    out = []
    for key, asset in item.assets.items():
        bands = _asset_bands(asset)
        if bands:
            out.append((key, bands[0]["common_name"]))
    return out


def find_band(
    items: Sequence[Any],
    names: str | Sequence[str],
    *,
    collection: str | None = None,
    near_um: float | None = None,
) -> BandRef:
    """The band of ``items`` (one collection) with the first of ``names`` that exists.

    ``names`` are ``eo:bands`` common names tried in order (an asset key is accepted too, for
    bands without a common name). When several assets share a common name (Sentinel-2 has
    three ``rededge`` bands), the one whose centre wavelength is nearest ``near_um`` is taken,
    else the first. Raises :class:`BandNotFound` naming the collection and the band.
    """
    wanted = [names] if isinstance(names, str) else list(names)
    cid = _collection(items, collection)
    if not items:
        raise BandNotFound(f"collection {cid!r}: no items to find band {' or '.join(wanted)} in")
    item = items[0]
    for name in wanted:
        matches = []
        for key, asset in item.assets.items():
            for b in _asset_bands(asset):
                if b["common_name"] == name:
                    matches.append((key, b))
                    break
        if not matches and name in item.assets:
            bands = _asset_bands(item.assets[name]) or [{"common_name": None, "center": None}]
            matches = [(name, bands[0])]
        if not matches:
            continue
        if near_um is not None and len(matches) > 1:
            matches.sort(key=lambda m: abs((m[1].get("center") or 1e9) - near_um))
        key, band = matches[0]
        lacking = [getattr(i, "id", "?") for i in items if key not in i.assets]
        if lacking:
            raise BandNotFound(
                f"collection {cid!r}: band {name!r} (asset {key!r}) is missing from "
                f"{len(lacking)} item(s), e.g. {lacking[0]}"
            )
        r = _raster(item.assets[key])
        return BandRef(
            key=key,
            common_name=band.get("common_name"),
            scale=float(r.get("scale", 1.0) if r.get("scale") is not None else 1.0),
            offset=float(r.get("offset", 0.0) if r.get("offset") is not None else 0.0),
            nodata=r.get("nodata"),
            resolution=r.get("spatial_resolution"),
            center_um=band.get("center"),
        )
    have = ", ".join(f"{k} ({c or 'no common name'})" for k, c in band_table(item)) or "none"
    raise BandNotFound(
        f"collection {cid!r} has no band with common name {' or '.join(map(repr, wanted))} "
        f"(its bands: {have}); choose a collection that has it or another band"
    )


def reflectance(da: Any, band: BandRef) -> Any:
    """Physical values of a loaded band: ``DN * scale + offset``, no-data as NaN (float)."""
    out = da
    if band.nodata is not None:
        nodata = float(band.nodata)
        out = out.where(out == out) if nodata != nodata else out.where(out != nodata)
    return out.astype("float64") * band.scale + band.offset


# -- quality bands -------------------------------------------------------------------------------


def flag_of(name: str) -> str | None:
    """The :data:`QA_FLAGS` entry a class or bit-field name means, or None (e.g. vegetation)."""
    n = name.lower().replace("-", " ").replace("_", " ")
    if "confidence" in n or n.startswith("not ") or n.startswith("no ") and "data" not in n:
        return None
    if "shadow" in n:
        return "shadow"
    if "snow" in n or n == "ice" or "snow/ice" in n:
        return "snow"
    if "cloud" in n or "cirrus" in n:
        return "cloud"
    if "water" in n:
        return "water"
    if "fill" in n or "no data" in n or "nodata" in n:
        return "fill"
    if "clear" in n:
        return "clear"
    return None


@dataclass(frozen=True)
class QAScheme:
    """What the values of a quality band mean.

    ``classes``: flag -> class codes (a class-valued band); ``bits``: flag -> bit offsets (a
    bit-flag band); ``source`` says where this was read from (shown in notebooks).
    """

    key: str
    source: str
    classes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    bits: dict[str, tuple[int, ...]] = field(default_factory=dict)
    nodata: float | None = None

    def flags(self, qa: Any) -> dict[str, Any]:
        """Boolean arrays (like ``qa``) for each flag this scheme defines."""
        import numpy as np

        out: dict[str, Any] = {}
        for flag in QA_FLAGS:
            mask = None
            for code in self.classes.get(flag, ()):
                m = qa == code
                mask = m if mask is None else mask | m
            for bit in self.bits.get(flag, ()):
                m = (qa.fillna(0).astype("int64") // (1 << bit)) % 2 == 1
                mask = m if mask is None else mask | m
            if flag == "fill" and self.nodata is not None:
                m = qa == self.nodata if self.nodata == self.nodata else np.isnan(qa)
                mask = m if mask is None else mask | m
            if mask is not None:
                out[flag] = mask
        if "fill" in out:
            out["fill"] = out["fill"] | qa.isnull()
        else:
            out["fill"] = qa.isnull()
        return out

    def unusable(self, qa: Any, exclude: Iterable[str]) -> Any:
        """True where ``qa`` is fill or carries any flag of ``exclude`` (e.g. cloud, snow)."""
        exclude = list(exclude)
        unknown = sorted(set(exclude) - set(QA_FLAGS))
        if unknown:
            raise ValueError(f"unknown quality flags {unknown}; known: {list(QA_FLAGS)}")
        flags = self.flags(qa)
        bad = flags["fill"]
        for flag in exclude:
            if flag in flags:
                bad = bad | flags[flag]
        return bad

    def describe(self) -> str:
        """One line per flag: its codes or bits (for the notebook's output)."""
        parts = [f"{f}: codes {list(self.classes[f])}" for f in QA_FLAGS if f in self.classes]
        parts += [f"{f}: bits {list(self.bits[f])}" for f in QA_FLAGS if f in self.bits]
        return f"{self.key} ({self.source}): " + "; ".join(parts)


def _classes_scheme(key: str, source: str, classes: Iterable[tuple[int, str, bool]], nodata):
    out: dict[str, list[int]] = {}
    for value, name, is_nodata in classes:
        flag = "fill" if is_nodata else flag_of(name)
        if flag:
            out.setdefault(flag, []).append(int(value))
    return QAScheme(key, source, classes={k: tuple(v) for k, v in out.items()}, nodata=nodata)


def _bits_scheme(key: str, source: str, fields: Iterable[tuple[int, int, str]], nodata):
    out: dict[str, list[int]] = {}
    for offset, length, name in fields:
        flag = flag_of(name)
        if flag and length == 1:  # multi-bit fields are confidences, not flags
            out.setdefault(flag, []).append(int(offset))
    return QAScheme(key, source, bits={k: tuple(v) for k, v in out.items()}, nodata=nodata)


def qa_scheme(items: Sequence[Any], key: str, *, collection: str | None = None) -> QAScheme:
    """How to read the quality band ``key`` of ``items``: from the ``classification``
    extension fields of its asset (or its ``raster:bands``) when present, else from the
    well-known codes of ``fmask``/``cfmask``, ``qa_pixel`` and ``SCL``; a clear error otherwise."""
    cid = _collection(items, collection)
    if not items or key not in items[0].assets:
        have = ", ".join(items[0].assets) if items else "no items"
        raise BandNotFound(
            f"collection {cid!r} has no quality band {key!r} (its assets: {have}); "
            f"set the notebook's quality-band parameter to one it has"
        )
    asset = items[0].assets[key]
    r = _raster(asset)
    nodata = r.get("nodata")
    meta_classes = r.get("classification:classes")
    if meta_classes:
        return _classes_scheme(
            key,
            "classification:classes",
            (
                (
                    c["value"],
                    str(c.get("name") or c.get("description") or ""),
                    bool(c.get("nodata")),
                )
                for c in meta_classes
            ),
            nodata,
        )
    meta_bits = r.get("classification:bitfields")
    if meta_bits:
        fields = []
        for f in meta_bits:
            names = [str(f.get("name") or "")]
            # a one-bit field may name itself by its set class ("cloud": 1 = "cloud")
            names += [str(c.get("name") or "") for c in f.get("classes", []) if c.get("value") == 1]
            name = next((n for n in names if flag_of(n)), names[0])
            fields.append((int(f["offset"]), int(f.get("length", 1)), name))
        return _bits_scheme(key, "classification:bitfields", fields, nodata)
    known = key.lower()
    if known in _WELL_KNOWN_CLASSES:
        codes = _WELL_KNOWN_CLASSES[known]
        return _classes_scheme(
            key,
            f"well-known {key} codes (the item has no classification metadata)",
            ((v, n, False) for v, n in codes.items()),
            nodata,
        )
    if known in _WELL_KNOWN_BITS:
        return _bits_scheme(
            key,
            f"well-known {key} bits (the item has no classification metadata)",
            ((o, 1, n) for o, n in _WELL_KNOWN_BITS[known].items()),
            nodata,
        )
    raise BandNotFound(
        f"collection {cid!r}: cannot tell what the values of quality band {key!r} mean (no "
        f"classification:classes or classification:bitfields, and not one of "
        f"{sorted({*_WELL_KNOWN_CLASSES, *_WELL_KNOWN_BITS})})"
    )


def snow_like(
    visible: Any, swir: Any, *, nir: Any = None, index_min: float = 0.4, visible_min: float = 0.1
) -> Any:
    """Pixels that look like snow: NDSI = (visible − SWIR1)/(visible + SWIR1) above
    ``index_min`` and visible reflectance above ``visible_min`` (and NIR above 0.11 when
    given, the classic test that keeps dark water out).

    ``visible`` is green where the collection has it (the standard NDSI); the Landsat sample
    has no green band, so the notebooks pass red, which for snow is as bright as green."""
    index = (visible - swir) / (visible + swir)
    out = (index > index_min) & (visible > visible_min)
    if nir is not None:
        out = out & (nir > 0.11)
    return out
