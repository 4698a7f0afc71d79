"""Checks of images/*/Dockerfile without a container engine.

Proves: one base from images/bases.txt (tag, digest when resolved) for all three images, the
build script refusing an unpinned release, one recipe installing each image's own lock (its
extras: test_image_extras.py) and no test tooling, a non-root final USER, the notebooks where
the spawner looks, the command / uid the chart configures, and — by really building the
wheel — that the files the Dockerfile COPYs and its .dockerignore admits are enough for its ``pip install --no-deps .`` (the step that
failed with "can't copy 'share/...'"). Does NOT prove that the images build or run: the
container builds (buildah/podman from stand-in bases) are not done yet (docs/deploy.md).
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import zipfile
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


def test_base_image_from_bases_file_pinned():
    """Every image is FROM the build argument BASE_IMAGE (no default: a build without it
    fails), whose value is images/bases.txt: a version tag, and a well-formed digest when
    resolved (images/pin-bases.sh)."""
    for path in DOCKERFILES:
        ins = instructions(path)
        assert ins[0] == ("ARG", "BASE_IMAGE"), path
        assert [a for i, a in ins if i == "FROM"] == ["${BASE_IMAGE}"], path
    ref = base_image()
    name, _, digest = ref.partition("@")
    _, _, tag = name.rpartition(":")
    assert re.fullmatch(r"3\.11\.\d+-slim-bookworm", tag), f"{ref}: Python 3.11 / Debian 12 tag"
    assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), ref
    # the Python of the base is the one the lock is compiled for
    assert "python_version" not in (REPO / "requirements.lock").read_text()[:400]


def base_image() -> str:
    line = next(
        x for x in (IMAGES / "bases.txt").read_text().splitlines() if x.startswith("BASE_IMAGE=")
    )
    return line.removeprefix("BASE_IMAGE=")


def test_build_script_refuses_a_base_without_digest(tmp_path):
    """images/build.sh: no digest, no build (unless --unpinned); the build arguments name the
    base, each Dockerfile and the chart's appVersion as the tag (a recording stand-in tool)."""
    log = tmp_path / "calls"
    tool = tmp_path / "fakebuild"
    tool.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    tool.chmod(0o755)
    script = IMAGES / "build.sh"
    pinned = "@sha256:" in base_image()
    r = subprocess.run(
        ["bash", str(script), "--tool", str(tool)], capture_output=True, text=True, check=False
    )
    if not pinned:
        assert r.returncode == 1 and "no digest" in r.stderr
        assert not log.exists()
        r = subprocess.run(
            ["bash", str(script), "--tool", str(tool), "--unpinned"],
            capture_output=True,
            text=True,
            check=False,
        )
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert len(calls) == 3
    for call, image in zip(calls, ("singleuser", "hub", "gateway"), strict=True):
        assert f"--build-arg BASE_IMAGE={base_image()}" in call
        assert f"images/{image}/Dockerfile" in call and f":{version} " in call


def test_the_three_images_share_the_locked_environment():
    """One recipe for all: identical instructions up to our package but for the lock each
    copies, its own images/<image>/requirements.lock (the extras of its processes at the pins
    of requirements.lock: tests/helm/test_image_extras.py), so the hub, the gateway and the
    user servers run the versions the test suite runs."""
    prefixes = []
    for path in DOCKERFILES:
        ins = instructions(path)
        last = max(n for n, (i, a) in enumerate(ins) if i == "RUN" and "--no-deps ." in a)
        own = f"images/{path.parent.name}/requirements.lock ./"
        assert ("COPY", own) in ins[: last + 1], path
        prefixes.append([(i, "<lock> ./" if a == own else a) for i, a in ins[: last + 1]])
    assert prefixes[0] == prefixes[1] == prefixes[2]
    runs = [a for i, a in prefixes[0] if i == "RUN"]
    assert any(a == "pip install --no-deps -r requirements.lock" for a in runs)
    copies = [a for i, a in prefixes[0] if i == "COPY"]
    assert not any("requirements-test.lock" in c for c in copies), "test tooling in an image"


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
    built = (IMAGES / "build.sh").read_text()
    for name in names:
        registry, _, short = name.rpartition("/")
        assert re.search(rf":{short}[\s;]", built), f"images/build.sh does not build {name}"
        assert f"registry={registry}\n" in built


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


def dockerignore_admits(patterns: list[str], rel: str) -> bool:
    """Whether the build context holds ``rel`` (docker's rules: the last pattern matching the
    path or one of its parent directories decides; ``!`` re-includes; ``**/`` any depth)."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    admitted = True
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.removeprefix("!").rstrip("/")
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(seg, pat[3:]) for seg in parts)
        else:
            hit = any(fnmatch.fnmatchcase(pre, pat) for pre in prefixes)
        if hit:
            admitted = negate
    return admitted


def build_context(path: Path, dest: Path) -> Path:
    """Lay out the image's files as its COPY instructions would, from the repository as its
    .dockerignore filters it; return the directory its ``pip install --no-deps <dir>`` builds."""
    lines = (path.parent / "Dockerfile.dockerignore").read_text().splitlines()
    patterns = [x.strip() for x in lines if x.strip() and not x.startswith("#")]
    workdir, target = Path("/"), None
    for ins, arg in instructions(path):
        if ins == "WORKDIR":
            workdir = workdir / arg
        elif ins == "COPY":
            *srcs, to = [x for x in arg.split() if not x.startswith("--")]
            to_dir = workdir / to
            for src in srcs:
                base = REPO / src
                files = sorted(base.rglob("*")) if base.is_dir() else [base]
                for f in files:
                    rel = f.relative_to(REPO).as_posix()
                    if not f.is_file() or not dockerignore_admits(patterns, rel):
                        continue
                    if base.is_dir():  # a directory's contents go into the destination
                        out = to_dir / f.relative_to(base)
                    elif to.endswith("/") or len(srcs) > 1:
                        out = to_dir / f.name
                    else:
                        out = to_dir
                    out = dest / out.relative_to("/")
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, out)
        elif ins == "RUN":
            m = re.search(r"pip install --no-deps (\S+)", arg)
            if m and m.group(1) != "-r":
                target = dest / (workdir / m.group(1)).relative_to("/")
    assert target is not None, f"{path}: no pip install --no-deps <dir> of our package"
    return target


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_package_builds_from_the_copied_files(path, tmp_path):
    """Build our wheel (pip, build isolation, as the Dockerfile's RUN does) from exactly the
    files the Dockerfile copies and its .dockerignore admits, then install it --no-deps into a
    fresh venv: the data files (Jupyter Server settings, JupyterLab overrides) and the settings
    schemas must be there. Fails on the old hub/gateway Dockerfiles, which did not copy share/."""
    src = build_context(path, tmp_path / "ctx")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(tmp_path / "w"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, (
        f"{path.parent.name}: pip cannot build our package:\n{r.stderr[-2000:]}"
    )
    wheel = next((tmp_path / "w").glob("cscale_hub-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith("config/sections/kubernetes.yaml") for n in names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        timeout=120,
    )
    for conf in sorted((REPO / "share/jupyter-server-config").glob("*.json")):
        assert (venv / "etc/jupyter/jupyter_server_config.d" / conf.name).is_file(), conf.name
    assert (venv / "share/jupyter/lab/settings/overrides.json").is_file()
