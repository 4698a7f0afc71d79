"""Training workshops: cohorts of accounts, shared materials, pre-warming, capacity, export.

Command line: ``cscale-hub workshop …`` (:mod:`cscale_extensions.cli.workshop`); hub side:
:func:`cscale_extensions.workshop.hub.configure_workshops`. See docs/workshops.md.
"""
