"""Datetime windows: an exact ordered merge of a site that cannot sort, without reading it whole.

A site without ``item-search#sort`` (rustac) returns its items in its own order. When it holds
more matching items than EO-MQS sorts whole (``unsorted_max_items``) and the order starts with
``datetime``, EO-MQS asks it for one window of datetimes at a time, newest first for a
descending sort, reads that window whole, sorts it, and emits it before asking for the next:
every item of a later window sorts after every item of this one, so the order is exact. A window
holding too many items is narrowed (same edge) to where the items read from it suggest half the
limit lies (a sample of the window, so a few steps at most); one holding fewer than a page makes
the next twice as wide, so empty stretches of time cost a few requests. Each item is emitted in the window
holding its sort instant (``datetime``, else ``start_datetime``) only, also when the site returns
it for other windows its interval intersects. Times are integers of microseconds.

Limits (documented in docs/eomqs.md): an item with neither ``datetime`` nor ``start_datetime``
is not reached this way; more than ``unsorted_max_items`` items at one same instant are flagged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

US = 1_000_000
DAY = 86_400 * US
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(text: str) -> int:
    """Microseconds since the epoch of an RFC 3339 instant, exactly (no float)."""
    t = text.strip()
    if t[-1:] in ("z", "Z"):
        t = t[:-1] + "+00:00"
    dt = datetime.fromisoformat(t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - EPOCH) // timedelta(microseconds=1)


EARLIEST = _us("1900-01-01T00:00:00Z")


def _instant_us(item: dict[str, Any]) -> int | None:
    props = item.get("properties")
    props = props if isinstance(props, dict) else {}
    text = props.get("datetime")
    text = text if text is not None else props.get("start_datetime")
    if not isinstance(text, str):
        return None
    try:
        return _us(text)
    except ValueError:
        return None


def rfc3339(us: int) -> str:
    dt = EPOCH + timedelta(microseconds=us)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Window:
    desc: bool
    edge: int  # the window's newest instant (descending) or oldest (ascending)
    width: int
    lo: int  # the search's bounds
    hi: int
    narrowed_from: int = 0  # the width before the last narrowing (not in tokens: a hint only)

    @property
    def start(self) -> int:
        return max(self.edge - self.width, self.lo) if self.desc else self.edge

    @property
    def end(self) -> int:
        return self.edge if self.desc else min(self.edge + self.width, self.hi)

    @property
    def done(self) -> bool:
        return self.edge < self.lo if self.desc else self.edge > self.hi

    def interval(self) -> str:
        return f"{rfc3339(self.start)}/{rfc3339(self.end)}"

    def holds(self, item: dict[str, Any]) -> bool:
        """Whether the item's sort instant (``datetime``, else ``start_datetime``) is in this
        window (computed from its text exactly, as the site compares it)."""
        us = _instant_us(item)
        return us is not None and self._in(us)

    def next(self, grow: bool) -> Window:
        """The adjacent window further in the order; twice as wide when this one held fewer
        items than a page (not beyond a width that was found to hold too many)."""
        width = self.width
        if grow:
            width = min(self.width * 2, max(self.hi - self.lo, 1))
            if self.narrowed_from:
                width = min(width, max(self.narrowed_from // 2, self.width))
        edge = self.start - 1 if self.desc else self.end + 1
        return replace(self, edge=edge, width=width)

    def narrowed(self, sample: list[dict[str, Any]], cap: int) -> Window:
        """A narrower window at the same edge: to the ``cap // 8``-th nearest instant among
        ``sample`` (items the site returned for this window: if they are a fair share of
        it, the narrower window holds about ``cap // 8`` of every ``len(sample)`` items),
        64 times narrower when the sample says nothing."""
        instants = sorted(
            (u for u in (_instant_us(i) for i in sample) if u is not None and self._in(u)),
            reverse=self.desc,
        )
        k = max(cap // 8, 1)
        width = self.width // 64
        if len(instants) > k:
            width = min(abs(self.edge - instants[k]), self.width - 1)
        return replace(self, width=max(width, 0), narrowed_from=self.width)

    def _in(self, us: int) -> bool:
        return self.start <= us <= self.end

    def as_json(self) -> list[int]:
        return [int(self.desc), self.edge, self.width, self.lo, self.hi]

    @classmethod
    def from_json(cls, doc: Any) -> Window:
        desc, edge, width, lo, hi = (int(v) for v in doc)
        if width < 0:
            raise ValueError("negative width")
        return cls(bool(desc), edge, width, lo, hi)


def window_bounds(user_datetime: str | None, desc: bool) -> Window:
    """The first window of a search with the (checked, normalised) ``datetime`` parameter."""
    lo, hi = EARLIEST, int((time.time() + 86_400) * US)
    if user_datetime:
        a, sep, b = user_datetime.partition("/")
        b = b if sep else a
        if a not in ("", ".."):
            lo = max(lo, _us(a))
        if b not in ("", ".."):
            hi = _us(b)
    return Window(desc, hi if desc else lo, DAY, lo, hi)
