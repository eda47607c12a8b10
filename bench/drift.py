"""What the drift monitor reads on held-out studies sent through the service, as they are and with another exposure.

    python -m bench.drift --models REPOSITORY --data FOLDER [--gamma 0.7] [--window 200] [--min-studies 100]

REPOSITORY must hold a drift reference (python -m training.drift_reference). FOLDER's studies (MURA layout, a
seed the reference was not computed on) are posted to the app's /predict twice: as they are, then with every
view's brightness raised to `--gamma` (below 1: overexposed). After each pass prints each body part's window,
status, PSI per signal and gate rate from /models; the monitor's warnings go to the log as usual.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from classifiers import ClassifierError, ImageLimits
from classifiers.decoding import load_view_file
from mura.studies import Study, find_studies


def view_png(path: Path, gamma: float) -> bytes:
    """The file's 8-bit view, its brightness raised to `gamma`, as PNG."""
    (view,) = load_view_file(path, ImageLimits())[:1]
    brightness = np.asarray(view.image.convert("L"), dtype=np.float64) / 255.0
    buffer = io.BytesIO()
    Image.fromarray(np.round(brightness ** gamma * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def send_studies(client, studies: Sequence[Study], gamma: float) -> None:
    """POST every study (one multipart part per view) and require 200."""
    for study in studies:
        views = [(io.BytesIO(view_png(path, gamma)), path.name) for path in study.image_paths]
        answer = client.post("/predict", data={"image": views}, content_type="multipart/form-data")
        if answer.status_code != 200:
            raise RuntimeError(f"{study.study_id}: /predict answered {answer.status_code}: {answer.get_json()}")


def print_drift(client, label: str) -> None:
    """Each body part's line of the /models drift block."""
    drift = client.get("/models").get_json()["drift"]
    print(f"{label}:")
    for part, figures in drift["body_parts"].items():
        psi = ", ".join(f"{signal} {value:.3f}" for signal, value in figures["psi"].items())
        print(f"  {part:12s} {figures['studies']:4d} studies  {figures['status']:10s} {psi}"
              f"  gate rate {figures['out_of_distribution_rate']}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: both passes through one app; exit 2 with one line on an error."""
    parser = argparse.ArgumentParser(prog="python -m bench.drift", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("h5"), help="repository with a drift reference")
    parser.add_argument("--data", type=Path, required=True, help="held-out MURA-layout studies")
    parser.add_argument("--gamma", type=float, default=0.7, help="exposure of the second pass (default 0.7)")
    parser.add_argument("--window", type=int, default=200, help="DRIFT_WINDOW (default 200)")
    parser.add_argument("--min-studies", type=int, default=100, help="DRIFT_MIN_STUDIES (default 100)")
    args = parser.parse_args(argv)
    from app import create_app

    try:
        studies = find_studies(args.data)
        app = create_app({"MODELS_DIR": str(args.models), "AUDIT_LOG": "", "DRIFT_WINDOW": args.window,
                          "DRIFT_MIN_STUDIES": args.min_studies})
    except (ClassifierError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    client = app.test_client()
    try:
        for label, gamma in (("as they are", 1.0), (f"overexposed (gamma {args.gamma})", args.gamma)):
            started = time.perf_counter()
            send_studies(client, studies, gamma)
            print_drift(client, f"{len(studies)} studies {label}, {time.perf_counter() - started:.0f} s")
    finally:
        app.extensions["pipeline_loader"].close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
