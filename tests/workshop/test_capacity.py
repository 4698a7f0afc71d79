"""`workshop capacity` on a real stack: probe servers measured from /proc, then removed."""

from __future__ import annotations

import json

from cscale_extensions.workshop.hubapi import HubAPI


def test_capacity_measures_real_servers(ws_stack, admin_token, cli):
    rc, out, err = cli("capacity", "--users", "10", "--probes", "2", "--json")
    assert rc in (0, 3), err  # 3: does not fit (a verdict, not an error)
    v = json.loads(out)
    assert v["memory_per_server_mib"] > 10  # a jupyter server and a kernel with numpy
    assert v["rss_per_server_mib"] >= v["memory_per_server_mib"]
    assert v["cpu_seconds_per_start"] > 0 and v["spawns_per_second"] > 0
    assert v["memory_needed_mib"] == round(10 * v["memory_per_server_mib"])
    assert v["fits_memory"] == (v["memory_needed_mib"] <= v["memory_budget_mib"] + 1)
    assert (rc == 0) == (v["fits_memory"] and v["fits_cores"])
    api = HubAPI(ws_stack.url, admin_token)
    assert api.user("capacity-probe-1") is None and api.user("capacity-probe-2") is None

    rc, out, _ = cli("capacity", "--users", "100000", "--probes", "1")
    assert rc == 3 and "DO NOT FIT" in out and "PSS" in out
    rc, _, err = cli("capacity", "--users", "0")
    assert rc == 2 and "at least 1" in err
