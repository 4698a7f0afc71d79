"""The page cache of EO-MQS, bounded in bytes: what keeps EO-MQS's memory flat.

Site pages are kept so that the next page of a search does not fetch again a site page it only
partly used, and pages fetched ahead (prefetch) wait here. Bounded by a number of entries, the
cache held whatever those entries weighed: 512 pages of 1,000 items are gigabytes. It is bounded
by an estimate of the memory its pages take: :func:`estimated_size` of each page (the parsed
JSON of a STAC page takes 4-6 times its size on the wire, measured with tracemalloc on sample
items; 6 is used, plus the sort keys kept with it). The least recently used pages go first; a
page larger than the whole budget is not kept; expired pages are dropped as the cache is used
and by :meth:`PageCache.purge`, which the federation's watcher calls periodically, so an idle
EO-MQS gives the memory back to the allocator after ``page_cache_ttl``.

The lists of sites sorted here (every matching item of a site that cannot sort) live in the
same cache and count against the same budget: one bound for everything that holds pages.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

#: memory of parsed JSON per byte of JSON as received (measured 3.8-5.9 on STAC pages)
PARSED_PER_BYTE = 6
#: memory per item of one page's sort keys and key lists (merge.py keeps them with the page)
KEYS_PER_ITEM = 200
#: orders whose sort keys one page keeps (beyond that, they are computed again)
MAX_ORDERS_PER_PAGE = 4

Request = dict[str, Any]  # {"method": "GET"|"POST", "href": str, "body": dict|None}


def estimated_size(json_bytes: int, items: int) -> int:
    """Bytes a page parsed from ``json_bytes`` of JSON with ``items`` items takes in memory."""
    return PARSED_PER_BYTE * json_bytes + KEYS_PER_ITEM * MAX_ORDERS_PER_PAGE * items


@dataclass
class Page:
    items: list[Any]
    next: Request | None
    matched: int | None
    size: int = 0  # estimated bytes in memory (estimated_size)
    keyed: dict[str, Any] = field(default_factory=dict)  # sort keys, per order (merge.py)


class PageCache:
    """Recently fetched site pages, least recently used first out, at most ``max_bytes``."""

    def __init__(self, ttl: float, max_bytes: int):
        self.ttl, self.max_bytes = ttl, max_bytes
        self._data: OrderedDict[str, tuple[float, Page]] = OrderedDict()
        self.bytes = 0
        self.inflight: dict[str, asyncio.Future[Page]] = {}

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._data)

    @staticmethod
    def key(site_name: str, req: Request) -> str:
        return json.dumps([site_name, req], sort_keys=True, separators=(",", ":"))

    def _drop(self, key: str) -> None:
        _, page = self._data.pop(key)
        self.bytes -= page.size

    def get(self, key: str) -> Page | None:
        hit = self._data.get(key)
        if hit is None:
            return None
        if time.monotonic() - hit[0] > self.ttl:
            self._drop(key)
            return None
        self._data.move_to_end(key)
        return hit[1]

    def put(self, key: str, page: Page) -> None:
        if not self.enabled or page.size > self.max_bytes:
            return
        if key in self._data:
            self._drop(key)
        self._data[key] = (time.monotonic(), page)
        self.bytes += page.size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._data)))

    def purge(self) -> int:
        """Drop every expired page; returns how many."""
        now = time.monotonic()
        old = [k for k, (t, _) in self._data.items() if now - t > self.ttl]
        for k in old:
            self._drop(k)
        return len(old)
