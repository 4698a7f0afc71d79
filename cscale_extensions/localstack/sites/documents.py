"""The STAC documents a site serves: its share of the prepared catalog, with live hrefs.

Asset hrefs become ``<asset_base>/<path under eodata>`` (the loopback asset server of this
run) and each asset gets ``alternate.local.href``, the absolute on-site POSIX path, as
C-SCALE's MQS exposes it. Collections get this site as their host provider and an extent
computed from the items the site holds.
"""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path
from urllib.parse import quote

from cscale_extensions.localstack.sites.layout import SiteDef

ALTERNATE_EXT = "https://stac-extensions.github.io/alternate-assets/v1.2.0/schema.json"


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def read_prepared(eodata: Path) -> dict[str, tuple[dict, list[dict]]]:
    """collection id -> (collection, items) of the static catalog in ``eodata/stac``.

    Asset hrefs in the returned items are absolute file paths.
    """
    root = eodata / "stac" / "catalog.json"
    out: dict[str, tuple[dict, list[dict]]] = {}
    for link in _read(root)["links"]:
        if link["rel"] != "child":
            continue
        cpath = (root.parent / link["href"]).resolve()
        coll = _read(cpath)
        items = []
        for ilink in coll["links"]:
            if ilink["rel"] != "item":
                continue
            ipath = (cpath.parent / ilink["href"]).resolve()
            item = _read(ipath)
            for asset in item["assets"].values():
                asset["href"] = str((ipath.parent / asset["href"]).resolve())
            items.append(item)
        out[coll["id"]] = (coll, items)
    return out


def _item_date(item: dict) -> date:
    return date.fromisoformat(item["properties"]["datetime"][:10])


def _live_item(item: dict, eodata: Path, asset_base: str) -> dict:
    item = copy.deepcopy(item)
    item["links"] = []
    exts = item.setdefault("stac_extensions", [])
    if ALTERNATE_EXT not in exts:
        exts.append(ALTERNATE_EXT)
    for asset in item["assets"].values():
        local = asset["href"]
        rel = Path(local).relative_to(eodata).as_posix()
        asset["href"] = f"{asset_base.rstrip('/')}/{quote(rel)}"
        asset["alternate"] = {"local": {"href": local, "title": "On-site POSIX path"}}
    return item


def _live_collection(coll: dict, items: list[dict], site: SiteDef) -> dict:
    coll = copy.deepcopy(coll)
    coll["links"] = [ln for ln in coll["links"] if ln["rel"] == "license"]
    exts = coll.setdefault("stac_extensions", [])
    if ALTERNATE_EXT not in exts:
        exts.append(ALTERNATE_EXT)
    times = sorted(i["properties"]["datetime"] for i in items)
    boxes = [i["bbox"] for i in items]
    coll["extent"] = {
        "spatial": {
            "bbox": [
                [
                    min(b[0] for b in boxes),
                    min(b[1] for b in boxes),
                    max(b[2] for b in boxes),
                    max(b[3] for b in boxes),
                ]
            ]
        },
        "temporal": {"interval": [[times[0], times[-1]]]},
    }
    coll["providers"] = [
        *coll.get("providers", []),
        {"name": site.name, "roles": ["host"], "url": site.url},
    ]
    return coll


def site_documents(
    site: SiteDef, eodata: Path, asset_base: str, prepared: dict | None = None
) -> tuple[list[dict], list[dict]]:
    """(collections, items) that ``site`` serves, with hrefs under ``asset_base``."""
    eodata = Path(eodata).resolve()
    prepared = prepared if prepared is not None else read_prepared(eodata)
    collections, items = [], []
    for holding in site.holdings:
        coll, all_items = prepared[holding.collection]
        mine = [i for i in all_items if holding.start <= _item_date(i) <= holding.end]
        if not mine:
            continue
        collections.append(_live_collection(coll, mine, site))
        items.extend(_live_item(i, eodata, asset_base) for i in mine)
    return collections, items
