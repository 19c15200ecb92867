"""`python -m ablation ...`: the same as the `ablation` command."""

import sys

from ablation.cli import main

sys.exit(main())
