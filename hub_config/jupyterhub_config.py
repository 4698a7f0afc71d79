"""JupyterHub configuration of C-SCALE Hub on the local stack (``jupyterhub -f`` this file).

The Helm chart makes the same call from its ``hub.extraConfig``, after z2jh's configuration:
cscale_extensions.hub.configure_from_environment() loads the platform settings (defaults from
cscale_extensions/config/sections/*.yaml, then the YAML named by $CSCALE_HUB_CONFIG, written by
`cscale-hub up`, validated) and applies them. Secrets come from the environment.
"""

from cscale_extensions.hub import configure_from_environment

configure_from_environment(get_config())  # noqa: F821 (provided by JupyterHub)
