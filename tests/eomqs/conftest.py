"""Fixtures of the EO-MQS tests: a federation of real rustac sites with overlapping items."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sitekit import make_collection, make_item, rustac_site  # noqa: E402


@pytest.fixture(scope="session")
def rustac_federation(tmp_path_factory):
    """Three rustac sites; site b repeats a third of a's items (same collection and id), site c
    holds a collection of its own. Yields (site entries, every site's items)."""
    rng = random.Random(42)
    s2 = [make_item("sentinel-2", n, rng) for n in range(90)]
    ls = [make_item("landsat", n, rng) for n in range(40)]
    data = {
        "a": ([make_collection("sentinel-2")], s2[:60]),
        "b": ([make_collection("sentinel-2"), make_collection("landsat")], s2[40:] + ls[:25]),
        "c": ([make_collection("landsat")], ls[15:]),
    }
    root = tmp_path_factory.mktemp("rustac")
    from contextlib import ExitStack

    with ExitStack() as stack:
        entries = []
        for name, (colls, items) in data.items():
            url = stack.enter_context(rustac_site(root / name, colls, items))
            entries.append({"name": f"site-{name}", "url": url, "timeout": 10})
        yield entries, {f"site-{k}": v[1] for k, v in data.items()}
