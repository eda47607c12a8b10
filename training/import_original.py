"""Write manifest.json for a folder of the original MURA project's `.json` + `.h5` model pairs.

Each file's role comes from its name: a name holding XR_ELBOW ... XR_WRIST belongs to that expert, the
remaining pair is the router. Usage: python -m training.import_original FOLDER [--preprocessing tf]
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from pathlib import Path

from classifiers.body_parts import BODY_PARTS, ROLES, ROUTER
from classifiers.errors import ModelRepositoryError
from classifiers.preprocessing import PREPROCESSING_MODES
from classifiers.repository.entries import DEFAULT_THRESHOLD, Manifest
from classifiers.repository.manifest import MANIFEST_NAME, make_model_entry, read_manifest, write_manifest

# The original models were MobileNets: inputs scaled to [-1, 1] ("tf" mode) at 224x224.
ORIGINAL_PREPROCESSING = "tf"
ORIGINAL_INPUT_SIZE = (224, 224)


def role_of_file(file_name: str) -> str:
    """Return the body part named in a file name (XR_ELBOW ...), or "router" when it names none.

    A part name counts when what follows it is not a letter, or is a lower-case word after the
    capitals (`XR_SHOULDERfinal2`); a part glued to more letters of its case (`XR_HANDS`,
    `XR_HANDFINAL`) is refused as ambiguous rather than read as that part or as the router.

    Raises:
        ModelRepositoryError: the name holds two parts, or a part glued to more capitals.
    """
    found: set[str] = set()
    glued: list[tuple[str, str]] = []  # (part as written, the letters glued to it)
    for part in BODY_PARTS:
        for match in re.finditer(re.escape(part), file_name, flags=re.IGNORECASE):
            following = file_name[match.end():match.end() + 1]
            if not following.isalpha() or (match.group().isupper() and following.islower()):
                found.add(part)
            else:
                glued.append((match.group(), re.match(r"[A-Za-z]*", file_name[match.end():]).group()))
    if len(found) > 1:
        raise ModelRepositoryError(
            f"{file_name!r} names several body parts ({', '.join(sorted(found))}); rename it to name one")
    if glued and not found:
        part, letters = glued[0]
        raise ModelRepositoryError(
            f"{file_name!r}: cannot tell whether {part + letters!r} names a body part; rename the file with a"
            f" separator after the part ({part}_{letters}) if it is that expert, or without the part name if it"
            " is the router")
    return found.pop() if found else ROUTER


def pair_files(folder: Path) -> dict[str, dict[str, str]]:
    """Group the folder's `.json` and `.h5` files by role; each role needs exactly one of each."""
    grouped: dict[str, dict[str, list[str]]] = {}
    for path in sorted(folder.iterdir()):
        kind = {".json": "architecture", ".h5": "weights"}.get(path.suffix.lower())
        if kind is None or path.name == MANIFEST_NAME:
            continue
        grouped.setdefault(role_of_file(path.name), {"architecture": [], "weights": []})[kind].append(path.name)
    pairs, problems = {}, []
    for role in ROLES:
        files = grouped.get(role, {"architecture": [], "weights": []})
        if len(files["architecture"]) == 1 and len(files["weights"]) == 1:
            pairs[role] = {"architecture": files["architecture"][0], "weights": files["weights"][0]}
        else:
            problems.append(_pairing_problem(role, files))
    if problems:
        # Files a role has too many or too few of come first: they usually explain the missing roles.
        problems.sort(key=lambda problem: problem.startswith("no "))
        raise ModelRepositoryError(f"{folder}: " + "; ".join(problems))
    return pairs


def _pairing_problem(role: str, files: dict[str, list[str]]) -> str:
    """Say which files a role got and how to rename them so that it gets one .json and one .h5."""
    found = [*files["architecture"], *files["weights"]]
    if not found and role == ROUTER:
        return f"no .json + .h5 pair found for {role} (the router's files must name no body part)"
    if not found:
        return (f"no .json + .h5 pair found for {role} (its files must name the body part, e.g."
                f" model_architecture{role}_final.json + modelMN{role}_final.h5)")
    listing = ", ".join(repr(name) for name in found)
    hint = ("rename the expert files so that each names its body part (XR_ELBOW ... XR_WRIST) and move any"
            " other .json/.h5 out") if role == ROUTER else "move the extra or unpaired files out of the folder"
    return f"the {role} needs exactly one .json and one .h5 but has {listing}: {hint}"


def build_legacy_manifest(folder: Path, preprocessing: str = ORIGINAL_PREPROCESSING,
                          threshold: float = DEFAULT_THRESHOLD) -> Manifest:
    """Build the manifest for the original project's folder, reading each model's output layout."""
    from classifiers.backends.keras_files import load_architecture_and_weights, model_input_shape

    provenance = {
        "data": "MURA (imported from the original project's model folder)",
        "imported_at": datetime.date.today().isoformat(),
    }
    entries = {}
    for role, files in pair_files(folder).items():
        try:
            model = load_architecture_and_weights(folder / files["architecture"], folder / files["weights"])
        except Exception as error:  # Keras raises many unrelated types for a bad file.
            raise ModelRepositoryError(
                f"{folder / files['weights']}: cannot load the {role} model ({type(error).__name__}); check the pair"
            ) from None
        height, width, _ = model_input_shape(model)
        input_size = (height, width) if height and width else ORIGINAL_INPUT_SIZE
        units = int(model.outputs[0].shape[-1])
        if role == ROUTER:
            classes, role_threshold = list(BODY_PARTS), None
        else:
            classes, role_threshold = (["abnormal"] if units == 1 else ["negative", "positive"]), threshold
        entries[role] = make_model_entry(folder, role, files, classes, input_size, preprocessing,
                                         threshold=role_threshold, provenance=provenance)
    return Manifest(router=entries.pop(ROUTER), experts=entries)


def main(argv: list[str] | None = None) -> int:
    """Command line: write FOLDER/manifest.json and check that the repository loads."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder holding the original .json + .h5 files")
    parser.add_argument("--preprocessing", default=ORIGINAL_PREPROCESSING, choices=sorted(PREPROCESSING_MODES))
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="experts' decision threshold")
    parser.add_argument("--force", action="store_true", help="overwrite an existing manifest.json")
    args = parser.parse_args(argv)
    try:
        if not args.folder.is_dir():
            raise ModelRepositoryError(f"{args.folder}: folder not found")
        if (args.folder / MANIFEST_NAME).exists() and not args.force:
            raise ModelRepositoryError(f"{args.folder / MANIFEST_NAME} exists; pass --force to overwrite it")
        manifest = build_legacy_manifest(args.folder, args.preprocessing, args.threshold)
        write_manifest(args.folder, manifest)
        read_manifest(args.folder)
    except ModelRepositoryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for role, entry in manifest.entries().items():
        print(f"{role:12s} {entry.files['architecture']!r} + {entry.files['weights']!r} -> {list(entry.classes)}")
    print(f"wrote {args.folder / MANIFEST_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
