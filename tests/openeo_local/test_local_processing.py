"""cscale_extensions.notebook.openeo_local without a stack: the process check (clear errors for processes
local openEO processing lacks), the graph walk, the extents, and the two load_stac fixes.

Running graphs on the federation's data is tested by the 06 notebook in tests/notebooks."""

from __future__ import annotations

import json

import pytest

from cscale_extensions.notebook.openeo_local import (
    UnsupportedProcessError,
    available_processes,
    compat,
    run,
    used_processes,
)
from cscale_extensions.notebook.openeo_local.source import _temporal_extent


def graph(**nodes) -> dict:
    """A flat process graph; the last node is the result."""
    out = {name: {"process_id": pid, "arguments": args} for name, (pid, args) in nodes.items()}
    out[list(out)[-1]]["result"] = True
    return out


def test_available_processes_are_openeo_processes_dask_registry():
    names = available_processes()
    assert {"load_stac", "ndvi", "reduce_dimension", "reduce_spatial", "mask"} <= set(names)
    assert "save_result" not in names
    assert len(names) > 100


def test_a_graph_of_available_processes_runs():
    g = graph(a=("add", {"x": 2, "y": 3}), m=("multiply", {"x": {"from_node": "a"}, "y": 4}))
    assert run(g) == 20


def test_unsupported_process_is_named_before_anything_runs():
    g = graph(
        c=("constant", {"x": 1}),
        s=("save_result", {"data": {"from_node": "c"}, "format": "GTiff"}),
    )
    with pytest.raises(UnsupportedProcessError) as err:
        run(g)
    message = str(err.value)
    assert "'save_result'" in message and "available_processes()" in message
    assert err.value.missing == ["save_result"]


def test_unsupported_process_inside_a_callback_and_a_typo_get_suggestions():
    g = graph(
        n=("constant", {"x": [1, 2]}),
        r=(
            "reduce_dimension",
            {
                "data": {"from_node": "n"},
                "dimension": "t",
                "reducer": {
                    "process_graph": {
                        "f": {
                            "process_id": "ndvii",
                            "arguments": {"data": {"from_parameter": "data"}},
                            "result": True,
                        }
                    }
                },
            },
        ),
    )
    assert used_processes(g) == {"constant", "reduce_dimension", "ndvii"}
    with pytest.raises(UnsupportedProcessError, match=r"'ndvii' \(did you mean ndvi"):
        run(g)


def test_used_processes_accepts_a_process_graph_document():
    doc = {"process_graph": graph(a=("absolute", {"x": -1}))}
    assert used_processes(json.loads(json.dumps(doc))) == {"absolute"}


def test_time_range_becomes_a_half_open_extent_including_the_last_day():
    assert _temporal_extent("2008-01-01/2011-12-31") == ["2008-01-01", "2012-01-01"]
    with pytest.raises(ValueError, match="ends before it starts"):
        _temporal_extent("2011-01-01/2010-01-01")
    with pytest.raises(ValueError, match="YYYY-MM-DD/YYYY-MM-DD"):
        _temporal_extent("last summer")


def test_items_keep_only_the_requested_bands_assets():
    page = {
        "type": "FeatureCollection",
        "features": [
            {"id": "a", "assets": {"red": {}, "nir08": {}, "fmask": {}, "swir16": {}}},
            {"id": "b", "assets": {"red": {}, "fmask": {}}},  # lacks nir08: left as it is
        ],
    }
    token = compat._bands.set(["red", "nir08"])
    try:
        compat._restricted_modifier(None)(page)
    finally:
        compat._bands.reset(token)
    assert list(page["features"][0]["assets"]) == ["red", "nir08"]
    assert list(page["features"][1]["assets"]) == ["red", "fmask"]
    compat._restricted_modifier(None)(page)  # no load in progress: nothing changes
    assert list(page["features"][1]["assets"]) == ["red", "fmask"]


def test_schemas_come_from_the_bundled_copy_when_the_host_cannot_be_reached():
    calls: list[str] = []

    def unreachable(url, headers=None):
        calls.append(url)
        raise ConnectionError(f"cannot reach {url}")

    compat._unreachable.discard("schemas.stacspec.org")
    compat._unreachable.discard("stac-extensions.github.io")
    fetch = compat._schema_fetcher(unreachable)
    core = fetch("https://schemas.stacspec.org/v1.1.0/collection-spec/json-schema/collection.json")
    assert core["title"].lower().startswith("stac collection")
    ext = fetch("https://stac-extensions.github.io/eo/v1.1.0/schema.json")
    assert ext == {}
    fetch("https://stac-extensions.github.io/raster/v1.1.0/schema.json")
    # each unreachable host was tried once, then remembered
    assert len(calls) == 2
    with pytest.raises(ConnectionError):  # other hosts (the STAC documents) still fail loudly
        fetch("http://127.0.0.1:9/collections/x")
