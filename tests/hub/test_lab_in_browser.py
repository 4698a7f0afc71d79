"""In headless Chromium on the shared stack (issue #21): what a member sees after signing in.
JupyterLab shows the server's resource indicator; notebook 01, run in the member's own server,
draws its footprints on interactive (folium/Leaflet) maps; the hub's home page lists the
member's servers, the federation's data sites, the compute sites open to their VO and their
limits. Notebook 03 shows its water masks on such a map. Screenshots go to test-artifacts/.

Before #21 notebooks 01 and 03 drew their maps with matplotlib only (no iframe, no Leaflet map
in their output) and /hub/home was JupyterHub's bare "Start My Server" button (no servers table,
no sites, no limits): the map and home-page tests fail there; the first fails without
jupyter-resource-usage in the environment.
"""

from __future__ import annotations

import re

import pytest
import requests
from cscale_testing import server_url
from cscale_testing.browser import open_lab
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from cscale_extensions.localstack.sites.layout import SITES

pytestmark = [pytest.mark.browser, pytest.mark.slow]

USER = "demo-member"
#: where the test puts its copy of notebook 01 (the user's ~/workflow_notebooks/ stays as seeded)
COPY_DIR = "browser-tests"


def _sign_in(page, stack, user: str = USER) -> None:
    """Sign in through the identity provider's page; the hub then opens the user's server."""
    page.goto(stack.url + "hub/login")
    page.get_by_role("button", name="Sign in with").click()
    page.fill("#username", user)
    page.fill("#password", stack.credentials[user])
    page.get_by_role("button", name="Sign in").click()
    open_lab(page)  # through the spawn form of compute sites (the member has cloud and hpc)


@pytest.fixture(scope="module")
def member_server(platform) -> tuple[str, str]:
    """(token, server URL) of the member's running default server."""
    token = platform.api_token(USER)
    return token, server_url(platform.url, platform.start_server(token, USER)["url"])


@pytest.fixture(scope="module")
def notebook_copy(member_server):
    """copy(name) -> path of a copy of the user's ~/workflow_notebooks/<name>.ipynb in
    ~/browser-tests/, made through the server's contents API (running it there leaves the
    seeded copy as it is)."""
    token, server = member_server
    api = requests.Session()
    api.headers["Authorization"] = f"token {token}"
    assert api.put(f"{server}api/contents/{COPY_DIR}", json={"type": "directory"},
                   timeout=30).status_code in (200, 201)

    def copy(name: str) -> str:
        r = api.get(f"{server}api/contents/workflow_notebooks/{name}.ipynb", timeout=30)
        assert r.status_code == 200, r.text[:300]
        path = f"{COPY_DIR}/{name}.ipynb"
        r = api.put(f"{server}api/contents/{path}", timeout=30,
                    json={"type": "notebook", "format": "json", "content": r.json()["content"]})
        assert r.status_code in (200, 201), r.text[:300]
        return path

    return copy


def _run_all(page, server: str, path: str) -> None:
    """Open the notebook ``path`` alone in JupyterLab (``?reset``: no tabs restored from an
    earlier test) and run all its cells (Run > Run All Cells), once its kernel is idle; a
    second try when no cell has started within a minute (a click while Lab is still settling)."""
    page.goto(f"{server}lab/tree/{path}?reset")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    page.get_by_text("| Idle").wait_for(timeout=180_000)
    started = page.locator(".jp-InputPrompt", has_text=re.compile(r"\[(\*|\d+)\]")).first
    for attempt in (1, 2):
        page.locator(".jp-Notebook .jp-Cell").first.click()
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        try:
            started.wait_for(timeout=60_000)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise


def test_lab_shows_the_resource_indicator(platform, member_server, page, artifacts):
    """jupyter-resource-usage's memory item is in JupyterLab's status bar after sign-in."""
    _sign_in(page, platform)
    try:
        page.locator(".jp-DirListing-content").wait_for(timeout=120_000)
        indicator = page.get_by_text("Mem: ").first
        indicator.wait_for(timeout=60_000)
        assert "B" in indicator.inner_text()  # "Mem: 123.45 MB" (or "/ 2.00 GB" with a limit)
    finally:
        page.screenshot(path=str(artifacts / "lab-resource-indicator.png"))


def test_notebook_01_renders_its_footprint_maps(platform, member_server, notebook_copy, page,
                                                artifacts):
    """Running notebook 01 in JupyterLab (Run All Cells) shows a Leaflet map per collection of
    the sample, each with footprints drawn and the delivering sites in its layer control."""
    _, server = member_server
    _sign_in(page, platform)
    try:
        _run_all(page, server, notebook_copy("01-data-discovery"))
        maps = page.locator(".jp-OutputArea-output iframe")
        maps.first.wait_for(timeout=180_000)
        collections = {h.collection for s in SITES for h in s.holdings}
        page.wait_for_function(
            "n => document.querySelectorAll('.jp-OutputArea-output iframe').length >= n",
            arg=len(collections), timeout=60_000)
        site_names = {s.name for s in SITES}
        seen_sites: set[str] = set()
        for i in range(maps.count()):
            frame = page.frame_locator(".jp-OutputArea-output iframe").nth(i)
            frame.locator(".leaflet-container").wait_for(timeout=60_000)
            assert frame.locator("path.leaflet-interactive").count() >= 1
            labels = frame.locator(".leaflet-control-layers-overlays label").all_inner_texts()
            seen_sites |= {name for name in site_names if any(name in lb for lb in labels)}
        assert seen_sites == site_names, (seen_sites, site_names)
        maps.first.scroll_into_view_if_needed()
    finally:
        page.screenshot(path=str(artifacts / "lab-notebook-01-map.png"))


def test_notebook_03_overlays_its_water_masks(platform, member_server, notebook_copy, page,
                                              artifacts):
    """Running notebook 03 in JupyterLab shows the check scene's two water masks as image
    overlays on a Leaflet map, each a layer of its own, with the check area outlined."""
    _, server = member_server
    _sign_in(page, platform)
    try:
        _run_all(page, server, notebook_copy("03-surface-water-dynamics"))
        overlay = page.locator(".jp-OutputArea-output iframe").last
        overlay.wait_for(timeout=300_000)
        overlay.scroll_into_view_if_needed()
        frame = page.frame_locator(".jp-OutputArea-output iframe").last
        frame.locator(".leaflet-container").wait_for(timeout=60_000)
        assert frame.locator("img.leaflet-image-layer").count() == 2
        labels = frame.locator(".leaflet-control-layers-overlays label").all_inner_texts()
        assert any("rule" in lb for lb in labels) and any("MNDWI" in lb for lb in labels)
        assert any("area of interest" in lb for lb in labels), labels
    finally:
        page.screenshot(path=str(artifacts / "lab-notebook-03-water-map.png"))


def test_home_page_lists_servers_sites_and_limits(platform, member_server, page, artifacts):
    """/hub/home shows the member's running default server, every data site of the federation,
    the compute sites and the member's limits as the settings give them."""
    cfg = platform.cfg
    _sign_in(page, platform)
    page.goto(platform.url + "hub/home")
    try:
        servers = page.locator("#cscale-servers")
        servers.wait_for(timeout=30_000)
        row = servers.locator('tr[data-server-name=""]')
        assert "running" in row.inner_text() and "default" in row.inner_text()
        assert page.get_by_role("button", name="Stop My Server").is_visible()
        sites = page.locator("#cscale-sites").inner_text()
        for site in cfg["federation"]["sites"]:
            assert site["name"] in sites
        assert {s.name for s in SITES} <= {s["name"] for s in cfg["federation"]["sites"]}
        for name in ("cloud", "hpc"):
            assert name in sites
        limits = page.locator("#cscale-limits")
        text = limits.inner_text()
        for title in ("Your server", "Dask clusters", "Headless runs"):
            assert title in text
        dask = limits.locator("table").nth(1).inner_text()
        assert f"Clusters at once\t{cfg['dask_gateway']['max_clusters_per_user']}" in dask
        assert f"Workers per cluster\t{cfg['dask_gateway']['defaults']['max_workers']}" in dask
        runs = limits.locator("table").nth(2).inner_text()
        assert f"Runs executing at once\t{cfg['runs']['max_concurrent_per_user']}" in runs
        assert cfg["auth"]["vos"][0] in page.locator("#cscale-home").inner_text()
    finally:
        page.screenshot(path=str(artifacts / "hub-home.png"), full_page=True)


def _dask_notebook(server: str, token: str, path: str) -> None:
    """~/``path``: a notebook that starts a gateway cluster with one worker, computes on it and
    prints its name and dashboard link."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("\n".join([
        "import dask.array as da",
        "from dask_gateway import Gateway",
        "cluster = Gateway().new_cluster()",
        "cluster.scale(1)",
        "client = cluster.get_client()",
        "client.wait_for_workers(1, timeout=240)",
        "total = da.ones((2000, 2000), chunks=250).sum().compute()",
        "print('name', cluster.name)",
        "print('link', cluster.dashboard_link)",
    ]))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    r = requests.put(f"{server}api/contents/{path}", timeout=30,
                     headers={"Authorization": f"token {token}"},
                     json={"type": "notebook", "format": "json", "content": nb})
    assert r.status_code in (200, 201), r.text[:300]


def test_dask_panel_shows_a_kernels_gateway_cluster(platform, member_server, notebook_copy, page,
                                                    artifacts):
    """A notebook starts a gateway cluster; the Dask panel's auto-detect finds its dashboard
    link in the kernel (on the member's own origin, through her server) and opens the task
    stream: a Bokeh plot drawn in a frame of the lab's origin. Before, the link was on the
    gateway's host, which the panel cannot show (its check fails: "not a dashboard")."""
    from cscale_extensions.kernelclient import run_in_kernel

    token, server = member_server
    notebook_copy("01-data-discovery")  # makes ~/browser-tests/
    path = f"{COPY_DIR}/dask-panel.ipynb"
    _dask_notebook(server, token, path)
    _sign_in(page, platform)
    name = ""
    try:
        _run_all(page, server, path)
        output = page.locator(".jp-OutputArea-output", has_text="link http")
        output.wait_for(timeout=420_000)
        text = output.inner_text()
        name = re.search(r"name (\S+)", text).group(1)
        link = re.search(r"link (\S+)", text).group(1)
        assert link == f"{server}dask-gateway/clusters/{name}/status", text
        page.locator('.jp-SideBar .lm-TabBar-tab[data-id="dask-dashboard-launcher"]').click()
        page.locator('.dask-URLInput [title="Auto-detect dashboard URL"]').click()
        items = page.locator(".dask-DashboardListing-item")
        items.first.wait_for(timeout=60_000)
        assert page.locator(".dask-URLInput input").input_value().startswith(
            f"{server}dask-gateway/clusters/{name}/")
        items.filter(has_text=re.compile(r"^\s*Task Stream\s*$")).first.click()
        frame_el = page.locator(".dask-DaskDashboard-widget iframe").first
        frame_el.wait_for(timeout=60_000)
        src = frame_el.get_attribute("src") or ""
        assert src.startswith(f"{server}dask-gateway/clusters/{name}/individual-task-stream"), src
        frame = page.frame_locator(".dask-DaskDashboard-widget iframe").first
        frame.locator("canvas").first.wait_for(timeout=120_000)
        items.filter(has_text="Progress").first.click()
        page.wait_for_function(
            "() => document.querySelectorAll('.dask-DaskDashboard-widget iframe').length >= 2",
            timeout=60_000)
        page.wait_for_timeout(3000)  # let the plots draw for the screenshot
    finally:
        page.screenshot(path=str(artifacts / "lab-dask-panel-gateway-dashboard.png"))
        if name:
            run_in_kernel(server, token, "\n".join([
                "from dask_gateway import Gateway",
                f"Gateway().stop_cluster({name!r})",
            ]), timeout=120)
