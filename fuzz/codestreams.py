"""Fuzz the compressed frame's own header against its dataset: no codec may ever see a frame that disagrees.

    python -m fuzz.codestreams [CORPUS_DIR] [-max_total_time=SECONDS] [libFuzzer flags]

An input is a small dataset header and one encoded frame: byte 0 picks the transfer syntax, bytes 1-4 are
Rows and Columns (big-endian 16-bit), byte 5 picks Bits Allocated (8 or 16), the rest is the frame. The
target wraps it in a DX instance and decodes it; pydicom's frame decoder is wrapped by a check that the
frame it is about to hand a codec declares exactly the dataset's size, components and at most its bits
(the RLE segment count too), within the limits. Either a decoded view or a typed error comes out;
anything else, or a codec reached by a disagreeing frame, is a bug (libFuzzer writes crash-*). The corpus
starts with honest frames and the lying ones of `fuzz.crafted` (60000x60000 SOF0, SOF3, SOF55 and SIZ,
one row and column too many, a wrong RLE segment count).
"""

from __future__ import annotations

import io
import struct
import sys
import tempfile
from pathlib import Path

import atheris
import numpy as np

from fuzz import INSTRUMENTED_PACKAGES, NOT_INSTRUMENTED

with atheris.instrument_imports(include=INSTRUMENTED_PACKAGES, exclude=NOT_INSTRUMENTED):
    from pydicom.encaps import encapsulate, generate_frames, get_frame
    from pydicom.pixels.decoders.base import DecodeRunner
    from pydicom.uid import (
        HTJ2KLossless,
        JPEG2000Lossless,
        JPEGBaseline8Bit,
        JPEGLosslessSV1,
        JPEGLSLossless,
        RLELossless,
    )

    from classifiers.decoding import decode_probed, probe_view
    from classifiers.decoding.codestream import read_codestream_header
    from classifiers.decoding.imaging import ImageLimits
    from classifiers.errors import ClassifierError
    from classifiers.results import ViewInput
    from fuzz.crafted import (
        jpeg_baseline_dataset,
        jpeg_lossless_dataset,
        lying_datasets,
        pydicom_compressed_dataset,
        small_dataset,
    )

LIMITS = ImageLimits(max_pixels=4_000_000, min_side=8)
SYNTAXES = (JPEGBaseline8Bit, JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless, HTJ2KLossless, RLELossless)
HEADER = struct.Struct(">BHHB")  # syntax index, rows, columns, bits allocated selector
_ORIGINAL_DECODE = DecodeRunner.decode


def checked_decode(runner: DecodeRunner, index: int) -> bytes | bytearray:
    """pydicom's frame decoder, after asserting the frame declares what the dataset says (the property)."""
    frame = get_frame(runner.src, index, number_of_frames=runner.number_of_frames)
    header = read_codestream_header(frame, runner.transfer_syntax)  # must not fail: it was checked
    if header.kind == "rle":
        expected = runner.samples_per_pixel * runner.bits_allocated // 8
        if header.segments != expected:
            raise AssertionError(f"a codec got an RLE frame of {header.segments} segments, {expected} expected")
    elif ((header.rows, header.columns, header.components) != (runner.rows, runner.columns, runner.samples_per_pixel)
          or (header.precision or 0) > runner.bits_allocated or header.pixels > LIMITS.max_pixels):
        raise AssertionError(f"a codec got a frame declaring {header} for a {runner.rows}x{runner.columns} dataset")
    return _ORIGINAL_DECODE(runner, index)


def build_instance(data: bytes) -> bytes | None:
    """The DX instance an input describes (see the module docstring); None when too short."""
    if len(data) < HEADER.size:
        return None
    syntax_index, rows, columns, bits_selector = HEADER.unpack(data[:HEADER.size])
    bits = 16 if bits_selector & 1 else 8
    dataset = small_dataset(np.zeros((8, 8), dtype=np.uint16 if bits == 16 else np.uint8), bits_stored=bits)
    dataset.Rows, dataset.Columns = rows, columns
    dataset.PixelData = encapsulate([data[HEADER.size:]])
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = SYNTAXES[syntax_index % len(SYNTAXES)]
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_one_input(data: bytes) -> None:
    """Decode the instance an input describes; typed errors are the expected answers to lying frames."""
    instance = build_instance(data)
    if instance is None:
        return
    try:
        for decoded in decode_probed(probe_view(ViewInput("fuzz-input", instance), LIMITS)):
            if decoded.image.mode != "L":
                raise AssertionError(f"decoded view is {decoded.image.mode}")
    except ClassifierError:
        return


def encode_input(dataset) -> bytes:
    """The fuzz input of a one-frame dataset made by `fuzz.crafted`."""
    syntax_index = SYNTAXES.index(dataset.file_meta.TransferSyntaxUID)
    frame = next(generate_frames(dataset.PixelData, number_of_frames=1))
    bits_selector = 1 if int(dataset.BitsAllocated) == 16 else 0
    return HEADER.pack(syntax_index, int(dataset.Rows), int(dataset.Columns), bits_selector) + frame


def seed_inputs() -> dict[str, bytes]:
    """Honest frames of every syntax and the lying ones, by name."""
    pixels = (np.add.outer(np.arange(40), np.arange(36)) * 3 % 256).astype(np.uint8)  # openjpeg wants >= 32
    honest = {"jpeg-baseline": jpeg_baseline_dataset(pixels), "jpeg-lossless": jpeg_lossless_dataset(pixels),
              **{f"pydicom-{syntax.name}": pydicom_compressed_dataset(pixels, syntax)
                 for syntax in (JPEGLSLossless, JPEG2000Lossless, RLELossless)},
              "rle-16": pydicom_compressed_dataset(pixels.astype(np.uint16) * 200, RLELossless, bits_stored=16)}
    return {name: encode_input(dataset) for name, dataset in {**honest, **lying_datasets(pixels)}.items()}


def write_seed_corpus(folder: Path) -> None:
    """One file per seed input."""
    for name, data in seed_inputs().items():
        (folder / f"{name.replace(' ', '_')}.seed").write_bytes(data)


def main(argv: list[str] | None = None) -> None:
    """Seed the corpus folder (given or temporary), install the check on the decoder and fuzz."""
    arguments = list(sys.argv if argv is None else argv)
    folders = [argument for argument in arguments[1:] if not argument.startswith("-")]
    corpus = Path(folders[0]) if folders else Path(tempfile.mkdtemp(prefix="fuzz-codestreams-"))
    if not corpus.is_file():  # a file is one input to replay (a crash-* from an earlier run)
        corpus.mkdir(parents=True, exist_ok=True)
        write_seed_corpus(corpus)
    if not folders:
        arguments.append(str(corpus))
    DecodeRunner.decode = checked_decode
    atheris.Setup(arguments, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
