"""Entry point: ``python -m training COMMAND ...``."""

import sys

from training.cli.main import main

sys.exit(main())
