"""C-SCALE Hub: JupyterHub extensions, services and the local-stack launcher."""

__version__ = "0.1.0"
