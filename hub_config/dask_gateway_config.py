"""dask-gateway-server configuration of C-SCALE Hub on the local stack (``-f`` this file).

The Helm chart makes the same call from its ``gateway.extraConfig``:
cscale_extensions.gateway.configure_from_environment() loads the platform settings named by
$CSCALE_HUB_CONFIG and applies them: JupyterHub authentication, options and limits by VO, idle
timeout, and the backend (local processes here, Kubernetes in the chart).
"""

from cscale_extensions.gateway import configure_from_environment

configure_from_environment(get_config())  # noqa: F821 (provided by dask-gateway-server)
