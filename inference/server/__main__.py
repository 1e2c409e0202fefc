"""`python -m inference.server`: same as `dsdeploy serve`."""

import sys

from .command import main

sys.exit(main())
