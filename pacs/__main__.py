"""`python -m pacs`: see pacs.cli."""

from __future__ import annotations

import sys

from pacs.cli import main

sys.exit(main())
