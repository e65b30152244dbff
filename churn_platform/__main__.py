"""``python -m churn_platform run``: see ``churn_platform.cli``."""

import sys

from churn_platform.cli import main

sys.exit(main())
