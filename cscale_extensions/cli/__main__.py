"""``python -m cscale_extensions.cli``: the ``cscale-hub`` command without its console script."""

import sys

from cscale_extensions.cli import main

sys.exit(main())
