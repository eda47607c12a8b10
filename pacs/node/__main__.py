"""python -m pacs.node: run the DICOM node."""

import sys

from pacs.node.cli import main

sys.exit(main())
