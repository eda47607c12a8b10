"""A copy of a tiny repository whose experts have operating points (and, when asked, a calibration)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any


def triaged_copy(source: Path, target: Path, rule_out: float, rule_in: float,
                 calibration: dict[str, Any] | None = None) -> Path:
    """Copy `source` to `target` and give every expert these operating points (and calibration); return `target`."""
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    for entry in manifest["experts"].values():
        entry["operating_points"] = {"rule_out": {"threshold": rule_out, "target_sensitivity": 0.95},
                                     "rule_in": {"threshold": rule_in, "target_specificity": 0.95}}
        if calibration is not None:
            entry["calibration"] = dict(calibration)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return target
