"""dask-gateway-server configuration of C-SCALE Hub (local stack and Helm chart alike).

Loads the platform settings named by $CSCALE_HUB_CONFIG and applies
cscale_extensions.gateway.configure(): JupyterHub authentication, options and limits by VO,
idle timeout, and the backend (local processes, or Kubernetes in the chart).
"""

from cscale_extensions import config as settings
from cscale_extensions.gateway import configure

c = get_config()  # noqa: F821 (provided by dask-gateway-server)
configure(c, settings.load_resolved())
