"""Fixtures of the workflow-notebook tests: a user's server on the shared stack and a runner
that executes a template notebook there with papermill, as the user would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from cscale_testing import server_url

from cscale_extensions.kernelclient import run_in_kernel

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "workflow_notebooks").glob("*.ipynb"))
USER = "demo-member"

#: executed in a kernel of the user's server: papermill on the copy in ~/workflow_notebooks/,
#: then the scraps and the user's dask clusters, printed as one JSON line
RUNNER = """
import json, os
import papermill as pm, scrapbook as sb
from dask_gateway import Gateway
home = os.path.expanduser("~")
src = os.path.join(home, "workflow_notebooks", {name!r} + ".ipynb")
out = os.path.join(home, "runs-test", {tag!r} + ".ipynb")
os.makedirs(os.path.dirname(out), exist_ok=True)
error = None
try:
    pm.execute_notebook(src, out, parameters=json.loads({params!r}), kernel_name="python3",
                        progress_bar=False, cwd=os.path.dirname(src))
except pm.PapermillExecutionError as exc:
    error = exc.ename + ": " + str(exc.evalue)
scraps = {{k: v.data for k, v in sb.read_notebook(out).scraps.items()}} if error is None else {{}}
gateway = Gateway()
clusters = [c.name for c in gateway.list_clusters()]
gateway.close()
print("RESULT " + json.dumps({{"error": error, "scraps": scraps, "clusters": clusters, "out": out}}, default=str))
"""


@pytest.fixture(scope="module")
def user_server(platform) -> tuple[str, str]:
    """(token, server URL) of the demo member's running server."""
    token = platform.api_token(USER)
    server = platform.start_server(token, USER)
    return token, server_url(platform.url, server["url"])


@pytest.fixture(scope="module")
def eomqs(platform, user_server) -> str:
    """$CSCALE_STAC_URL as the user's server sees it; fails when EO-MQS does not answer there."""
    token, server = user_server
    out = run_in_kernel(server, token, "import os; print(os.environ.get('CSCALE_STAC_URL', ''))")
    url = out.strip()
    r = requests.get(url.rstrip("/") + "/conformance", timeout=30)
    if r.status_code != 200 or not any("item-search" in c for c in r.json().get("conformsTo", [])):
        pytest.fail(
            f"EO-MQS does not answer at $CSCALE_STAC_URL={url} (HTTP {r.status_code}); "
            "the workflow notebooks need it in the stack"
        )
    return url


@pytest.fixture(scope="module")
def run_notebook(user_server, eomqs):
    """run_notebook(name, tag, **params) -> {"error", "scraps", "clusters", "out"} from the user's server."""
    token, server = user_server

    def run(name: str, tag: str, **params: Any) -> dict[str, Any]:
        code = RUNNER.format(name=name, tag=tag, params=json.dumps(params))
        out = run_in_kernel(server, token, code, timeout=900)
        line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
        return json.loads(line[len("RESULT ") :])

    return run
