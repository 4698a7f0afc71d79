"""Opt-in: server-side checks against a real Kubernetes cluster (set KUBECONFIG to run them).

`kubectl apply --dry-run=server` sends our rendered objects (stub subcharts: ours only) to the
API server, which validates them with the cluster's own schemas and admission (e.g. Pod
Security "restricted" if the namespace enforces it) without creating anything. Namespace:
$CSCALE_TEST_NAMESPACE (default "default"). Without KUBECONFIG these tests are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

KUBECTL = shutil.which("kubectl")
NAMESPACE = os.environ.get("CSCALE_TEST_NAMESPACE", "default")

pytestmark = [pytest.mark.opt_in, pytest.mark.skipif(
    not os.environ.get("KUBECONFIG") or KUBECTL is None,
    reason="needs a real cluster: set KUBECONFIG (and have kubectl on PATH) to run",
)]


def server_dry_run(objects: list[dict]) -> str:
    doc = {"apiVersion": "v1", "kind": "List", "items": objects}
    result = subprocess.run(
        [KUBECTL, "apply", "--dry-run=server", "-n", NAMESPACE, "-f", "-"],
        input=json.dumps(doc),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_rendered_chart_objects_pass_the_api_server(render):
    objs = render()
    out = server_dry_run(objs)
    assert "cscale-eo-mqs" in out


def test_kubespawner_pod_passes_the_api_server():
    import asyncio

    from traitlets.config import Config

    from cscale_extensions.hub.kubespawner import configure_kubespawner

    here = os.path.dirname(__file__)
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "ks_tests", os.path.join(here, "test_kubespawner.py")
    )
    ks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ks)
    c = Config()
    configure_kubespawner(c, ks.production_cfg(kubernetes={"namespace": NAMESPACE}))
    _, pod, pvc = asyncio.run(ks.pod_for(c, ["vo.cscale.eu"], "cesnet-small"))
    server_dry_run([pvc, pod])
