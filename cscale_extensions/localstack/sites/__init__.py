"""The embedded federation of the local stack: sample STAC sites over the sample data.

:func:`embedded_federation` returns the processes to run (asset server, PostgreSQL, the
pgstac site, the rustac sites; in start order) and the site entries for
``federation.sites``. The split of the data over the sites is in :mod:`.layout`.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from cscale_extensions.localstack.eodata import check_prepared, eodata_dir, prepare
from cscale_extensions.localstack.sites.layout import SITES, SiteDef
from cscale_extensions.localstack.sites.pgstac_site import PgCluster, SiteSetupError, api_spec
from cscale_extensions.localstack.sites.rustac_site import rustac_spec
from cscale_extensions.localstack.supervisor import ProcessSpec
from cscale_extensions.net import free_port

__all__ = ["SITES", "SiteDef", "SiteSetupError", "asset_server_spec", "embedded_federation"]

log = logging.getLogger("cscale.sites")


def asset_server_spec(eodata: Path, port: int) -> ProcessSpec:
    """The loopback HTTP server (with Range requests) of the asset files under ``eodata``."""
    return ProcessSpec(
        name="site-assets",
        argv=[
            sys.executable,
            "-m",
            "cscale_extensions.localstack.sites.assets",
            "--root",
            str(eodata),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],  # fmt: skip
        cwd="/",
        ready_url=f"http://127.0.0.1:{port}/manifest.json",
        ready_timeout=30,
    )


def embedded_federation(cfg: dict, data_dir: Path) -> tuple[list[ProcessSpec], list[dict]]:
    """ProcessSpecs (in start order) and ``federation.sites`` entries of the sample sites.

    Prepares the sample data first if ``<data_dir>/eodata`` is not complete. Ports are
    free ports picked now; each site's data (with this run's asset URL) is (re)loaded by
    the ``prestart`` of its process. ``cfg`` is the whole configuration (``federation``
    section read with defaults).
    """
    data_dir = Path(data_dir).resolve()
    if check_prepared(data_dir) is not None:
        prepare(data_dir)
    eodata = eodata_dir(data_dir)
    sites_dir = data_dir / "sites"
    sites_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(sites_dir, 0o755)
    timeout = float(((cfg.get("federation") or {}).get("embedded") or {}).get("timeout", 10))

    taken: set[int] = set()

    def port() -> int:
        while (p := free_port()) in taken:
            pass
        taken.add(p)
        return p

    asset_port = port()
    asset_base = f"http://127.0.0.1:{asset_port}"
    # the sites need nothing of each other (nor of the asset server: its URL is known now)
    # and start together; a pgstac site's prestart loads its data into its PostgreSQL
    specs = [asset_server_spec(eodata, asset_port)]
    entries = []
    for site in SITES:
        site_port = port()
        site_dir = sites_dir / site.name
        if site.kind == "pgstac":
            cluster = PgCluster(sites_dir, port())
            pg = cluster.postgres_spec()
            specs.append(pg)
            specs.append(api_spec(cluster, site, site_port, site_dir, eodata, asset_base))
            specs[-1].needs = (pg.name,)
        else:
            specs.append(rustac_spec(site, site_port, site_dir, eodata, asset_base))
        entries.append(
            {
                "name": site.name,
                "title": site.title,
                "url": f"http://127.0.0.1:{site_port}/",
                "timeout": timeout,
            }
        )
    for spec in specs:
        if spec.needs is None:
            spec.needs = ()
    return specs, entries
