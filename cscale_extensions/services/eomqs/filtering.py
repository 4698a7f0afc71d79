"""CQL2 ``filter`` of Item Search: parsed and checked once, sent on or evaluated here.

The C-SCALE EO-MQS tutorial (and users of the original MQS) filter with CQL2, e.g.
``eo:cloud_cover < 20``. A filter is parsed with the ``cql2`` library (cql2-rs, maintained by
Development Seed; no parser of our own), in ``cql2-json`` (a POST body's default) or
``cql2-text`` (a GET query's default), and kept as cql2-json. A site that advertises CQL2
filtering (``item-search#filter`` with ``cql2-json`` for POST, ``cql2-text`` for GET) gets the
filter in its request; for any other site EO-MQS evaluates it on the site's items with the same
library, so a search selects the same items whichever sites hold them. An item for which the
filter cannot be evaluated to true (e.g. ``eo:cloud_cover < 10`` on an item without
``eo:cloud_cover``) does not match, as in SQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cql2

from cscale_extensions.services.eomqs.errors import bad_request

#: conformance classes EO-MQS advertises for filtering
FILTER_CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/item-search#filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
]
LANGS = ("cql2-json", "cql2-text")
MAX_FILTER_CHARS = 100_000


@dataclass(frozen=True)
class SiteFiltering:
    """What a site can filter itself: cql2-json in POST bodies, cql2-text in GET queries."""

    json: bool = False
    text: bool = False

    def handles(self, method: str) -> bool:
        return self.json if method == "POST" else self.text


def site_filtering(conforms: list[str]) -> SiteFiltering:
    """A site's filter support from its conformance classes."""
    has = any(c.endswith("item-search#filter") for c in conforms) or any(
        c.endswith("ogcapi-features-3/1.0/conf/filter") for c in conforms
    )
    if not has:
        return SiteFiltering()
    return SiteFiltering(
        json=any(c.endswith("/cql2-json") for c in conforms),
        text=any(c.endswith("/cql2-text") for c in conforms),
    )


def parse_filter(value: Any, lang: Any, crs: Any) -> dict[str, Any] | None:
    """The filter as cql2-json, or None; 400 ``InvalidFilter`` when it does not parse."""
    if value is None or value == "" or value == {}:
        return None
    if lang not in (None, "", *LANGS):
        raise bad_request(
            "InvalidFilter", f"filter-lang must be cql2-json or cql2-text, got {lang!r}"
        )
    if crs not in (None, "", "http://www.opengis.net/def/crs/OGC/1.3/CRS84"):
        raise bad_request("InvalidFilter", "filter-crs must be CRS84 (longitude, latitude)")
    if not lang:
        lang = "cql2-json" if isinstance(value, dict) else "cql2-text"
    if lang == "cql2-json" and isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise bad_request("InvalidFilter", "filter is not valid cql2-json") from None
    if lang == "cql2-json" and not isinstance(value, dict):
        raise bad_request("InvalidFilter", "a cql2-json filter must be a JSON object")
    if lang == "cql2-text" and not isinstance(value, str):
        raise bad_request("InvalidFilter", "a cql2-text filter must be a string")
    if len(value if isinstance(value, str) else json.dumps(value)) > MAX_FILTER_CHARS:
        raise bad_request("InvalidFilter", f"filter is longer than {MAX_FILTER_CHARS} characters")
    if isinstance(value, dict):
        value = _final_between(value)
    try:
        expr = cql2.Expr(value)
        expr.validate()
        out = expr.to_json()
        cql2.Expr(out).to_text()  # every accepted filter can be sent to a GET site
    except Exception as exc:  # noqa: BLE001 - cql2 raises plain Exceptions and ValueErrors
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:6])[:300]
        raise bad_request("InvalidFilter", f"filter is not valid {lang}: {detail}") from None
    if not isinstance(out, dict):
        raise bad_request("InvalidFilter", "filter must be a boolean expression")
    return out


def _final_between(node: Any, depth: int = 0) -> Any:
    """The draft CQL2 form ``between(x, [lo, hi])`` (still sent by stac-api-validator 0.6 and
    older clients) rewritten to the final ``between(x, lo, hi)``; anything else unchanged."""
    if depth > 100 or not isinstance(node, dict):
        return node
    args = node.get("args")
    if not isinstance(args, list):
        return node
    if (
        node.get("op") == "between"
        and len(args) == 2
        and isinstance(args[1], list)
        and len(args[1]) == 2
    ):
        args = [args[0], *args[1]]
    return {**node, "args": [_final_between(a, depth + 1) for a in args]}


def as_text(filter_json: dict[str, Any]) -> str:
    """The cql2-text form of a filter (for GET requests and next links)."""
    return cql2.Expr(filter_json).to_text()


def matcher(filter_json: dict[str, Any] | None) -> Callable[[dict[str, Any]], bool] | None:
    """A predicate: whether an item matches the filter (None: no filter)."""
    if filter_json is None:
        return None
    expr = cql2.Expr(filter_json)

    def match(item: dict[str, Any]) -> bool:
        try:
            return expr.matches(item) is True
        except Exception:  # noqa: BLE001 - "could not reduce to boolean": a missing property
            return False

    return match
