"""Training workshops: cohorts of accounts, shared materials, pre-warming, capacity, export.

Command line: ``cscale-hub workshop …`` (:func:`add_workshop_parser`); hub side:
:func:`cscale_extensions.workshop.hub.configure_workshops`. See docs/workshops.md.
"""

from .cli import add_workshop_parser

__all__ = ["add_workshop_parser"]
