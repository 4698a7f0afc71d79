"""How the sample data are split over the embedded sites.

The split makes the federation worth searching: ``landsat-5-tm-sr`` is on two sites with
overlapping dates (2009 items are on both, with identical ids: duplicates to merge),
``landsat-7-etm-sr`` is on two sites with disjoint date ranges, and ``sentinel-2-l1c`` is
held by one site only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class Holding:
    """Items of ``collection`` whose date is in [start, end] (inclusive)."""

    collection: str
    start: date
    end: date


@dataclass(frozen=True)
class SiteDef:
    name: str
    title: str
    kind: str  # "pgstac" or "rustac"
    url: str  # the provider's home page, for the collections' provider entry
    holdings: tuple[Holding, ...]


SITES: tuple[SiteDef, ...] = (
    SiteDef(
        "eodc",
        "EODC Earth Observation Data Centre (sample site, pgstac)",
        "pgstac",
        "https://eodc.eu",
        (
            Holding("landsat-5-tm-sr", date(2008, 1, 1), date(2009, 12, 31)),
            Holding("landsat-7-etm-sr", date(2008, 1, 1), date(2011, 12, 31)),
        ),
    ),
    SiteDef(
        "cesnet",
        "CESNET (sample site, rustac)",
        "rustac",
        "https://www.cesnet.cz",
        (
            Holding("landsat-5-tm-sr", date(2009, 1, 1), date(2011, 12, 31)),
            Holding("sentinel-2-l1c", date(2015, 1, 1), date(2030, 12, 31)),
        ),
    ),
    SiteDef(
        "incd",
        "INCD Infraestrutura Nacional de Computação Distribuída (sample site, rustac)",
        "rustac",
        "https://www.incd.pt",
        (Holding("landsat-7-etm-sr", date(2012, 1, 1), date(2013, 12, 31)),),
    ),
)
