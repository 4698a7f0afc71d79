"""The total order of merged results: the requested sort fields, then id, then collection.

Any item property can be a sort field (``properties.eo:cloud_cover``). Missing values sort last
in either direction; numbers come before strings (a property holding both is an odd catalogue,
but the order stays total); values that are neither (arrays, objects) count as missing.
Datetimes (``datetime``, ``start_datetime``, ``end_datetime``, ``created``, ``updated``) compare
as instants (sites may format them differently); an item without ``datetime`` uses
``start_datetime``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import total_ordering
from typing import Any

from cscale_extensions.services.eomqs.validation import SortField

Key = tuple[Any, ...]


@total_ordering
class _Rev:
    """A string compared in reverse."""

    __slots__ = ("v",)

    def __init__(self, v: str):
        self.v = v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Rev) and self.v == other.v

    def __lt__(self, other: _Rev) -> bool:
        return other.v < self.v

    def __hash__(self) -> int:
        return hash(self.v)


def instant(value: Any) -> float | None:
    """Seconds since the epoch of an RFC 3339 string, or None."""
    if not isinstance(value, str):
        return None
    t = value.strip()
    if t[-1:] in ("z", "Z"):
        t = t[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


TIMES = frozenset({"start_datetime", "end_datetime", "created", "updated"})


def _value(item: dict[str, Any], f: str) -> Any:
    if not f.startswith("properties."):
        v = item.get(f)
        return v if isinstance(v, str) else None
    props = item.get("properties")
    props = props if isinstance(props, dict) else {}
    name = f[len("properties.") :]
    if name == "datetime":
        v = props.get("datetime")
        return instant(v if v is not None else props.get("start_datetime"))
    v = props.get(name)
    if name in TIMES:
        return instant(v)
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    return v if isinstance(v, str) else None


def full_sort(sortby: Sequence[SortField]) -> tuple[SortField, ...]:
    """``sortby`` completed with the tie-breakers id and collection (ascending) into a total order."""
    out = list(sortby)
    for f in ("id", "collection"):
        if not any(s.field == f for s in out):
            out.append(SortField(f, False))
    return tuple(out)


def key_function(sortby: Sequence[SortField]) -> Callable[[dict[str, Any]], Key]:
    """The sort key of an item under ``full_sort(sortby)``."""
    fields = full_sort(sortby)

    def key(item: dict[str, Any]) -> Key:
        out: list[Any] = []
        for s in fields:
            v = _value(item, s.field)
            if v is None:
                out.append((2, 0))
            elif isinstance(v, float):
                out.append((0, -v if s.desc else v))
            else:
                out.append((1, _Rev(v) if s.desc else v))
        return tuple(out)

    return key
