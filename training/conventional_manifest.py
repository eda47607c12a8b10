"""Write manifest.json for a folder that has none but uses the conventional names, before a tool rewrites it.

Without a manifest, `body_part.json` (or `router.json`) and `XR_<PART>.json`, each with `.weights.h5` or
`.h5` weights (or full-model `.h5` files), load with defaults (classifiers.repository.manifest). The offline
tools (`python -m training.optimize`, `python -m training.export_onnx`) record every file they write with its
sha256, so they first make that implicit manifest explicit: each entry completed from its model (input size,
expert classes), every file's sha256, the defaults recorded (`tf` preprocessing) and thresholds left unset (the
default 0.5, said so at load) until chosen on validation data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from classifiers.backends.keras_files import load_model
from classifiers.repository.entries import ModelEntry, sha256_file
from classifiers.repository.manifest import MANIFEST_NAME, read_manifest, write_manifest

WRITTEN_FROM_NAMES = "unknown: manifest.json written from the conventional file names (no manifest before)"


def ensure_manifest(folder: Path, log: Callable[[str], None] = print) -> bool:
    """Write FOLDER/manifest.json from the conventional names when it has none; True when written.

    Every model is loaded first, so a file that does not load stops the tool before it writes anything.

    Raises:
        ModelRepositoryError: the folder lacks a conventional file, or a model does not load.
    """
    if (folder / MANIFEST_NAME).exists():
        return False
    manifest = read_manifest(folder)  # the conventional manifest; names a missing file
    for entry in manifest.entries().values():
        _, completed = load_model(folder, entry)
        manifest = manifest.with_entry(_recorded(folder, completed))
    write_manifest(folder, manifest)
    read_manifest(folder)
    log(f"wrote {folder / MANIFEST_NAME} from the conventional names, with checksums: preprocessing"
        f" {manifest.router.preprocessing!r} and thresholds 0.5 are defaults; set them to your models' own")
    return True


def _recorded(folder: Path, entry: ModelEntry) -> ModelEntry:
    """The completed conventional entry as manifest.json records it: sha256 of its files, no longer a stand-in."""
    return dataclasses.replace(
        entry, conventional=False, threshold=None,
        sha256={name: sha256_file(folder / name) for name in entry.files.values()},
        provenance={**entry.provenance, "data": WRITTEN_FROM_NAMES})

