"""Static checks of images/*/Dockerfile (docker cannot run here).

Proves: pinned base tags that match the chart's dependency versions, a non-root final USER,
the single-user image installing requirements.lock then our package with --no-deps, the
notebooks where the spawner looks, and the command / uid the chart configures. Does NOT prove
that the images build or run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cscale_extensions import config as settings

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
CHART = REPO / "helm" / "cscale-hub"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
    return out


def test_three_images():
    assert {p.parent.name for p in DOCKERFILES} == {"singleuser", "hub", "gateway"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_base_image_pinned_by_tag(path):
    froms = [arg for ins, arg in instructions(path) if ins == "FROM"]
    assert froms
    for ref in froms:
        image = ref.split()[0]
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"{image}: no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{image}: tag must be a version"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_final_user_is_not_root(path):
    users = [arg for ins, arg in instructions(path) if ins == "USER"]
    assert users, "no USER instruction: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_installs_our_package_without_deps(path):
    runs = " ; ".join(arg for ins, arg in instructions(path) if ins == "RUN")
    assert re.search(r"pip install [^;]*--no-deps", runs)
    copies = [arg for ins, arg in instructions(path) if ins == "COPY"]
    assert any("requirements.lock" in c for c in copies)
    assert any(c.split()[-2].endswith("cscale_extensions") for c in copies)


def test_subchart_bases_match_chart_dependencies():
    deps = {
        d["name"]: d["version"]
        for d in yaml.safe_load((CHART / "Chart.yaml").read_text())["dependencies"]
    }
    hub_from = next(a for i, a in instructions(IMAGES / "hub" / "Dockerfile") if i == "FROM")
    gw_from = next(a for i, a in instructions(IMAGES / "gateway" / "Dockerfile") if i == "FROM")
    assert hub_from == f"quay.io/jupyterhub/k8s-hub:{deps['jupyterhub']}"
    assert gw_from == f"ghcr.io/dask/dask-gateway-server:{deps['dask-gateway']}"


def test_singleuser_is_the_locked_environment_with_notebooks():
    ins = instructions(IMAGES / "singleuser" / "Dockerfile")
    runs = [a for i, a in ins if i == "RUN"]
    lock = next(n for n, a in enumerate(runs) if "pip install --no-deps -r requirements.lock" in a)
    ours = next(n for n, a in enumerate(runs) if "pip install --no-deps ." in a)
    assert lock < ours, "the lock first, then our package on top without resolving"
    defaults = settings.defaults()["kubernetes"]
    copies = [a for i, a in ins if i == "COPY"]
    assert any(c.endswith(f"workflow_notebooks {defaults['notebooks_image_dir']}") for c in copies)
    # the server settings (activity extension, contents manager) are data files of the package
    assert "share ./share" in copies
    users = [a for i, a in ins if i == "USER"]
    assert users[-1] == str(defaults["uid"])
    assert any(f"--uid {defaults['uid']} --gid {defaults['fs_gid']}" in r for r in runs)
    cmd = [a for i, a in ins if i == "CMD"][-1]
    assert cmd == '["jupyterhub-singleuser"]'


def test_image_names_in_values_are_the_documented_ones():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (IMAGES / "README.md").read_text()
    names = {
        values["cscale"]["kubernetes"]["image"]["name"],
        values["jupyterhub"]["hub"]["image"]["name"],
        values["dask-gateway"]["gateway"]["image"]["name"],
    }
    for name in names:
        assert f"`{name}`" in readme
    for path in DOCKERFILES:
        assert any(n in path.read_text() for n in names), path


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_copied_sources_exist_and_pass_the_dockerignore(path):
    """Every COPY source exists in the repository (the build context) and is re-included by
    the Dockerfile's own .dockerignore (which starts by excluding everything)."""
    lines = (path.parent / "Dockerfile.dockerignore").read_text().splitlines()
    ignore = [x.strip() for x in lines if x.strip() and not x.startswith("#")]
    assert ignore[0] == "*", "the ignore file must exclude everything first"
    for ins, arg in instructions(path):
        if ins != "COPY":
            continue
        parts = [p for p in arg.split() if not p.startswith("--")]
        for src in parts[:-1]:
            if src.endswith("*"):  # optional file (README.md*)
                continue
            assert (REPO / src).exists(), (
                f"{path.parent.name}: COPY {src}: missing in the repository"
            )
            assert f"!{src}" in ignore or f"!{src}/" in ignore, (
                f"{src} excluded by the dockerignore"
            )
