"""openEO on the platform: process graphs run locally (openeo.local / openeo-processes-dask) on
data found through EO-MQS, on the user's Dask cluster when one is running.

    from cscale_extensions.notebook.openeo_local import connect, federated_source, run

    con = connect()
    src = federated_source("landsat-5-tm-sr", bbox=[...], time_range="2008-01-01/2011-12-31")
    cube = src.load(con, bands=["red", "nir08"])
    series = run(cube.ndvi(nir="nir08", red="red").reduce_spatial("mean"))
"""

from cscale_extensions.notebook.openeo_local.execute import (
    UnsupportedProcessError,
    available_processes,
    run,
    used_processes,
)
from cscale_extensions.notebook.openeo_local.source import (
    FederatedSource,
    connect,
    federated_source,
)

__all__ = [
    "FederatedSource",
    "UnsupportedProcessError",
    "available_processes",
    "connect",
    "federated_source",
    "run",
    "used_processes",
]
