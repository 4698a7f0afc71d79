"""What runs in a user's Jupyter server: server extensions, the contents manager, the user's
access token, and the init-container entry points that run as the user before it starts."""

#: where a user server serves its user's gateway dashboards (``<base URL>dask-gateway/clusters/…``,
#: :mod:`.gateway_dashboards`); the hub points ``DASK_GATEWAY__PUBLIC_ADDRESS`` there
GATEWAY_PROXY_PATH = "dask-gateway"
