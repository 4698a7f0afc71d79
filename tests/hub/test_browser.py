"""End to end in headless Chromium: log in through the OIDC provider's page, land in
JupyterLab, see workflow_notebooks/, open a notebook, run a cell and see its output."""

from __future__ import annotations

import pytest
import requests
from cscale_testing import server_url

pytestmark = [pytest.mark.browser, pytest.mark.slow]



def test_login_lab_notebooks_and_a_cell(platform, page, artifacts):
    user = "demo-member"
    token = platform.api_token(user)
    server = server_url(platform.url, platform.start_server(token, user)["url"])
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                     "source": "print('answer', 6 * 7)"}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    r = requests.put(f"{server}api/contents/e2e-check.ipynb", json={"type": "notebook", "content": nb},
                     headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code in (200, 201)

    page.goto(platform.url + "hub/login")
    page.get_by_text("Sign in with").click()
    page.fill("#username", user)
    page.fill("#password", platform.credentials[user])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/lab**", timeout=120_000)
    listing = page.locator(".jp-DirListing-content")
    listing.get_by_text("workflow_notebooks", exact=True).wait_for(timeout=120_000)
    page.screenshot(path=str(artifacts / "lab-home.png"))

    listing.get_by_text("workflow_notebooks", exact=True).dblclick()
    listing.get_by_text(".ipynb").first.wait_for(timeout=30_000)
    names = listing.locator(".jp-DirListing-itemText").all_inner_texts()
    assert any(n.endswith(".ipynb") for n in names), names
    page.screenshot(path=str(artifacts / "lab-workflow-notebooks.png"))

    page.goto(f"{server}lab/tree/e2e-check.ipynb")
    cell = page.locator(".jp-Notebook .jp-Cell").first
    try:
        cell.wait_for(timeout=60_000)
        # the status bar says "Python 3 (ipykernel) | Idle" once the kernel is connected
        page.get_by_text("| Idle").wait_for(timeout=180_000)
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
        output = page.locator(".jp-OutputArea-output").first
        output.wait_for(timeout=180_000)
        assert "answer 42" in output.inner_text()
    finally:
        page.screenshot(path=str(artifacts / "lab-cell-output.png"))
