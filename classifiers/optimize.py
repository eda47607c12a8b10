"""`python -m classifiers.optimize DIR [--int8] ...`: the repository optimizer (classifiers.repository.optimize)."""

from __future__ import annotations

import sys

from classifiers.repository.optimize import main

if __name__ == "__main__":
    sys.exit(main())
