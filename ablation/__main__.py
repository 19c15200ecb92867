"""`python -m ablation ...`: the same as the `ablation` command."""

import sys

from .cli import main

sys.exit(main())
