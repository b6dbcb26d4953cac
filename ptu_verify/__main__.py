"""Allow ``python -m ptu_verify``."""

import sys

from .cli import main

sys.exit(main())
