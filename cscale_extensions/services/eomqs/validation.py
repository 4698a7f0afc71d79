"""Parse and check Item Search parameters (GET query or POST body) into :class:`SearchParams`."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cscale_extensions.services.eomqs.errors import bad_request
from cscale_extensions.services.eomqs.filtering import as_text, parse_filter

#: sortable top-level fields: public name -> the field sent to sites; any item property is
#: sortable too, as ``properties.<name>`` or ``<name>`` (e.g. ``eo:cloud_cover``)
SORT_FIELDS = {
    "properties.datetime": "properties.datetime",
    "datetime": "properties.datetime",
    "id": "id",
    "collection": "collection",
}
#: top-level item members that are not properties and cannot be sorted on
UNSORTABLE = frozenset({"geometry", "bbox", "links", "assets", "type", "stac_version"})
_PROPERTY = re.compile(r"^[A-Za-z_][A-Za-z0-9_:.\-]{0,127}$")
GEOMETRY_TYPES = {
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
}


@dataclass(frozen=True)
class SortField:
    field: str
    desc: bool

    def as_json(self) -> dict[str, str]:
        return {"field": self.field, "direction": "desc" if self.desc else "asc"}


DEFAULT_SORT = (SortField("properties.datetime", True),)


@dataclass
class SearchParams:
    """A checked search. ``datetime`` is normalised to RFC 3339 (``Z``) or an interval of them."""

    limit: int
    bbox: list[float] | None = None
    intersects: dict[str, Any] | None = None
    datetime: str | None = None
    collections: list[str] | None = None
    ids: list[str] | None = None
    sortby: tuple[SortField, ...] = DEFAULT_SORT
    token: str | None = None
    filter: dict[str, Any] | None = None  # cql2-json
    extra: dict[str, Any] = field(default_factory=dict)

    def query_json(self) -> dict[str, Any]:
        """The search as a STAC POST body (without limit and token)."""
        out: dict[str, Any] = {}
        for key in ("bbox", "intersects", "datetime", "collections", "ids"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out["sortby"] = [s.as_json() for s in self.sortby]
        if self.filter is not None:
            out["filter"] = self.filter
            out["filter-lang"] = "cql2-json"
        return out

    def query_hash(self) -> str:
        """Fingerprint of what the search selects and in which order (not the page size)."""
        raw = json.dumps(self.query_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    def get_params(self) -> dict[str, str]:
        """The search as GET query parameters (without token)."""
        out: dict[str, str] = {"limit": str(self.limit)}
        if self.bbox is not None:
            out["bbox"] = ",".join(_num(v) for v in self.bbox)
        if self.intersects is not None:
            out["intersects"] = json.dumps(self.intersects, separators=(",", ":"))
        if self.datetime is not None:
            out["datetime"] = self.datetime
        if self.collections is not None:
            out["collections"] = ",".join(self.collections)
        if self.ids is not None:
            out["ids"] = ",".join(self.ids)
        if self.sortby != DEFAULT_SORT:
            out["sortby"] = ",".join(("-" if s.desc else "+") + s.field for s in self.sortby)
        if self.filter is not None:
            out["filter"] = as_text(self.filter)
            out["filter-lang"] = "cql2-text"
        return out


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


# -- individual parameters -----------------------------------------------------------------


def parse_limit(value: Any, default: int, maximum: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise bad_request("InvalidLimit", "limit must be an integer")
    try:
        n = int(value) if not isinstance(value, float) or value.is_integer() else None
    except (TypeError, ValueError):
        n = None
    if n is None:
        raise bad_request("InvalidLimit", f"limit must be an integer, got {value!r}")
    if n < 1:
        raise bad_request("InvalidLimit", f"limit must be at least 1, got {n}")
    return min(n, maximum)  # a larger limit gets the maximum (OGC API Features)


def parse_bbox(value: Any) -> list[float] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        parts = value.split(",")
        try:
            nums = [float(p) for p in parts]
        except ValueError:
            raise bad_request(
                "InvalidBbox", f"bbox must be 4 or 6 comma-separated numbers, got {value!r}"
            ) from None
    elif isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        nums = [float(v) for v in value]
    else:
        raise bad_request("InvalidBbox", "bbox must be an array of 4 or 6 numbers")
    if len(nums) not in (4, 6) or not all(math.isfinite(v) for v in nums):
        raise bad_request("InvalidBbox", f"bbox must have 4 or 6 finite numbers, got {len(nums)}")
    half = len(nums) // 2
    west, south, east, north = nums[0], nums[1], nums[half], nums[half + 1]
    if not (-180 <= west <= 180 and -180 <= east <= 180):
        raise bad_request("InvalidBbox", "bbox longitudes must be within [-180, 180]")
    if not (-90 <= south <= 90 and -90 <= north <= 90):
        raise bad_request("InvalidBbox", "bbox latitudes must be within [-90, 90]")
    if south > north:
        raise bad_request("InvalidBbox", "bbox south edge is north of its north edge")
    if half == 3 and nums[2] > nums[5]:
        raise bad_request("InvalidBbox", "bbox minimum elevation is above its maximum")
    return nums


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _instant(text: str) -> datetime:
    t = text.strip()
    if not _RFC3339.match(t):
        raise ValueError(t)
    if t[-1] in "zZ":
        t = t[:-1] + "+00:00"
    dt = datetime.fromisoformat(t.replace("t", "T"))
    if dt.tzinfo is None:
        raise ValueError(text)
    return dt.astimezone(UTC)


def _rfc3339(dt: datetime) -> str:
    s = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        s += f".{dt.microsecond:06d}".rstrip("0")
    return s + "Z"


def parse_datetime(value: Any) -> str | None:
    """A single RFC 3339 instant or an interval ``start/end`` with ``..`` or empty as open ends."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise bad_request("InvalidDatetime", "datetime must be a string")
    parts = value.split("/")
    if len(parts) > 2:
        raise bad_request("InvalidDatetime", f"datetime {value!r} has more than one '/'")
    bounds: list[datetime | None] = []
    for part in parts:
        if len(parts) == 2 and part in ("", ".."):
            bounds.append(None)
            continue
        try:
            bounds.append(_instant(part))
        except ValueError:
            raise bad_request(
                "InvalidDatetime",
                f"datetime {part!r} is not an RFC 3339 date-time (e.g. 2020-01-01T00:00:00Z)",
            ) from None
    if len(bounds) == 1:
        return _rfc3339(bounds[0])  # type: ignore[arg-type]
    start, end = bounds
    if start is None and end is None:
        raise bad_request("InvalidDatetime", "datetime interval must have at least one closed end")
    if start is not None and end is not None and start > end:
        raise bad_request("InvalidDatetime", f"datetime interval {value!r} ends before it starts")
    return "/".join(".." if b is None else _rfc3339(b) for b in bounds)


def parse_str_list(value: Any, name: str, one_string: bool = False) -> list[str] | None:
    """A list of strings, or a comma-separated string (GET); with ``one_string`` a string is
    one entry (a POST body's ``"collections": "sentinel-2-l2a"``)."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and one_string:
        items = [value.strip()]
    elif isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise bad_request("InvalidParameter", f"{name} must be a list of strings")
    if not items or any(not v for v in items):
        raise bad_request("InvalidParameter", f"{name} has an empty entry")
    return list(dict.fromkeys(items))


def parse_sortby(value: Any) -> tuple[SortField, ...]:
    if value is None or value == "" or value == []:
        return DEFAULT_SORT
    specs: list[tuple[str, bool]] = []
    if isinstance(value, str):
        for part in value.split(","):
            part = part.strip()
            desc = part.startswith("-")
            specs.append((part.lstrip("+-").strip(), desc))
    elif isinstance(value, list):
        for entry in value:
            if not isinstance(entry, dict) or not isinstance(entry.get("field"), str):
                raise bad_request("InvalidSortby", "sortby entries must be {field, direction}")
            direction = str(entry.get("direction", "asc")).lower()
            if direction not in ("asc", "desc"):
                raise bad_request(
                    "InvalidSortby", f"sortby direction must be asc or desc, got {direction!r}"
                )
            specs.append((entry["field"], direction == "desc"))
    else:
        raise bad_request("InvalidSortby", "sortby must be a string or a list")
    out: list[SortField] = []
    for name, desc in specs:
        f = sort_field(name)
        if f is None:
            raise bad_request(
                "InvalidSortby",
                f"cannot sort by {name!r}; sortable: id, collection, datetime and any item "
                "property (properties.<name> or <name>, e.g. eo:cloud_cover)",
            )
        if any(s.field == f for s in out):
            raise bad_request("InvalidSortby", f"sortby names {name!r} twice")
        out.append(SortField(f, desc))
    return tuple(out)


def sort_field(name: str) -> str | None:
    """The field sent to sites for a sortby name, or None when it cannot be sorted on."""
    if name in SORT_FIELDS:
        return SORT_FIELDS[name]
    prop = name[len("properties.") :] if name.startswith("properties.") else name
    if prop in UNSORTABLE or not _PROPERTY.match(prop):
        return None
    return f"properties.{prop}"


def _positions(coords: Any, depth: int) -> int:
    """Number of positions in ``coords`` nested ``depth`` levels deep; ValueError if malformed."""
    if depth == 0:
        if (
            not isinstance(coords, list)
            or not 2 <= len(coords) <= 3
            or not all(
                isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c)
                for c in coords
            )
        ):
            raise ValueError("a position must be 2 or 3 finite numbers")
        return 1
    if not isinstance(coords, list):
        raise ValueError("coordinates must be nested arrays")
    return sum(_positions(c, depth - 1) for c in coords)


_DEPTH = {
    "Point": 0,
    "MultiPoint": 1,
    "LineString": 1,
    "MultiLineString": 2,
    "Polygon": 2,
    "MultiPolygon": 3,
}


def _count(geom: Any) -> int:
    if not isinstance(geom, dict) or geom.get("type") not in GEOMETRY_TYPES:
        raise ValueError(f"type must be one of {', '.join(sorted(GEOMETRY_TYPES))}")
    if geom["type"] == "GeometryCollection":
        parts = geom.get("geometries")
        if not isinstance(parts, list):
            raise ValueError("a GeometryCollection needs a geometries array")
        return sum(_count(g) for g in parts)
    n = _positions(geom.get("coordinates"), _DEPTH[geom["type"]])
    if n == 0 and geom["type"] != "Point":
        raise ValueError("coordinates are empty")
    return n


def parse_intersects(value: Any, max_vertices: int) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if len(value) > max_vertices * 60:
            raise bad_request("InvalidIntersects", "intersects is too large")
        try:
            value = json.loads(value)
        except ValueError:
            raise bad_request("InvalidIntersects", "intersects is not valid JSON") from None
    try:
        n = _count(value)
    except (ValueError, RecursionError) as exc:
        raise bad_request(
            "InvalidIntersects", f"intersects is not a GeoJSON geometry: {exc}"
        ) from None
    if n > max_vertices:
        raise bad_request(
            "InvalidIntersects", f"intersects has {n} positions; at most {max_vertices} are allowed"
        )
    return value


def parse_search(
    raw: dict[str, Any], default_limit: int, max_limit: int, max_vertices: int, post: bool = False
) -> SearchParams:
    """Check a search given as GET parameters or a POST body (``post``), both as a dict."""
    if raw.get("query") not in (None, "", {}):
        raise bad_request(
            "UnsupportedParameter",
            "query (the STAC Query Extension) is not supported by EO-MQS; use a CQL2 filter, "
            "e.g. filter=eo:cloud_cover < 20",
        )
    if raw.get("fields") not in (None, "", {}, []):
        raise bad_request(
            "UnsupportedParameter",
            "fields is not supported by EO-MQS: it returns whole items (leave fields out)",
        )
    token = raw.get("token")
    if token is not None and not isinstance(token, str):
        raise bad_request("InvalidToken", "token must be a string")
    params = SearchParams(
        limit=parse_limit(raw.get("limit"), default_limit, max_limit),
        bbox=parse_bbox(raw.get("bbox")),
        intersects=parse_intersects(raw.get("intersects"), max_vertices),
        datetime=parse_datetime(raw.get("datetime")),
        collections=parse_str_list(raw.get("collections"), "collections", one_string=post),
        ids=parse_str_list(raw.get("ids"), "ids", one_string=post),
        sortby=parse_sortby(raw.get("sortby")),
        token=token or None,
        filter=parse_filter(raw.get("filter"), raw.get("filter-lang"), raw.get("filter-crs")),
    )
    if params.bbox is not None and params.intersects is not None:
        raise bad_request("InvalidParameter", "bbox and intersects cannot be used together")
    return params
