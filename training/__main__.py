"""Entry point: ``python -m training COMMAND ...``."""

import sys

from training.cli import main

sys.exit(main())
