"""Cloud shadow from the sun's geometry, for scenes that ship no quality band.

Why: a dark cloud shadow passes as water in a SWIR-based water rule, and shadowed water reads
darker than it is, so a water-quality index over it is wrong. Where an item has a quality band
(Level-2A ``SCL``, CFmask) its shadow class is used instead (``bands.qa_scheme``). Where it has
none (the Level-1C sample), shadows are found as Fmask finds them (Zhu & Woodcock 2012), much
simplified: each cloud object is projected away from the sun for a range of cloud heights, and
the first (lowest) height at which the projected shape falls mostly on NIR-dark pixels is taken
as its height; the projected shape at that height, where dark, is its shadow.

The sun's azimuth and elevation come from the item (``view:sun_*``, ``s2:mean_solar_*`` or the
older ``eo:sun_*``); when the item carries none, they are computed from its datetime at the
centre of its footprint (NOAA's low-precision solar position, ~0.1° here), and ``SunAngles``
says so. Flat terrain, a vertical cloud and a nadir view are assumed (no parallax correction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class SunAngles:
    """Sun azimuth (degrees clockwise from north) and elevation (degrees), and where they came from."""

    azimuth: float
    elevation: float
    source: str


def solar_position(when: datetime, lon: float, lat: float) -> tuple[float, float]:
    """(azimuth, elevation) of the sun in degrees at ``when`` (timezone-aware) and lon/lat."""
    t = when.utctimetuple()
    hours = t.tm_hour + t.tm_min / 60 + t.tm_sec / 3600
    g = 2 * math.pi / 365 * (t.tm_yday - 1 + (hours - 12) / 24)  # fractional year, radians
    eqtime = 229.18 * (
        0.000075 + 0.001868 * math.cos(g) - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g) - 0.040849 * math.sin(2 * g)
    )  # fmt: skip
    decl = (
        0.006918 - 0.399912 * math.cos(g) + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g) + 0.000907 * math.sin(2 * g)
        - 0.002697 * math.cos(3 * g) + 0.00148 * math.sin(3 * g)
    )  # fmt: skip
    solar_minutes = hours * 60 + eqtime + 4 * lon  # true solar time
    ha = math.radians(solar_minutes / 4 - 180)  # hour angle, 0 at solar noon
    phi = math.radians(lat)
    sin_el = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    elevation = math.degrees(math.asin(max(-1.0, min(1.0, sin_el))))
    azimuth = math.degrees(
        math.atan2(math.sin(ha), math.cos(ha) * math.sin(phi) - math.tan(decl) * math.cos(phi))
    )
    return (azimuth + 180) % 360, elevation


def sun_angles(item: Any) -> SunAngles:
    """The sun's position for a STAC item: from its properties, else computed (see module)."""
    p = item.properties
    for az, el, zenith in (
        ("view:sun_azimuth", "view:sun_elevation", False),
        ("s2:mean_solar_azimuth", "s2:mean_solar_zenith", True),
        ("eo:sun_azimuth", "eo:sun_elevation", False),
    ):
        if p.get(az) is not None and p.get(el) is not None:
            elevation = 90 - float(p[el]) if zenith else float(p[el])
            return SunAngles(float(p[az]), elevation, f"item properties {az}, {el}")
    if item.datetime is None or not item.bbox:
        raise ValueError(f"item {item.id} has no sun angles, datetime or bbox to compute them")
    w, s, e, n = item.bbox[:4]
    az, el = solar_position(item.datetime, (w + e) / 2, (s + n) / 2)
    return SunAngles(
        az, el, f"computed from the item's datetime {item.datetime:%Y-%m-%dT%H:%M:%SZ} "
        f"at its centre (no sun angles in its properties)"
    )  # fmt: skip


def _moved(rr: np.ndarray, cc: np.ndarray, shift: tuple[int, int], shape: tuple[int, int]):
    """Pixels ``(rr, cc)`` moved by ``shift``: (rows, cols, n), the first n inside ``shape``."""
    r2, c2 = rr + shift[0], cc + shift[1]
    inside = (r2 >= 0) & (r2 < shape[0]) & (c2 >= 0) & (c2 < shape[1])
    order = np.argsort(~inside, kind="stable")
    return r2[order], c2[order], int(inside.sum())


@dataclass(frozen=True)
class ShadowResult:
    """The shadow mask and, per cloud object matched, its size, height (m) and match score."""

    shadow: np.ndarray
    matches: list[dict[str, float]]
    n_clouds: int


def cloud_shadow(
    cloud: np.ndarray,
    dark: np.ndarray,
    *,
    sun: SunAngles,
    pixel_size: float,
    heights: tuple[float, float] = (200.0, 12000.0),
    min_match: float = 0.5,
    min_cloud_pixels: int = 9,
    max_score_pixels: int = 5000,
) -> ShadowResult:
    """Shadow pixels of the ``cloud`` objects (8-connected) on a north-up grid.

    For each cloud of at least ``min_cloud_pixels``, its shape is moved away from the sun by
    ``h / tan(elevation)`` for cloud heights ``h`` in ``heights`` (every pixel shift); at each
    step the score is the fraction of ``dark`` pixels among the moved pixels that lie in the
    image and are not cloud (steps with under half the shape there are skipped, so a shadow
    mostly hidden under its own or another cloud is not found). The first
    step scoring at least ``min_match``, climbed to its local best, is the cloud's height; its
    moved pixels that are ``dark`` and not cloud are shadow. Clouds larger than
    ``max_score_pixels`` are scored on an even sample of their pixels (the shadow is not).
    """
    if sun.elevation <= 0:
        raise ValueError(f"the sun is below the horizon (elevation {sun.elevation:.1f}°)")
    cloud = np.asarray(cloud, bool)
    dark = np.asarray(dark, bool)
    az = math.radians(sun.azimuth)
    tan_el = math.tan(math.radians(sun.elevation))
    # unit step away from the sun in (row, col): rows grow southwards on a north-up grid
    step_r, step_c = math.cos(az), -math.sin(az)
    d_lo, d_hi = (h / tan_el / pixel_size for h in heights)
    shadow = np.zeros(cloud.shape, bool)
    matches: list[dict[str, float]] = []
    labels, n = ndimage.label(cloud, structure=np.ones((3, 3), bool))
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        rr, cc = np.nonzero(labels[sl] == index)
        if rr.size < min_cloud_pixels:
            continue
        rr, cc = rr + sl[0].start, cc + sl[1].start
        every = max(1, rr.size // max_score_pixels)  # a large cloud is scored on a sample
        best = None  # (score, shift)
        last: tuple[int, int] | None = None
        for d in np.arange(d_lo, d_hi + 0.5, 0.5):  # half-pixel steps reach every pixel shift
            shift = (int(round(d * step_r)), int(round(d * step_c)))
            if shift == last:
                continue
            last = shift
            r2, c2, inside = _moved(rr[::every], cc[::every], shift, cloud.shape)
            if inside < r2.size / 2 or inside == 0:
                if best is not None or inside == 0:
                    break  # the shape is leaving the image
                continue
            free = ~cloud[r2[:inside], c2[:inside]]
            if free.sum() < r2.size / 2:
                continue  # mostly under clouds: no evidence either way
            score = float(dark[r2[:inside][free], c2[:inside][free]].mean())
            if (best is None and score >= min_match) or (best is not None and score > best[0]):
                best = (score, shift)
            elif best is not None and score < best[0]:
                break  # past the local best after the first match
        if best is None:
            continue
        score, shift = best
        r2, c2, inside = _moved(rr, cc, shift, cloud.shape)
        r2, c2 = r2[:inside], c2[:inside]
        keep = dark[r2, c2] & ~cloud[r2, c2]
        shadow[r2[keep], c2[keep]] = True
        height = math.hypot(*shift) * pixel_size * tan_el
        matches.append({"pixels": int(rr.size), "height_m": round(height, 1), "score": score})
    return ShadowResult(shadow, matches, int(n))
