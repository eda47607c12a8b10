"""python -m pacs.node: run the DICOM node."""

from __future__ import annotations

import sys

from pacs.node.cli import main

sys.exit(main())
