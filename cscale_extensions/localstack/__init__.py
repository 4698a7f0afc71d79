"""The local stack: the whole platform on one machine (``cscale-hub up``).

Only the launcher's process and the command line load this package: it starts the processes
(hub, proxy, embedded identity provider, STAC sites, Slurm) that Kubernetes or a C-SCALE site
provides in production. The hub, the gateway, the services and user servers never import it
(an import-contract test holds that).
"""
