"""Each image installs only what its processes need, and all of that: the per-process extras.

pyproject.toml declares one extra per process (``hub``, ``gateway``, ``singleuser``, ``eomqs``,
``runs``; ``services`` = the last two; ``localstack`` = all, what requirements.lock holds); each
image installs the lock of the extras of the processes it runs (images/<image>/requirements.lock,
``make lock``). What is proved, from the real source, the installed distributions' metadata
and the committed locks (no image is built, docs/deploy.md):

- every third-party module that the code of a process can import (the static closure of its
  entry points, :mod:`cscale_testing.importgraph`, the same walk as the import contracts) or
  that the process runs besides our code (z2jh's hub configuration and culler, the gateway's
  controller, the user server's extensions, the workflow notebooks) comes from a distribution
  in the closure of that process's extra;
- the image's lock holds that closure, at the pins of requirements.lock, and nothing of the
  ``test`` extra; the Dockerfile installs exactly that lock.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import re
import sys
import tarfile
import tomllib
from functools import cache
from pathlib import Path

import pytest
from cscale_testing.importgraph import PROCESSES, third_party_loaded_by
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
SELF = canonicalize_name(PROJECT["name"])
#: process (cscale_testing.importgraph.PROCESSES) -> (its extra, the image that runs it)
PROCESS = {
    "hub": ("hub", "hub"),
    "dask-gateway": ("gateway", "gateway"),
    "dask scheduler/worker": ("singleuser", "singleuser"),
    "user server": ("singleuser", "singleuser"),
    "kernel": ("singleuser", "singleuser"),
    "eo-mqs": ("eomqs", "singleuser"),
    "runs service": ("runs", "singleuser"),
}
#: image -> the extras its Dockerfile installs (the Makefile's IMAGE_EXTRAS)
IMAGES = {"hub": ["hub"], "gateway": ["gateway"], "singleuser": ["singleuser", "services"]}


def _server_extensions() -> list[str]:
    """The server extensions our data files (share/jupyter-server-config/) switch on."""
    out = []
    for path in sorted((REPO / "share/jupyter-server-config").glob("*.json")):
        enabled = json.loads(path.read_text())["ServerApp"]["jpserver_extensions"]
        out += [m for m, on in enabled.items() if on]
    return out


def _enabled_server_extensions() -> set[str]:
    return {m.split(".")[0] for m in _server_extensions()}


def _notebook_imports() -> set[str]:
    """Top-level modules the workflow notebooks import (code cells; magics dropped)."""
    names: set[str] = set()
    for path in sorted((REPO / "workflow_notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            lines = "".join(cell["source"]).splitlines()
            code = "\n".join(x for x in lines if not x.lstrip().startswith(("%", "!")))
            for node in ast.walk(ast.parse(code, str(path))):
                if isinstance(node, ast.Import):
                    names |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "cscale_extensions"}


def _z2jh_hub_imports() -> set[str]:
    """Top-level modules z2jh's own hub configuration files import (the vendored chart)."""
    with tarfile.open(REPO / "helm/cscale-hub/charts/jupyterhub-4.4.0.tgz") as tar:
        files = [m for m in tar.getmembers() if re.fullmatch(r"jupyterhub/files/hub/\w+\.py", m.name)]
        codes = [tar.extractfile(m).read().decode() for m in files]
    assert len(codes) >= 2, "z2jh's jupyterhub_config.py and z2jh.py"
    names: set[str] = set()
    for code in codes:
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "z2jh"}


#: what a process imports besides our code's imports, and why
RUNS_ALSO: dict[str, dict[str, str]] = {
    "hub": {
        **{m: "z2jh's jupyterhub_config.py / z2jh.py" for m in _z2jh_hub_imports()},
        "kubespawner": "z2jh's jupyterhub_config.py (the spawner class it configures)",
        "pycurl": "z2jh's jupyterhub_config.py (tornado's curl HTTP client)",
        "jupyterhub_idle_culler": "z2jh's culler service, in the hub container",
    },
    "dask-gateway": {
        "dask_gateway_server": "the dask-gateway-server command",
        "kubernetes_asyncio": "the chart's controller pod (same image)",
    },
    "dask scheduler/worker": {"distributed": "dask scheduler / dask worker",
                              "bokeh": "the scheduler's dashboard"},
    "user server": {
        "jupyterhub": "jupyterhub-singleuser",
        "jupyterlab": "the image's JupyterLab",
        "ipykernel": "the notebooks' kernel",
        "dask_labextension": "JupyterLab extension (docs/environment.md)",
        "jupyter_resource_usage": "JupyterLab extension",
        "jupyterlab_git": "JupyterLab extension",
        "ipywidgets": "JupyterLab extension",
        "nbgitpuller": "JupyterLab extension",
        **{m: "share/jupyter-server-config" for m in _enabled_server_extensions() - {"cscale_extensions"}},
    },
    "kernel": {m: "workflow_notebooks/" for m in _notebook_imports()},
}


def _dropped_by_overrides() -> set[str]:
    """Requirements requirements-overrides.txt removes (a marker that never holds)."""
    out = set()
    for line in (REPO / "requirements-overrides.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate():
                out.add(canonicalize_name(req.name))
    return out


DROPPED = _dropped_by_overrides()


def _marker_ok(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": e}) for e in extras | {""})


@cache
def _requires(name: str) -> tuple[Requirement, ...]:
    return tuple(Requirement(r) for r in (md.distribution(name).requires or []))


def closure(extras: list[str]) -> set[str]:
    """Distributions (canonical names) that installing ``cscale-hub[extras]`` brings, from
    pyproject.toml for our own extras (self-references expanded) and the installed
    distributions' metadata for everything below."""
    optional = PROJECT["optional-dependencies"]
    todo = [Requirement(r) for r in PROJECT["dependencies"]]
    ours, pending = set(), list(extras)
    while pending:
        extra = pending.pop()
        if extra in ours:
            continue
        ours.add(extra)
        for r in map(Requirement, optional[extra]):
            if canonicalize_name(r.name) == SELF:
                pending.extend(r.extras)
            else:
                todo.append(r)
    seen: dict[str, set[str]] = {}
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in DROPPED or (name in seen and req.extras <= seen[name]):
            continue
        seen.setdefault(name, set()).update(req.extras)
        for sub in _requires(name):
            if _marker_ok(sub, seen[name]):
                todo.append(sub)
    return set(seen)


@cache
def _providers() -> dict[str, list[str]]:
    return md.packages_distributions()


def needs(process: str) -> dict[str, str]:
    """Third-party top-level module -> why the process imports it."""
    out = {n: f"imported by {m}" for n, m in third_party_loaded_by(PROCESSES[process]).items()}
    if process == "user server":  # the server extensions our data files enable
        entry = [m.removeprefix("cscale_extensions.") for m in _server_extensions()]
        out.update({n: f"imported by {m}" for n, m in third_party_loaded_by(entry).items()})
    out.update(RUNS_ALSO.get(process, {}))
    return out


def missing(process: str, extras: list[str]) -> dict[str, str]:
    have = closure(extras)
    out = {}
    for module, why in sorted(needs(process).items()):
        dists = {canonicalize_name(d) for d in _providers().get(module, [])}
        if not dists & have:
            out[module] = f"{why}; from {sorted(dists) or 'no installed distribution'}"
    return out


def test_every_process_has_an_extra_and_an_image():
    assert set(PROCESS) == set(PROCESSES)
    optional = PROJECT["optional-dependencies"]
    for extra, _ in PROCESS.values():
        assert extra in optional
    for image, extras in IMAGES.items():
        assert (REPO / "images" / image / "Dockerfile").exists()
        for process, (extra, in_image) in PROCESS.items():
            if in_image == image:
                assert extra in closure_extras(extras), (process, image)


def closure_extras(extras: list[str]) -> set[str]:
    """Our extras that ``extras`` include, self-references expanded."""
    optional = PROJECT["optional-dependencies"]
    out, todo = set(), list(extras)
    while todo:
        e = todo.pop()
        if e not in out:
            out.add(e)
            for r in map(Requirement, optional[e]):
                if canonicalize_name(r.name) == SELF:
                    todo.extend(r.extras)
    return out


@pytest.mark.parametrize("process", sorted(PROCESS))
def test_the_extra_of_each_process_covers_what_it_imports(process):
    extra, _ = PROCESS[process]
    assert len(needs(process)) > 2, "the closure sees the process's code"
    gaps = missing(process, [extra])
    assert not gaps, f"{process}: the `{extra}` extra lacks {json.dumps(gaps, indent=1)}"


def test_the_check_can_fail():
    """The gateway's extra lacks what the hub and the kernels import: the check sees gaps."""
    assert {"jupyterhub", "oauthenticator"} <= set(missing("hub", ["gateway"]))
    assert {"xarray", "odc"} <= set(missing("kernel", ["gateway"]))


PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)", re.M)


def pins(path: Path) -> dict[str, str]:
    return {canonicalize_name(m[1]): m[3] for m in PIN.finditer(path.read_text())}


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_each_image_lock_is_its_extras_at_the_runtime_pins(image):
    lock = REPO / "images" / image / "requirements.lock"
    header = lock.read_text().splitlines()[1]
    flags = re.findall(r"--extra (\S+)", header)
    assert flags == IMAGES[image], f"{lock}: compiled for {flags} (run make lock)"
    assert "--constraints requirements.lock" in header
    locked = pins(lock)
    runtime = pins(REPO / "requirements.lock")
    differ = {n: (v, runtime.get(n)) for n, v in locked.items() if runtime.get(n) != v}
    assert not differ, f"{image}: pins differ from requirements.lock: {differ}"
    need = closure(IMAGES[image]) - {SELF}
    assert need <= set(locked), f"{image}: not in its lock: {sorted(need - set(locked))}"
    assert len(locked) < len(runtime), f"{image}: its lock is the whole runtime"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_the_test_extra_is_in_no_image(image):
    runtime = {canonicalize_name(Requirement(r).name) for e, reqs in
               PROJECT["optional-dependencies"].items() if e != "test" for r in reqs}
    test_only = {canonicalize_name(Requirement(r).name)
                 for r in PROJECT["optional-dependencies"]["test"]} - runtime
    locked = pins(REPO / "images" / image / "requirements.lock")
    assert not test_only & set(locked), f"{image}: test tooling {sorted(test_only & set(locked))}"
    dockerfile = (REPO / "images" / image / "Dockerfile").read_text()
    assert "requirements-test.lock" not in dockerfile and "[test" not in dockerfile
    installs = re.findall(r"^COPY (\S*requirements\S*\.lock) ", dockerfile, re.M)
    assert installs == [f"images/{image}/requirements.lock"], installs
