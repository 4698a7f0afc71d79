"""How the hub starts a user server: ``python -P -m cscale_extensions.singleuser.launch
jupyterhub-singleuser [args…]``.

The same console script as JupyterHub's own ``jupyterhub-singleuser``, started with two start
costs taken off (issue #25): jsonschema's IRI checker built at its first use instead of at
import (:mod:`cscale_extensions.fastimport`), and no node process for the questions JupyterLab
and jupyter-lsp ask at every start (:mod:`cscale_extensions.singleuser.nodefree`). Any other
Jupyter server console script (``jupyter-server``) can be started the same way.
"""

from __future__ import annotations

import sys

from cscale_extensions import fastimport
from cscale_extensions.singleuser import nodefree


def main(argv: list[str] | None = None) -> int:
    nodefree.install()
    return fastimport.main(argv)


if __name__ == "__main__":
    sys.exit(main())
