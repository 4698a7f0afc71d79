"""The page cache of EO-MQS, bounded in bytes and holding pages as bytes: what keeps EO-MQS's
memory flat and its garbage collector idle.

Site pages are kept so that a search's next page does not fetch a site page again, and pages
read ahead (prefetch) wait here. Bounded by a number of entries, the cache once held whatever
those entries weighed (512 pages of 1,000 items are gigabytes); holding them parsed, it also
made every full collection of Python's garbage collector walk millions of cached objects —
≈ 110 ms each, 15 ms of every 100-item page EO-MQS served from a deep search (measured with
``gc.callbacks`` against a 100k-item pgstac site), more than all of EO-MQS's other work on it.

So an entry is the page's JSON as the site sent it (:class:`Entry`, parsed again each time it
is used: orjson reads a 100-item page of sample items in ≈ 5 ms), counted at its length plus
:data:`ENTRY_OVERHEAD`; a budget of 32 MiB holds about eight pages of 1,000 sample items. What a
page holds once parsed is the caller's and goes with the request. The remainder of a site page
that a search's next page starts with is kept as its own, much smaller entry (merge.py), so
paging does not parse a site page twice.

The least recently used entries go first; an entry larger than the whole budget is not kept;
expired entries are dropped as the cache is used and by :meth:`PageCache.purge`, which the
federation's watcher calls periodically, so an idle EO-MQS gives the memory back after
``page_cache_ttl``. The sorted item lists of sites that cannot sort (:class:`SortedItems`)
live in the same cache and count against the same budget: one bound for everything.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

#: bytes counted per entry besides its JSON (its key, the next request, the objects holding it)
ENTRY_OVERHEAD = 2048
#: bytes counted per item of a sorted list besides its JSON (its sort key and the list's slot)
KEY_BYTES_PER_ITEM = 200

Request = dict[str, Any]  # {"method": "GET"|"POST", "href": str, "body": dict|None}


@dataclass
class Page:
    """A site page, parsed: the caller's own, never cached."""

    items: list[Any]
    next: Request | None
    matched: int | None


@dataclass(slots=True)
class Entry:
    """A cached page as bytes: a site's JSON answer, or (``tail``) the JSON list of the items
    of a site page that a search's next page starts with."""

    raw: bytes
    next: Request | None = None  # known once ``checked`` (a tail: from the start)
    matched: int | None = None
    checked: bool = False  # parsed once and found to be an ItemCollection
    tail: bool = False  # a list of items (merge.py), next and matched those of its page

    @property
    def size(self) -> int:
        return len(self.raw) + ENTRY_OVERHEAD


@dataclass(slots=True)
class SortedItems:
    """Every matching item of a site that cannot sort, sorted here: (key, item JSON) pairs."""

    items: list[tuple[Any, bytes]]
    size: int


class PageCache:
    """Recently fetched pages, least recently used first out, at most ``max_bytes``."""

    def __init__(self, ttl: float, max_bytes: int):
        self.ttl, self.max_bytes = ttl, max_bytes
        self._data: OrderedDict[str, tuple[float, Entry | SortedItems]] = OrderedDict()
        self.bytes = 0
        self.inflight: dict[str, asyncio.Future[Entry]] = {}

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._data)

    @staticmethod
    def key(site_name: str, req: Request) -> str:
        return json.dumps([site_name, req], sort_keys=True, separators=(",", ":"))

    def _drop(self, key: str) -> None:
        _, value = self._data.pop(key)
        self.bytes -= value.size

    def discard(self, key: str) -> None:
        if key in self._data:
            self._drop(key)

    def get(self, key: str) -> Any:
        """The entry under ``key`` (an :class:`Entry` or :class:`SortedItems`), None if absent
        or expired."""
        hit = self._data.get(key)
        if hit is None:
            return None
        if time.monotonic() - hit[0] > self.ttl:
            self._drop(key)
            return None
        self._data.move_to_end(key)
        return hit[1]

    def put(self, key: str, value: Entry | SortedItems) -> None:
        size = value.size
        if not self.enabled or size > self.max_bytes:
            return
        if key in self._data:
            self._drop(key)
        self._data[key] = (time.monotonic(), value)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._data)))

    def purge(self) -> int:
        """Drop every expired entry; returns how many."""
        now = time.monotonic()
        old = [k for k, (t, _) in self._data.items() if now - t > self.ttl]
        for k in old:
            self._drop(k)
        return len(old)
