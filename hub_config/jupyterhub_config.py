"""JupyterHub configuration of C-SCALE Hub: the same file for the local stack and the Helm chart.

Load order: defaults from cscale_extensions/config/sections/*.yaml, then the platform YAML
named by $CSCALE_HUB_CONFIG (written by `cscale-hub up`, or mounted by the chart), validated;
then cscale_extensions.hub.configure() applies it. Secrets come from the environment.
"""

from cscale_extensions import config as settings
from cscale_extensions.hub import configure

c = get_config()  # noqa: F821 (provided by JupyterHub)
configure(c, settings.load_resolved())
