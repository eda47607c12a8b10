"""Commands of earlier releases that moved: each old name exits 2 with one line naming the new command."""

from __future__ import annotations

import sys


def exit_moved(old: str, new: str) -> None:
    """Tell the user the command `python -m old` is now `python -m new` (same arguments), and exit 2."""
    arguments = " ".join(sys.argv[1:])
    print(f"python -m {old} has moved: run python -m {new} {arguments}".rstrip(), file=sys.stderr)
    sys.exit(2)
