"""``python -m cscale_extensions.services.eomqs``: EO-MQS (settings from --config or $CSCALE_HUB_CONFIG)."""

import sys

from cscale_extensions.services.eomqs.service import main

sys.exit(main())
