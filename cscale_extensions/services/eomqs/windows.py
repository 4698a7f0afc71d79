"""Datetime windows: an exact ordered merge of a site that cannot sort, without reading it whole.

A site without ``item-search#sort`` (rustac) returns its items in its own order. When it holds
more matching items than EO-MQS sorts whole (``unsorted_max_items``) and the order starts with
``datetime``, EO-MQS asks it for one window of datetimes at a time, newest first for a
descending sort, reads that window whole, sorts it, and emits it before asking for the next:
every item of a later window sorts after every item of this one, so the order is exact. A window
holding too many items is narrowed (same edge) to where the items read from it suggest half the
limit lies (a sample of the window, so a few steps at most); one holding fewer than a page makes
the next wider, in proportion to the items it held (2 to 64 times), so empty stretches of time
cost a few requests.

Where to start: at the search's bound (now, without one), unless the site's collections say
where their items end (``extent.temporal``; the start for an ascending sort). Then the first
window reaches from the search's bound to a day beyond that end: one request finds the newest
items, also when the extent is stale (items after its end are in that window too; too many of
them narrow it, as any window), so the metadata saves requests and never decides the result. The
first window's width is what the site's last window read suggests holds about two pages (its
density of items), a day the first time. Each item is emitted in the window
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


def instant_us(item: dict[str, Any]) -> int | None:
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
    base: int = 0  # a first window reaching to the extent's end: the width its items fill

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
        us = instant_us(item)
        return us is not None and self._in(us)

    def next(self, held: int, want: int) -> Window:
        """The adjacent window further in the order. Held fewer than ``want`` items (a page):
        wider, to about twice ``want`` at the density seen (2 to 64 times as wide, not beyond
        a width that was found to hold too many); else as wide."""
        width = self.base or self.width
        if held < want:
            factor = min(max(2, -(-2 * want // max(held, 1))), 64)
            width = min(width * factor, max(self.hi - self.lo, 1))
            if self.narrowed_from:
                width = min(width, max(self.narrowed_from // 2, self.width))
        edge = self.start - 1 if self.desc else self.end + 1
        return replace(self, edge=edge, width=width, base=0)

    def narrowed(self, sample: list[dict[str, Any]], cap: int) -> Window:
        """A narrower window at the same edge: to the ``cap // 8``-th nearest instant among
        ``sample`` (items the site returned for this window: if they are a fair share of
        it, the narrower window holds about ``cap // 8`` of every ``len(sample)`` items),
        64 times narrower when the sample says nothing."""
        instants = sorted(
            (u for u in (instant_us(i) for i in sample) if u is not None and self._in(u)),
            reverse=self.desc,
        )
        k = max(cap // 8, 1)
        width = self.width // 64
        if len(instants) > k:
            width = min(abs(self.edge - instants[k]), self.width - 1)
        return replace(self, width=max(width, 0), narrowed_from=self.width, base=0)

    def density(self, newest_first: dict[str, Any]) -> float:
        """One item's share of the stretch of this window its items fill (items per microsecond
        = the number read times this): from ``newest_first``, the first of them in the order, to
        the window's far side; an empty stretch before that item (beyond the extent's end) does
        not count."""
        us = instant_us(newest_first)
        far = self.start if self.desc else self.end
        return 1.0 / max(abs(us - far) if us is not None else self.end - self.start, US)

    def _in(self, us: int) -> bool:
        return self.start <= us <= self.end

    def as_json(self) -> list[int]:
        out = [int(self.desc), self.edge, self.width, self.lo, self.hi]
        return [*out, self.base] if self.base else out

    @classmethod
    def from_json(cls, doc: Any) -> Window:
        if not isinstance(doc, list) or len(doc) not in (5, 6):
            raise ValueError("not a window")
        desc, edge, width, lo, hi, *base = (int(v) for v in doc)
        if width < 0 or any(b < 0 for b in base):
            raise ValueError("negative width")
        return cls(bool(desc), edge, width, lo, hi, base=base[0] if base else 0)


def first_width(density: float, want: int) -> int:
    """The width of a first window: about twice ``want`` items at the ``density`` (items per
    microsecond) of the site's last window read, a day when unknown, at least a second."""
    if density <= 0:
        return DAY
    return max(min(int(2 * want / density), 366 * DAY), US)


def window_bounds(
    user_datetime: str | None,
    desc: bool,
    extent: tuple[int, int] | None = None,
    width: int = DAY,
) -> Window:
    """The first window of a search with the (checked, normalised) ``datetime`` parameter,
    ``width`` wide; ``extent``: (oldest, newest) instant of the site's items by its
    collections' metadata, the first window then reaching from the search's bound to
    ``width`` beyond it."""
    lo, hi = EARLIEST, int((time.time() + 86_400) * US)
    if user_datetime:
        a, sep, b = user_datetime.partition("/")
        b = b if sep else a
        if a not in ("", ".."):
            lo = max(lo, _us(a))
        if b not in ("", ".."):
            hi = _us(b)
    win = Window(desc, hi if desc else lo, width, lo, hi)
    if extent is not None:
        inner = extent[1] - width if desc else extent[0] + width
        reach = hi - inner if desc else inner - lo
        if reach > width:
            win = replace(win, width=reach, base=width)
    return win


def extent_us(intervals: list[Any]) -> tuple[int, int] | None:
    """(oldest, newest) instant of STAC temporal intervals, None when one is open or unreadable."""
    lo = hi = None
    for iv in intervals:
        if not isinstance(iv, list) or len(iv) != 2 or not all(isinstance(t, str) for t in iv):
            return None
        try:
            a, b = _us(iv[0]), _us(iv[1])
        except (ValueError, IndexError):
            return None
        lo = a if lo is None else min(lo, a)
        hi = b if hi is None else max(hi, b)
    return None if lo is None or hi is None else (lo, hi)
