"""``python -m harness`` = the ``stbench`` command (for environments without the console script)."""

import sys

from .cli import stbench

sys.exit(stbench())
