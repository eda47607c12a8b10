"""`python -m classifiers.optimize DIR [--int8] ...`: the repository optimizer (training.optimize)."""

from __future__ import annotations

import sys

from training.optimize import main

if __name__ == "__main__":
    sys.exit(main())
