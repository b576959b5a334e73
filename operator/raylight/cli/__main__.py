"""`python -m raylight.cli`: the same as the `raylight` command."""

import sys

from raylight.cli import main

sys.exit(main())
