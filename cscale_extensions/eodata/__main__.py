"""``python -m cscale_extensions.eodata prepare [--data-dir D] [--force]``."""

import sys

from .cli import main

sys.exit(main())
