"""``python -m cscale_extensions.eomqs``: EO-MQS (settings from --config or $CSCALE_HUB_CONFIG)."""

import sys

from .service import main

sys.exit(main())
