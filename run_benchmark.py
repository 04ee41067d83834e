#!/usr/bin/env python
"""Run the stbench benchmark: ``python run_benchmark.py --help``."""

import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main())
