"""The researcher's locked environment (issue #21, docs/environment.md), checked without a stack.

User servers run from the same locked ``.venv`` (and the singleuser image installs the same
lock), so what a fresh subprocess of that interpreter imports and lists is what a user's
kernel and JupyterLab get. Each test fails on the environment before #21, which had none of
these packages and no JupyterLab extension beyond pygments.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent
#: the EO stack a new user expects from a Pangeo-like notebook image
KERNEL_IMPORTS = ["netCDF4", "h5netcdf", "s3fs", "cartopy", "hvplot", "holoviews", "stackstac",
                  "ipywidgets", "folium", "nbgitpuller", "rasterio", "xarray", "dask_gateway"]


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """An environment like a fresh user's: empty home, no Jupyter config of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "PYTHON"))}
    env.update(HOME=str(tmp_path), NO_COLOR="1", PATH=f"{VENV_BIN}:{env.get('PATH', '')}")
    return env


def _run(args: list[str], tmp_path: Path) -> str:
    p = subprocess.run(args, capture_output=True, text=True, timeout=180, env=_clean_env(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    return re.sub(r"\x1b\[[0-9;]*m", "", p.stdout + p.stderr)


def test_a_user_kernel_imports_the_eo_stack(tmp_path):
    """netCDF products (Sentinel-3, CMEMS, ERA5), object storage, maps and plots load in a
    kernel-like subprocess, and NetCDF goes through the same HDF5 stack as h5netcdf."""
    code = ("import " + ", ".join(KERNEL_IMPORTS) + "\n"
            "import numpy as np, xarray as xr\n"
            "ds = xr.Dataset({'t': ('x', np.arange(3.0))})\n"
            f"ds.to_netcdf({str(tmp_path / 'a.nc')!r}, engine='netcdf4')\n"
            f"assert xr.open_dataset({str(tmp_path / 'a.nc')!r}, engine='h5netcdf')['t'].sum() == 3\n"
            "print('ok')\n")
    assert _run([sys.executable, "-c", code], tmp_path).strip().endswith("ok")


@pytest.mark.parametrize("name", ["dask-labextension", "@jupyter-server/resource-usage",
                                  "@jupyterlab/git", "@jupyter-widgets/jupyterlab-manager"])
def test_jupyterlab_has_the_extension_enabled(name, tmp_path):
    """The prebuilt lab extension is installed in the venv and enabled (no lab build needed)."""
    out = _run([str(VENV_BIN / "jupyter"), "labextension", "list"], tmp_path)
    lines = [ln for ln in out.splitlines() if ln.split() and ln.split()[0] == name]
    assert lines, out
    assert "enabled" in lines[0] and "OK" in lines[0], lines[0]


@pytest.mark.parametrize("name", ["jupyter_resource_usage", "jupyterlab_git", "nbgitpuller",
                                  "cscale_extensions.singleuser.gateway_dashboards",
                                  "cscale_extensions.singleuser.lazy_extensions",
                                  "cscale_extensions.singleuser.hub_tls"])
def test_the_user_server_loads_the_server_extension(name, tmp_path):
    """Its server part (dashboard proxy, metrics, git API, gitpuller links) is enabled and
    validates in the interpreter the user servers run."""
    out = _run([str(VENV_BIN / "jupyter"), "server", "extension", "list"], tmp_path)
    lines = [ln.strip() for ln in out.splitlines()]
    assert any(ln.startswith(name) and "enabled" in ln for ln in lines), out
    assert any(ln.startswith(name) and ln.endswith("OK") for ln in lines), out


def test_dask_panel_new_cluster_is_a_gateway_cluster(tmp_path):
    """The user servers' environment makes the Dask panel's "+ New" build a GatewayCluster
    (dask-labextension's default would be a LocalCluster inside the user's server)."""
    from cscale_extensions import config as settings
    from cscale_extensions.hub.environment import user_environment

    cfg = settings.load(overrides={"auth": {"issuer": "http://127.0.0.1:1/"}})
    env = {k: v for k, v in user_environment(cfg).items() if k.startswith("DASK_LABEXTENSION")}
    code = ("import dask, dask_labextension\n"
            "f = dask.config.get('labextension.factory')\n"
            "print(f['module'], f['class'])\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**_clean_env(tmp_path), **env})
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["dask_gateway", "GatewayCluster"]


LAZY_CONFIG = VENV_BIN.parent / "etc/jupyter/jupyter_server_config.d/z-cscale-lazy-extensions.json"


def _imported(log: Path) -> set[str]:
    """Modules a ``python -X importtime`` process has imported so far (its stderr; the
    outermost module of an import is not always listed, its submodules are)."""
    return {ln.rsplit("|", 1)[1].strip() for ln in log.read_text(errors="replace").splitlines()
            if ln.startswith("import time:") and ln.count("|") == 2}


@contextmanager
def _jupyter_server(tmp_path: Path, argv: list[str], env: dict[str, str]):
    """A real jupyter server started with ``argv`` on a loopback port (its stderr in
    ``server.log``), stopped afterwards; yields (url, token, log)."""
    import secrets

    from cscale_extensions.net import free_port, http_ready, wait_for

    port, token = free_port(), secrets.token_hex(12)
    log = tmp_path / "server.log"
    root = tmp_path / "root"
    root.mkdir(parents=True)
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*argv, "--allow-root", f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
             "--ServerApp.open_browser=False", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={root}"],
            env=env, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}/"
    try:
        assert wait_for(lambda: http_ready(url + "api/status", 1.0), 120, 0.3), log.read_text()[-3000:]
        yield url, token, log
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture
def user_server(tmp_path):
    """A real jupyter server of the user environment (its installed configuration) on a
    loopback port, importing with ``-X importtime`` so the test sees what it has loaded."""
    assert LAZY_CONFIG.is_file(), f"{LAZY_CONFIG} missing: run scripts/setup.sh"
    argv = [sys.executable, "-X", "importtime", "-m", "jupyter_server"]
    with _jupyter_server(tmp_path, argv, _clean_env(tmp_path)) as server:
        yield server


def test_heavy_server_extensions_load_at_their_first_request(user_server):
    """dask_labextension and panel's extension (~3 CPU-s of imports at every server start)
    are imported only when their routes are first asked for, then serve as usual
    (cscale_extensions/singleuser/lazy_extensions.py); an anonymous request loads nothing."""
    import requests

    url, token, log = user_server
    heavy = {"dask_labextension.manager", "distributed", "panel.io", "bokeh"}
    assert not heavy & _imported(log), "imported at start"
    r = requests.get(url + "dask/clusters", allow_redirects=False, timeout=30)
    assert r.status_code in (302, 403) and "distributed" not in _imported(log)
    auth = {"Authorization": f"token {token}"}
    r = requests.get(url + "dask/clusters", headers=auth, allow_redirects=False, timeout=60)
    assert r.status_code == 307 and r.headers["Location"].endswith("/dask/clusters"), r.text
    r = requests.get(url + "dask/clusters", headers=auth, timeout=60)
    assert r.status_code == 200 and r.json() == []  # dask_labextension's own cluster list
    assert "dask_labextension.manager" in _imported(log) and "bokeh" not in _imported(log)
    r = requests.get(url + "panel_dist/no-such-file.js", headers=auth, timeout=60)
    assert r.status_code == 404 and r.url.endswith("/panel_dist/no-such-file.js")
    assert {"panel.io", "bokeh"} <= _imported(log)
    r = requests.get(url + "dask/clusters", headers=auth, allow_redirects=False, timeout=30)
    assert r.status_code == 200  # the lazy route is gone once loaded


def _server_runs_node(tmp_path: Path, argv: list[str]) -> list[str]:
    """Start a real jupyter server with ``argv`` and `node`/`npm` wrappers first on PATH that
    note each call; return the calls made until the server answered (and JupyterLab's page)."""
    import requests

    wrappers, calls = tmp_path / "bin", tmp_path / "node-calls"
    wrappers.mkdir(parents=True)
    for tool in ("node", "npm"):
        real = shutil.which(tool)
        assert real, f"{tool} missing: run scripts/setup.sh"
        (wrappers / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\nexec {real} "$@"\n')
        (wrappers / tool).chmod(0o755)
    env = _clean_env(tmp_path)
    env["PATH"] = f"{wrappers}:{env['PATH']}"
    with _jupyter_server(tmp_path, argv, env) as (url, token, _log):
        r = requests.get(url + "lab", headers={"Authorization": f"token {token}"}, timeout=60)
        assert r.status_code == 200 and "jupyter-config-data" in r.text
        time.sleep(2)  # jupyter-lsp looks for language servers just after the start
    return calls.read_text().splitlines() if calls.exists() else []


def test_a_user_server_starts_without_running_node(tmp_path):
    """Started as the hub starts it (cscale_extensions.singleuser.launch), a server with JupyterLab
    and jupyter-lsp runs no node process (singleuser/nodefree.py: ~0.7 CPU-s of every start);
    the same server started plainly does, so the wrappers do see node calls."""
    plain = _server_runs_node(tmp_path / "plain", [sys.executable, "-m", "jupyter_server"])
    assert any("yarn.js config" in c for c in plain) and any("prefix -g" in c for c in plain), plain
    ours = _server_runs_node(
        tmp_path / "ours", [sys.executable, "-P", "-m", "cscale_extensions.singleuser.launch", "jupyter-server"]
    )
    assert ours == []
