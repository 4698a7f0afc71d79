"""Platform services that run as processes of their own next to the hub (JupyterHub services).

``eomqs``: the federated STAC API; ``runs``: headless parameterised notebook runs.
"""
