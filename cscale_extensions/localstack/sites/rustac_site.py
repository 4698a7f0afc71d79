"""A site served by ``rustac serve`` (in-memory backend), fed with files written at start."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from cscale_extensions.localstack.sites.documents import site_documents
from cscale_extensions.localstack.sites.layout import SiteDef
from cscale_extensions.localstack.supervisor import ProcessSpec


def rustac_binary() -> str:
    """The ``rustac`` CLI of this environment (next to the interpreter, else on PATH)."""
    beside = Path(sys.executable).parent / "rustac"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("rustac")
    if not found:
        raise FileNotFoundError("the rustac CLI is not installed (pip package `rustac`)")
    return found


def write_site_files(site: SiteDef, site_dir: Path, eodata: Path, asset_base: str) -> list[Path]:
    """Write the site's collections and items (an ItemCollection); return the files, in load order."""
    collections, items = site_documents(site, eodata, asset_base)
    site_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(site_dir, 0o755)
    paths = []
    for coll in collections:
        path = site_dir / f"collection-{coll['id']}.json"
        path.write_text(json.dumps(coll))
        paths.append(path)
    path = site_dir / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    paths.append(path)
    for p in paths:
        os.chmod(p, 0o644)
    return paths


def rustac_spec(
    site: SiteDef, port: int, site_dir: Path, eodata: Path, asset_base: str
) -> ProcessSpec:
    """ProcessSpec of one rustac site on 127.0.0.1:``port``; its files are written by ``prestart``."""
    argv = [rustac_binary(), "serve", "--addr", f"127.0.0.1:{port}"]
    spec = ProcessSpec(
        name=f"site-{site.name}",
        argv=argv,
        cwd=str(site_dir.parent),
        ready_url=f"http://127.0.0.1:{port}/",
        ready_timeout=30,
    )

    def prestart() -> None:
        # the documents carry this run's asset URL, so they are written at each start
        spec.argv = argv + [str(f) for f in write_site_files(site, site_dir, eodata, asset_base)]

    spec.prestart = prestart
    return spec
