"""``python -m cscale_extensions.localstack.eodata prepare [--data-dir D] [--force]``."""

import sys

from cscale_extensions.cli.data import main

sys.exit(main())
