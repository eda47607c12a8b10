"""How well the out-of-domain gate separates radiographs from other images, per category.

    python -m bench.gate [--models h5] [--studies 140] [--seed 2026]

Held-out synthetic radiograph views (a seed no model or gate was fitted on) against non-radiographs from
installed packages (scikit-image's bundled `skimage.data` images; pydicom's bundled CT and MR files;
pydicom-data's chest and extremity CR) and images drawn here (documents, screenshots, charts, noise,
blank, inverted radiographs). Prints the flagged share per category; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from classifiers import ImageLimits, Pipeline, PipelineSettings
from classifiers.decoding import load_view_file
from classifiers.decoding.imaging import resize_image
from classifiers.gate import flag_views
from mura.studies import find_studies
from training.synthetic import generate_dataset

COLOUR_PHOTOS = ("astronaut", "cat", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                 "colorwheel", "logo")
GRAY_PHOTOS = ("camera", "moon", "coins", "clock", "brick", "grass", "gravel", "horse", "microaneurysms")
DOCUMENTS = ("page", "text", "checkerboard")


def _rgb(pixels: np.ndarray) -> Image.Image:
    """An RGB PIL image from gray, RGB, RGBA or boolean pixels."""
    array = np.asarray(pixels)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        array = np.clip(255 * (array - array.min()) / max(float(np.ptp(array)), 1e-9), 0, 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def skimage_images(names: Sequence[str], gray: bool = False) -> list[Image.Image]:
    """scikit-image's bundled images (grayscale when asked)."""
    import skimage.data

    images = [_rgb(getattr(skimage.data, name)()) for name in names]
    return [image.convert("L").convert("RGB") for image in images] if gray else images


def drawn_documents(count: int, rng: np.random.Generator) -> list[Image.Image]:
    """Pages of text lines and screenshot-like windows with bars, buttons and text."""
    images = []
    for index in range(count):
        page = Image.new("RGB", (int(rng.integers(300, 700)), int(rng.integers(300, 900))), "white")
        draw = ImageDraw.Draw(page)
        for line in range(8, page.height - 20, 18):
            draw.text((20, line), f"Report line {line}: findings within normal limits", fill="black")
        if index % 2:
            draw.rectangle((0, 0, page.width, 30), fill=(40, 60, 120))
            draw.rectangle((page.width - 120, page.height - 50, page.width - 20, page.height - 20), fill="gray")
        images.append(page)
    return images


def drawn_charts(count: int, rng: np.random.Generator) -> list[Image.Image]:
    """Line and bar charts on white, as a slide or a report holds."""
    images = []
    for _ in range(count):
        chart = Image.new("RGB", (480, 360), "white")
        draw = ImageDraw.Draw(chart)
        draw.line((40, 320, 460, 320), fill="black", width=2)
        draw.line((40, 320, 40, 20), fill="black", width=2)
        points = [(40 + 40 * step, int(320 - rng.uniform(20, 280))) for step in range(11)]
        draw.line(points, fill=tuple(int(v) for v in rng.integers(0, 200, 3)), width=3)
        for step in range(0, 10, 2):
            height = int(rng.uniform(20, 250))
            draw.rectangle((60 + 40 * step, 320 - height, 80 + 40 * step, 320), fill=(90, 140, 200))
        images.append(chart)
    return images


def noise_and_blank(count: int, rng: np.random.Generator) -> dict[str, list[Image.Image]]:
    """Uniform, Gaussian and salt-and-pepper noise; constant and near-constant images."""
    noise = [_rgb(rng.integers(0, 256, (256, 256), dtype=np.uint8)) for _ in range(count)]
    noise += [_rgb(np.clip(rng.normal(128, 40, (300, 200)), 0, 255).astype(np.uint8)) for _ in range(count)]
    noise += [_rgb((rng.random((256, 256)) > 0.5).astype(np.uint8) * 255) for _ in range(count)]
    blank = [_rgb(np.full((256, 256), level, np.uint8)) for level in np.linspace(0, 255, count).astype(int)]
    blank += [_rgb(np.clip(level + rng.normal(0, 2, (256, 256)), 0, 255).astype(np.uint8))
              for level in np.linspace(10, 245, count)]
    return {"noise": noise, "blank or near-constant": blank}


def dicom_slices(names: Sequence[str]) -> list[Image.Image]:
    """CT and MR slices from pydicom's bundled test files, windowed to their full range."""
    import pydicom
    from pydicom.data import get_testdata_file

    images = []
    for name in names:
        dataset = pydicom.dcmread(get_testdata_file(name))
        pixels = dataset.pixel_array
        for frame in pixels if pixels.ndim == 3 else [pixels]:
            images.append(_rgb(frame.astype(np.float64)))
    return images


def decoded(paths: Sequence[Path]) -> list[Image.Image]:
    """The views of image files, as the service decodes them."""
    return [view.image for path in paths for view in load_view_file(path, ImageLimits(max_pixels=60_000_000))]


def categories(work: Path, studies: int, seed: int) -> dict[str, list[Image.Image]]:
    """Every category of the evaluation, radiographs first."""
    from pydicom.data import get_testdata_file

    generate_dataset(work, studies, seed, "test")
    radiographs = decoded([path for study in find_studies(work / "test") for path in study.image_paths])
    rng = np.random.default_rng(seed)
    return {
        "synthetic radiographs (held out)": radiographs,
        "colour photographs": skimage_images(COLOUR_PHOTOS),
        "grayscale photographs": skimage_images(GRAY_PHOTOS) + skimage_images(COLOUR_PHOTOS[:4], gray=True),
        "documents and screenshots": skimage_images(DOCUMENTS) + drawn_documents(12, rng),
        "charts": drawn_charts(8, rng),
        **noise_and_blank(8, rng),
        "CT and MR slices": dicom_slices(("CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "MR2_UNCR.dcm")),
        "inverted radiographs": [Image.fromarray(255 - np.asarray(image)) for image in radiographs[:60]],
        "real radiographs of other regions (CR chest, extremity)": decoded(
            [Path(get_testdata_file(name)) for name in ("RG1_UNCR.dcm", "RG3_UNCR.dcm")]),
    }


def flagged_share(pipeline: Pipeline, images: Sequence[Image.Image]) -> tuple[int, int]:
    """(flagged, total) views of one category."""
    router = pipeline.models["router"]
    probabilities = np.concatenate([router.runner.predict(np.stack([resize_image(image, router.input_size)
                                                                    for image in images[start:start + 32]]))
                                    for start in range(0, len(images), 32)])
    scores = flag_views(pipeline.gate, images, probabilities)
    return int((scores > pipeline.gate.threshold).sum()), len(images)


def main(argv: list[str] | None = None) -> int:
    """Print the flagged share per category."""
    parser = argparse.ArgumentParser(prog="python -m bench.gate", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("h5"))
    parser.add_argument("--studies", type=int, default=140, help="held-out synthetic studies (default 140)")
    parser.add_argument("--seed", type=int, default=2026, help="held-out seed (default 2026)")
    args = parser.parse_args(argv)
    pipeline = Pipeline.load(args.models, PipelineSettings(warmup=False))
    if pipeline.gate is None:
        print(f"error: {args.models} has no gate statistics; fit them with python -m training.fit_gate",
              file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="gate-bench-") as work:
            print("| category | flagged | views | share |\n| --- | ---: | ---: | ---: |")
            non_radiographs = [0, 0]
            for name, images in categories(Path(work), args.studies, args.seed).items():
                flagged, total = flagged_share(pipeline, images)
                print(f"| {name} | {flagged} | {total} | {flagged / total:.1%} |")
                if not name.startswith("synthetic"):
                    non_radiographs = [non_radiographs[0] + flagged, non_radiographs[1] + total]
            print(f"| all non-radiographs | {non_radiographs[0]} | {non_radiographs[1]} |"
                  f" {non_radiographs[0] / non_radiographs[1]:.1%} |")
    finally:
        pipeline.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
