"""``python -m deploy.demo`` (what ``make demo`` runs)."""

import sys

from deploy.demo.run import main

sys.exit(main())
