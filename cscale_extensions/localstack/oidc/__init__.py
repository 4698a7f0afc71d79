"""The embedded OpenID Connect provider of the local stack (a stand-in for EGI Check-in).

``provider.mjs`` (node, ``oidc-provider``) serves the protocol and its own login page;
``accounts`` manages its accounts file; ``embedded`` turns the settings into a process spec;
``cli`` adds ``cscale-hub accounts``.
"""
