"""In headless Chromium (issue #21): the hub's pages present the service, a refused outsider
gets the branded "join a VO" page, and a member's JupyterLab has the resource indicator and
the Dask panel. Screenshots go to test-artifacts/.

Before #21 the landing page was JupyterHub's bare "Sign in with ..." button (no service name,
no policy links), the 403 page one sentence, and JupyterLab had no extension beyond pygments:
each test below fails there.
"""

from __future__ import annotations

import pytest
from cscale_testing import LocalStack
from cscale_testing.browser import open_lab

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BRANDING = {"service_name": "C-SCALE Test Hub",
            "terms_url": "https://example.org/terms", "privacy_url": "https://example.org/privacy",
            "support_url": "mailto:support@example.org"}
VO = "vo.cscale.eu"
#: the pages, the sign-in and JupyterLab need the hub, proxy, provider and spawner only: no data
#: sites, STAC service, runs service or gateway (the Dask panel is JupyterLab's own extension)
LEAN = {
    "federation": {"embedded_sites": False},
    "eomqs": {"enabled": False},
    "runs": {"enabled": False},
    "dask_gateway": {"enabled": False},
}


@pytest.fixture(scope="module")
def branded(notebook_source):
    """A stack whose hub has its branding (policy links) set, as an operator would."""
    stack = LocalStack(config={**LEAN, "hub": {"branding": BRANDING}, "auth": {"vos": [VO]},
                               "notebooks": {"source": str(notebook_source)}}).start()
    try:
        yield stack
    finally:
        leftovers = stack.finish()
        assert not leftovers, f"processes of the stack left running: {leftovers}"


def _sign_in(page, stack, user: str) -> None:
    page.goto(stack.url + "hub/login")
    page.get_by_role("button", name="Sign in with").click()
    page.fill("#username", user)
    page.fill("#password", stack.credentials[user])
    page.get_by_role("button", name="Sign in").click()


def test_landing_page_names_the_service_and_links_its_policies(branded, page, artifacts):
    """A visitor sees what the service is, whom they sign in with, and the terms of use,
    privacy notice and support links an EGI-federated service must show."""
    page.goto(branded.url + "hub/login")
    try:
        card = page.locator("#cscale-login")
        card.wait_for(timeout=30_000)
        assert BRANDING["service_name"] in card.inner_text()
        assert "Dask" in card.inner_text() and "workshops" in card.inner_text()
        assert page.title() == BRANDING["service_name"]
        assert "Sign in with C-SCALE identity provider" in card.inner_text()
        footer = page.locator("#cscale-policy-links")
        for label, key in (("Terms of use", "terms_url"), ("Privacy notice", "privacy_url"),
                           ("Support", "support_url")):
            assert footer.get_by_role("link", name=label).get_attribute("href") == BRANDING[key]
    finally:
        page.screenshot(path=str(artifacts / "hub-login-branded.png"), full_page=True)


def test_outsider_gets_the_branded_join_a_vo_page(branded, page, artifacts):
    """An authenticated account outside every VO is refused with a page in the service's
    style that names the VO to join and how to come back."""
    _sign_in(page, branded, "demo-outsider")
    try:
        box = page.locator("#cscale-join-vo")
        box.wait_for(timeout=60_000)
        text = box.inner_text()
        assert VO in text and BRANDING["service_name"] in text, text
        assert box.get_by_role("link", name="Contact support").get_attribute("href") == \
            BRANDING["support_url"]
        assert page.locator("#cscale-policy-links").is_visible()
    finally:
        page.screenshot(path=str(artifacts / "hub-403-join-vo.png"), full_page=True)


def test_member_lab_has_resource_indicator_and_dask_panel(branded, page, artifacts):
    """After sign-in, JupyterLab's status bar shows the server's memory and the left bar has
    the Dask panel (dask-labextension), both from the locked environment."""
    _sign_in(page, branded, "demo-member")
    open_lab(page)  # through the spawn form of compute sites (the member has cloud and hpc)
    try:
        page.locator(".jp-DirListing-content").wait_for(timeout=120_000)
        page.get_by_text("Mem: ").first.wait_for(timeout=60_000)
        tab = page.locator('[data-id="dask-dashboard-launcher"]')
        tab.wait_for(timeout=60_000)
        tab.click()
        page.locator("#dask-dashboard-launcher").wait_for(state="visible", timeout=30_000)
    finally:
        page.screenshot(path=str(artifacts / "lab-dask-panel-resource-usage.png"))
