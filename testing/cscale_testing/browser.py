"""Debian's Chromium, headless, under Playwright: one way every browser test starts it."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: no sandbox (tests run as root), and nothing that reaches the network on its own
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (a Playwright ``Browser``), closed on exit."""
    from playwright.sync_api import sync_playwright

    path = shutil.which("chromium")
    assert path, "Debian's chromium is required (scripts/apt-packages.txt installs it)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


#: a page of JupyterLab, or the hub's spawn form (not /hub/spawn-pending/…)
_LAB_OR_FORM = re.compile(r".*(/lab([/?#].*)?$|/hub/spawn(/[^/?#]+)?/?([?#].*)?$)")


def open_lab(page: Any, timeout: float = 180_000) -> None:
    """After sign-in, wait for JupyterLab; on the way, start the server from the spawn form
    with its preselected choices (the compute site, cscale_extensions.hub.siteform) as a user
    would, when the hub shows one (users with more than one compute site)."""
    page.wait_for_url(_LAB_OR_FORM, timeout=timeout)
    if "/lab" not in page.url and page.locator("#spawn_form").count():
        page.locator("#spawn_form").get_by_role("button", name="Start").click()
    page.wait_for_url("**/lab**", timeout=timeout)
