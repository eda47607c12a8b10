"""The DICOM decoder: syntaxes, LUTs, photometrics, multi-frame, refusals and malformed files."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import UID, JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

from classifiers.decoding import decode_views
from classifiers.decoding.dicom import is_dicom
from classifiers.decoding.dicom_header import body_part_from_text
from classifiers.decoding.imaging import ImageLimits, decode_image
from classifiers.errors import (
    ImageError,
    ImageTooLarge,
    MalformedDicom,
    MixedStudies,
    NoPixelData,
    UnreadableImage,
    UnsupportedModality,
    UnsupportedTransferSyntax,
)
from classifiers.results import ViewInput
from tests.support.dicom_factory import (
    jpeg_baseline,
    jpeg_lossless,
    make_dataset,
    png_bytes,
    synthetic_radiograph,
    to_bytes,
)

LIMITS = ImageLimits()


def decode_one(data: bytes, name: str = "view.dcm"):
    """Decode bytes that hold exactly one view."""
    views = decode_views([ViewInput(name, data)], LIMITS)
    assert len(views) == 1
    return views[0]


def gray(view) -> np.ndarray:
    """The display pixels of a decoded view, (rows, cols) uint8."""
    assert view.image.mode == "L"
    return np.asarray(view.image)


@pytest.fixture(scope="module")
def brightness() -> np.ndarray:
    """A synthetic wrist view in [0, 1]."""
    return synthetic_radiograph("XR_WRIST", seed=3)


@pytest.fixture(scope="module")
def pixels8(brightness: np.ndarray) -> np.ndarray:
    return np.round(brightness * 255).astype(np.uint8)


def compress_with_pydicom(syntax: UID):
    def compress(dataset: Dataset) -> Dataset:
        dataset.compress(syntax)
        return dataset
    return compress


@pytest.mark.parametrize("encode", [
    lambda dataset: dataset,
    compress_with_pydicom(RLELossless),
    compress_with_pydicom(JPEGLSLossless),
    compress_with_pydicom(JPEG2000Lossless),
    jpeg_lossless,
], ids=["native", "rle", "jpeg-ls", "jpeg2000", "jpeg-lossless"])
def test_lossless_syntaxes_decode_to_the_png_pixels(encode, pixels8: np.ndarray) -> None:
    expected = np.asarray(decode_image(png_bytes(pixels8)))
    view = decode_one(to_bytes(encode(make_dataset(pixels8))))
    np.testing.assert_array_equal(gray(view), expected)


def test_jpeg_baseline_decodes_close_to_the_original(pixels8: np.ndarray) -> None:
    view = decode_one(to_bytes(jpeg_baseline(make_dataset(pixels8), quality=95)))
    difference = np.abs(gray(view).astype(int) - pixels8.astype(int))
    assert difference.mean() < 1.5 and difference.max() < 20


@pytest.mark.parametrize("bits_stored", [12, 16])
def test_high_bit_depth_matches_the_16_bit_png(bits_stored: int, brightness: np.ndarray) -> None:
    stored = np.round(brightness * (2 ** bits_stored - 1)).astype(np.uint16)
    view = decode_one(to_bytes(make_dataset(stored, bits_stored=bits_stored)))
    expected = np.clip(stored / (2 ** bits_stored - 1) * 255 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(gray(view), expected)


def test_jpeg_lossless_12_bit(brightness: np.ndarray) -> None:
    stored = np.round(brightness * 4095).astype(np.uint16)
    view = decode_one(to_bytes(jpeg_lossless(make_dataset(stored, bits_stored=12))))
    np.testing.assert_array_equal(gray(view), np.clip(stored / 4095 * 255 + 0.5, 0, 255).astype(np.uint8))


def test_signed_pixels_with_rescale_use_the_modality_range(brightness: np.ndarray) -> None:
    stored = (np.round(brightness * 4095) - 2048).astype(np.int16)
    dataset = make_dataset(stored, bits_stored=12, extra={"RescaleSlope": 2, "RescaleIntercept": 100})
    view = decode_one(to_bytes(dataset))
    # Independent: Modality LUT output range is [-2048*2+100, 2047*2+100]; map it linearly to 0..255.
    values = stored.astype(np.float64) * 2 + 100
    low, high = -2048 * 2 + 100, 2047 * 2 + 100
    expected = np.clip((values - low) / (high - low) * 255 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(gray(view), expected)


def linear_window(values: np.ndarray, center: float, width: float, low: float, high: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR window, written out with NumPy."""
    center, width = center - 0.5, width - 1
    out = ((values - center) / width + 0.5) * (high - low) + low
    out[values <= center - width / 2] = low
    out[values > center + width / 2] = high
    return out


def test_rescale_then_first_window(brightness: np.ndarray) -> None:
    stored = np.round(brightness * 4095).astype(np.uint16)
    extra = {"RescaleSlope": 1, "RescaleIntercept": -1000, "WindowCenter": [500, 2000], "WindowWidth": [1500, 10]}
    view = decode_one(to_bytes(make_dataset(stored, bits_stored=12, extra=extra)))
    low, high = -1000.0, 4095.0 - 1000
    windowed = linear_window(stored.astype(np.float64) - 1000, 500, 1500, low, high)
    expected = np.clip((windowed - low) / (high - low) * 255 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(gray(view), expected)


def test_voi_lut_sequence_is_applied(brightness: np.ndarray) -> None:
    stored = np.round(brightness * 255).astype(np.uint16)
    table = (np.sqrt(np.arange(256) / 255) * 4095).astype(np.uint16)  # a gamma-like LUT, 12-bit output
    item = Dataset()
    item.LUTDescriptor = [256, 0, 12]
    item.LUTData = table.astype("<u2").tobytes()
    dataset = make_dataset(stored.astype(np.uint8), extra={"VOILUTSequence": [item]})
    view = decode_one(to_bytes(dataset))
    expected = np.clip(table[stored] / 4095 * 255 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(gray(view), expected)


def test_monochrome1_is_inverted(pixels8: np.ndarray) -> None:
    view = decode_one(to_bytes(make_dataset(255 - pixels8, photometric="MONOCHROME1")))
    np.testing.assert_array_equal(gray(view), pixels8)


def test_dataset_without_preamble_or_file_meta(pixels8: np.ndarray) -> None:
    data = to_bytes(make_dataset(pixels8), preamble=False)
    assert data[128:132] != b"DICM" and is_dicom(data)
    np.testing.assert_array_equal(gray(decode_one(data)), pixels8)


def test_detected_by_content_not_by_name(pixels8: np.ndarray, radiograph_png: bytes) -> None:
    assert decode_one(to_bytes(make_dataset(pixels8)), name="scan.png").dicom is not None
    assert not is_dicom(radiograph_png)
    assert decode_one(radiograph_png, name="scan.dcm").dicom is None


def test_multi_frame_gives_one_view_per_frame(pixels8: np.ndarray) -> None:
    frames = np.stack([pixels8, 255 - pixels8, pixels8 // 2])
    views = decode_views([ViewInput("cine.dcm", to_bytes(make_dataset(frames)))], LIMITS)
    assert [view.name for view in views] == ["cine.dcm [frame 1]", "cine.dcm [frame 2]", "cine.dcm [frame 3]"]
    assert [view.dicom.frame for view in views] == [1, 2, 3]
    for view, frame in zip(views, frames, strict=True):
        np.testing.assert_array_equal(gray(view), frame)


def test_metadata_and_header_kept_per_view(pixels8: np.ndarray) -> None:
    dataset = make_dataset(pixels8, body_part="HAND")
    view = decode_one(to_bytes(dataset))
    info = view.dicom
    assert (info.study_instance_uid, info.series_instance_uid, info.sop_instance_uid) == (
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID)
    assert (info.body_part_examined, info.mapped_body_part, info.view_position, info.laterality) == (
        "HAND", "XR_HAND", "PA", "L")
    assert view.header.SOPInstanceUID == dataset.SOPInstanceUID and "PixelData" not in view.header
    assert "PatientName" not in str(info.to_dict()) and "Leakmore" not in repr(view)


@pytest.mark.parametrize(("text", "part"), [
    ("HAND", "XR_HAND"), ("WRIST", "XR_WRIST"), ("ELBOW", "XR_ELBOW"), ("SHOULDER", "XR_SHOULDER"),
    ("FINGER", "XR_FINGER"), ("THUMB", "XR_FINGER"), ("FOREARM", "XR_FOREARM"), ("HUMERUS", "XR_HUMERUS"),
    ("ARM", "XR_HUMERUS"), ("XR WRIST 3+ VIEWS LT", "XR_WRIST"), ("Upper arm, right", "XR_HUMERUS"),
    ("lower arm", "XR_FOREARM"), ("Hand and arm", "XR_HAND"), ("HAND/WRIST", None), ("CHEST", None),
    ("EXTREMITY", None), ("", None),
])
def test_body_part_terms_map_to_the_seven_parts(text: str, part: str | None) -> None:
    assert body_part_from_text(text) == part


def test_description_names_the_part_when_body_part_examined_is_missing(pixels8: np.ndarray) -> None:
    dataset = make_dataset(pixels8, body_part=None, extra={"StudyDescription": "XR ELBOW 2 VIEWS"})
    assert decode_one(to_bytes(dataset)).dicom.mapped_body_part == "XR_ELBOW"


@pytest.mark.parametrize("modality", ["CT", "MR", "US", "NM", "PT", "MG", "ID-Leakmore-4711"])
def test_other_modalities_are_refused_without_quoting_the_value(modality: str, pixels8: np.ndarray) -> None:
    with pytest.raises(UnsupportedModality, match=r"^ct\.dcm: the Modality is not a projection radiograph") as raised:
        decode_one(to_bytes(make_dataset(pixels8, modality=modality)), name="ct.dcm")
    assert modality not in str(raised.value).removeprefix("ct.dcm: ").replace("CR, DX, RG, OT", "")


def test_secondary_capture_must_be_grayscale(pixels8: np.ndarray) -> None:
    assert decode_one(to_bytes(make_dataset(pixels8, modality="OT"))).dicom.modality == "OT"
    rgb = np.repeat(pixels8[..., None], 3, axis=2)
    with pytest.raises(UnsupportedModality, match="the Photometric Interpretation is not MONOCHROME1 or") as raised:
        decode_one(to_bytes(make_dataset(rgb, photometric="RGB", modality="OT")))
    assert "RGB" not in str(raised.value)


def test_object_without_pixel_data_is_refused() -> None:
    report = pydicom.dcmread(get_testdata_file("test-SR.dcm"))
    with pytest.raises(NoPixelData, match="^report.dcm: this DICOM object holds no image"):
        decode_one(to_bytes(report), name="report.dcm")


def test_mixed_studies_are_refused_naming_the_views(pixels8: np.ndarray) -> None:
    first, second = make_dataset(pixels8), make_dataset(pixels8)
    views = [ViewInput("a.dcm", to_bytes(first)), ViewInput("b.dcm", to_bytes(second))]
    with pytest.raises(MixedStudies) as raised:
        decode_views(views, LIMITS)
    message = str(raised.value)
    assert "2 DICOM studies (study 1: a.dcm; study 2: b.dcm)" in message
    assert first.StudyInstanceUID not in message and second.StudyInstanceUID not in message


def test_pixel_limit_checked_from_the_header_before_decoding(pixels8: np.ndarray) -> None:
    dataset = make_dataset(pixels8)
    dataset.Rows, dataset.Columns, dataset.NumberOfFrames = 4000, 4000, 3  # pixel data far too short
    with pytest.raises(ImageTooLarge, match="4000x4000 x 3 frames is 48,000,000 pixels"):
        decode_one(to_bytes(dataset))


def test_pixel_data_shorter_than_the_header_says(pixels8: np.ndarray) -> None:
    dataset = make_dataset(pixels8)
    dataset.PixelData = dataset.PixelData[:1000]
    with pytest.raises(MalformedDicom, match="holds 1,000 bytes but Rows x Columns x Frames needs 20,480"):
        decode_one(to_bytes(dataset))


def test_missing_pixel_module_attribute(pixels8: np.ndarray) -> None:
    dataset = make_dataset(pixels8)
    del dataset.BitsStored
    with pytest.raises(MalformedDicom, match="lacks BitsStored"):
        decode_one(to_bytes(dataset))


def test_corrupt_compressed_frame(pixels8: np.ndarray) -> None:
    dataset = make_dataset(pixels8)
    dataset.compress(JPEG2000Lossless)
    data = bytearray(to_bytes(dataset))
    start = data.index(b"\xff\x90", data.index(b"\xff\x4f\xff\x51"))  # the first tile (SOT) after SOC, SIZ
    data[start:start + 60] = bytes(60)
    with pytest.raises(MalformedDicom, match="pixel data cannot be decoded"):
        decode_one(bytes(data))


def test_corrupt_compressed_frame_header(pixels8: np.ndarray) -> None:
    dataset = make_dataset(pixels8)
    dataset.compress(JPEG2000Lossless)
    data = bytearray(to_bytes(dataset))
    start = data.index(b"\xff\x4f\xff\x51")  # the codestream's SOC and SIZ markers
    data[start:start + 60] = bytes(60)
    with pytest.raises(MalformedDicom, match="the compressed frame's header is unreadable"):
        decode_one(bytes(data))


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.2, 0.3, 0.5, 0.9, 0.999])
def test_truncated_files_are_clear_4xx_errors(fraction: float, pixels8: np.ndarray) -> None:
    data = to_bytes(make_dataset(pixels8))
    with pytest.raises((MalformedDicom, UnreadableImage)) as raised:
        decode_one(data[:int(len(data) * fraction)], name="cut.dcm")
    assert str(raised.value).startswith("cut.dcm: ")


def test_transfer_syntax_without_codec_is_named(pixels8: np.ndarray) -> None:
    dataset = make_dataset(pixels8)
    dataset = jpeg_baseline(dataset)
    dataset.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2 Main Profile
    with pytest.raises(UnsupportedTransferSyntax, match=r"the transfer syntax \(file meta Transfer Syntax UID\)"
                                                        r" cannot be decoded here") as raised:
        decode_one(to_bytes(dataset))
    assert "1.2.840.10008.1.2.4.100" not in str(raised.value) and "MPEG" not in str(raised.value)


def test_pydicom_bundled_files() -> None:
    """pydicom's own files: CR MONOCHROME1 native and JPEG 2000 agree; CT, MR and colour images are refused."""
    native = decode_one(open(get_testdata_file("RG3_UNCR.dcm"), "rb").read())
    compressed = decode_one(open(get_testdata_file("RG3_J2KR.dcm"), "rb").read())
    np.testing.assert_array_equal(gray(native), gray(compressed))
    assert native.dicom.modality == "CR" and native.dicom.body_part_examined == "EXTREMITY"
    # Independent: window 550/1024 over 10 bits, then MONOCHROME1 inverted.
    stored = pydicom.dcmread(get_testdata_file("RG3_UNCR.dcm")).pixel_array.astype(np.float64)
    windowed = 1023 - linear_window(stored, 550, 1024, 0, 1023)
    np.testing.assert_array_equal(gray(native), np.clip(windowed / 1023 * 255 + 0.5, 0, 255).astype(np.uint8))
    for name, error in (("CT_small.dcm", UnsupportedModality), ("MR_small.dcm", UnsupportedModality),
                        ("SC_rgb.dcm", UnsupportedModality), ("rtplan.dcm", NoPixelData)):
        with pytest.raises(error):
            decode_one(open(get_testdata_file(name), "rb").read())


def test_pydicom_data_modality_lut_voi_lut_and_deflate() -> None:
    """pydicom-data files for a Modality LUT Sequence, a VOI LUT Sequence and deflated transfer syntax."""
    for name in ("mlut_18.dcm", "vlut_04.dcm", "image_dfl.dcm"):
        dataset = pydicom.dcmread(get_testdata_file(name))
        view = gray(decode_one(open(get_testdata_file(name), "rb").read()))
        assert view.shape == dataset.pixel_array.shape and view.min() < view.max()


def test_pydicom_data_jpeg_lossless_file() -> None:
    """A JPEG lossless (process 14 SV1) file made by another encoder than ours: pydicom-data's JPEG-LL.dcm."""
    dataset = pydicom.dcmread(get_testdata_file("JPEG-LL.dcm"))
    dataset.Modality = "DX"  # it is an NM image; relabel it to reach the codec
    stored = dataset.pixel_array.astype(np.float64)
    assert dataset.PixelRepresentation == 1 and dataset.BitsStored == 16  # signed: -32768..32767 maps to 0..255
    view = gray(decode_one(to_bytes(dataset)))
    expected = np.clip((stored + 32768) / 65535 * 255 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(view, expected)


def test_study_uid_checked_only_for_dicom_views(pixels8: np.ndarray, radiograph_png: bytes) -> None:
    views = decode_views([ViewInput("a.dcm", to_bytes(make_dataset(pixels8))), ViewInput("b.png", radiograph_png)],
                         LIMITS)
    assert [view.dicom is None for view in views] == [False, True]
    assert generate_uid() != views[0].dicom.study_instance_uid


def test_bad_element_length_is_a_clear_error(pixels8: np.ndarray) -> None:
    data = bytearray(to_bytes(make_dataset(pixels8)))
    value_at = data.index(b"Leakmore")
    data[value_at - 2:value_at] = (0xFFF0).to_bytes(2, "little")  # explicit VR short length of PatientName
    with pytest.raises(ImageError) as raised:
        decode_one(bytes(data), name="length.dcm")
    assert str(raised.value).startswith("length.dcm: ") and "Leakmore" not in str(raised.value)


@pytest.mark.parametrize("seed", range(20))
def test_corrupted_headers_never_escape_as_other_errors(seed: int, pixels8: np.ndarray) -> None:
    """Random byte damage in the header: every outcome is a decoded view or an ImageError (a 4xx)."""
    original = to_bytes(make_dataset(pixels8))
    header_end = original.index(b"\xe0\x7f\x10\x00")  # the Pixel Data tag
    rng = np.random.default_rng(seed)
    for _ in range(50):
        data = bytearray(original)
        for position in rng.integers(0, header_end, size=3):
            data[position] = int(rng.integers(0, 256))
        try:
            decode_views([ViewInput("fuzz.dcm", bytes(data))], LIMITS)
        except ImageError as error:
            assert str(error).startswith("fuzz.dcm")


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "jpeg2000"])
def test_compressed_multi_frame_decodes_frame_by_frame(syntax: UID, pixels8: np.ndarray) -> None:
    frames = np.stack([pixels8, 255 - pixels8])
    dataset = make_dataset(frames)
    dataset.compress(syntax)
    views = decode_views([ViewInput("cine.dcm", to_bytes(dataset))], LIMITS)
    assert [view.dicom.frame for view in views] == [1, 2]
    for view, frame in zip(views, frames, strict=True):
        np.testing.assert_array_equal(gray(view), frame)


HUGE = r" declares 60000x60000, 3,600,000,000 pixels, over the limit"
LYING = [("jpeg-baseline-huge", ImageTooLarge, r"the JPEG codestream \(SOF0\)" + HUGE),
         ("jpeg-lossless-huge", ImageTooLarge, r"the JPEG codestream \(SOF3\)" + HUGE),
         ("jpeg-ls-huge", ImageTooLarge, r"the JPEG-LS codestream \(SOF55\)" + HUGE),
         ("jpeg2000-huge", ImageTooLarge, r"the JPEG 2000 codestream \(SIZ\)" + HUGE),
         ("jpeg-baseline-larger", MalformedDicom, r"the JPEG codestream \(SOF0\) is 129x161 but Columns x Rows say"
                                                  r" 128x160"),
         ("jpeg-lossless-larger", MalformedDicom, r"the JPEG codestream \(SOF3\) is 129x161"),
         ("jpeg-ls-larger", MalformedDicom, r"the JPEG-LS codestream \(SOF55\) is 129x161"),
         ("jpeg2000-larger", MalformedDicom, r"the JPEG 2000 codestream \(SIZ\) is 129x161"),
         ("rle-segments", MalformedDicom, "the RLE frame has 3 segments but Samples per Pixel and Bits Allocated"
                                          " need 1")]


@pytest.fixture(scope="module")
def lying_files(pixels8: np.ndarray) -> dict[str, bytes]:
    from fuzz.crafted import lying_datasets

    return {case: to_bytes(dataset) for case, dataset in lying_datasets(pixels8).items()}


@pytest.mark.parametrize(("case", "error", "message"), LYING, ids=[row[0] for row in LYING])
def test_a_frame_whose_codestream_disagrees_is_refused_before_decoding(case, error, message, lying_files,
                                                                       decode_calls) -> None:
    with pytest.raises(error, match=rf"^lie\.dcm: {message}"):
        decode_one(lying_files[case], name="lie.dcm")
    assert decode_calls == []  # no codec ran


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=["rle", "jpeg-ls", "j2k"])
def test_the_spy_sees_honest_frames_decoded(syntax: UID, pixels8: np.ndarray, decode_calls) -> None:
    frames = np.stack([pixels8, 255 - pixels8])
    dataset = make_dataset(frames)
    dataset.compress(syntax)
    assert len(decode_views([ViewInput("cine.dcm", to_bytes(dataset))], LIMITS)) == 2
    assert decode_calls == [0, 1]


@pytest.mark.parametrize("has_bot", [True, False], ids=["offset-table", "no-offset-table"])
def test_a_lying_second_frame_refuses_the_file_before_the_first_is_decoded(has_bot: bool, pixels8: np.ndarray,
                                                                          decode_calls) -> None:
    from pydicom.encaps import encapsulate, generate_frames

    from fuzz.crafted import set_jpeg_size

    dataset = make_dataset(np.stack([pixels8, pixels8]))
    dataset.compress(JPEGLSLossless)
    first, second = generate_frames(dataset.PixelData, number_of_frames=2)
    dataset.PixelData = encapsulate([first, set_jpeg_size(second, 60000, 60000)], has_bot=has_bot)
    with pytest.raises(ImageTooLarge, match=r"^cine\.dcm \[frame 2\]: the JPEG-LS codestream"):
        decode_views([ViewInput("cine.dcm", to_bytes(dataset))], LIMITS)
    assert decode_calls == []


def test_missing_frames_and_unreadable_frame_headers(pixels8: np.ndarray, decode_calls) -> None:
    dataset = make_dataset(pixels8)
    dataset.compress(JPEG2000Lossless)
    dataset.NumberOfFrames = 2
    with pytest.raises(MalformedDicom, match="holds fewer frames than Number of Frames"):
        decode_one(to_bytes(dataset))
    baseline = jpeg_baseline(make_dataset(pixels8))
    from pydicom.encaps import encapsulate
    baseline.PixelData = encapsulate([b"\x89PNG not a JPEG frame"])
    with pytest.raises(MalformedDicom, match=r"header is unreadable \(the frame does not start with a JPEG SOI"):
        decode_one(to_bytes(baseline))
    assert decode_calls == []


def test_a_sixteen_bit_codestream_in_an_eight_bit_dataset_is_refused(pixels8: np.ndarray, decode_calls) -> None:
    import imagecodecs

    from tests.support.dicom_factory import encapsulate_frames

    frame = bytes(imagecodecs.jpegls_encode(pixels8.astype(np.uint16) * 256))  # precision 16, Bits Allocated 8
    dataset = encapsulate_frames(make_dataset(pixels8), [frame], JPEGLSLossless)
    with pytest.raises(MalformedDicom, match="stores 16-bit samples but Bits Allocated says 8"):
        decode_one(to_bytes(dataset))
    assert decode_calls == []


@pytest.mark.parametrize("planar", [0, 1], ids=["interleaved", "planar"])
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_monochrome_with_three_samples_is_a_contradiction(photometric: str, planar: int,
                                                          pixels8: np.ndarray) -> None:
    dataset = make_dataset(np.repeat(pixels8[..., None], 3, axis=2), photometric="RGB")
    dataset.PhotometricInterpretation, dataset.PlanarConfiguration = photometric, planar
    with pytest.raises(MalformedDicom, match=rf"^v\.dcm: Photometric Interpretation {photometric} needs Samples"
                                             r" per Pixel 1 but it is 3"):
        decode_one(to_bytes(dataset), name="v.dcm")


DEGENERATE_LUTS = [
    ({"RescaleSlope": "NaN", "RescaleIntercept": 0}, "Rescale Slope must be a finite number"),
    ({"RescaleSlope": "1e308", "RescaleIntercept": 0}, "Rescale Slope must be a finite number"),
    ({"RescaleSlope": "inf", "RescaleIntercept": 0}, "Rescale Slope must be a finite number"),
    ({"RescaleSlope": 0, "RescaleIntercept": 0}, "Rescale Slope is 0"),
    ({"RescaleSlope": 1, "RescaleIntercept": "-inf"}, "Rescale Intercept must be a finite number"),
    ({"WindowCenter": "NaN", "WindowWidth": 100}, "Window Center must be a finite number"),
    ({"WindowCenter": 100, "WindowWidth": "inf"}, "Window Width must be a finite number"),
    ({"WindowCenter": [100, "nan"], "WindowWidth": [50, 50]}, "Window Center must be a finite number"),
    ({"WindowCenter": 100, "WindowWidth": 0}, "Window Width must be >= 1 for a LINEAR window"),
    ({"WindowCenter": 100, "WindowWidth": 0.5}, "Window Width must be >= 1 for a LINEAR window"),
    ({"WindowCenter": 100, "WindowWidth": 0, "VOILUTFunction": "SIGMOID"}, "Window Width must be > 0 for a"),
]


@pytest.mark.parametrize(("extra", "message"), DEGENERATE_LUTS, ids=[str(row[0]) for row in DEGENERATE_LUTS])
def test_degenerate_lut_values_are_refused_naming_the_attribute(extra, message, pixels8: np.ndarray) -> None:
    with pytest.raises(MalformedDicom, match=rf"^v\.dcm: {message}") as raised:
        decode_one(to_bytes(make_dataset(pixels8, extra=extra)), name="v.dcm")
    assert "nan" not in str(raised.value).lower() and "1e308" not in str(raised.value)


def test_valid_fractional_window_width_of_linear_exact_is_decoded(pixels8: np.ndarray) -> None:
    extra = {"WindowCenter": 128, "WindowWidth": 0.5, "VOILUTFunction": "LINEAR_EXACT"}
    assert gray(decode_one(to_bytes(make_dataset(pixels8, extra=extra)))).shape == pixels8.shape


def test_an_rle_codec_panic_is_a_malformed_frame() -> None:
    """pylibjpeg-rle panics (a BaseException) on segments longer than the frame; found by fuzz.codestreams."""
    import struct

    from pydicom.encaps import encapsulate

    from fuzz.crafted import small_dataset

    dataset = small_dataset(np.zeros((40, 36), np.uint16), bits_stored=16)
    segment = (b"\x7f" + bytes(128)) * 12  # 1,548 literal bytes for a 1,440-byte segment
    frame = struct.pack("<16I", 2, 64, 64 + len(segment), *([0] * 13)) + segment + segment
    dataset.PixelData = encapsulate([frame])
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = RLELossless
    with pytest.raises(MalformedDicom, match="the pixel data cannot be decoded"):
        decode_one(to_bytes(dataset))


def test_a_deflate_bomb_is_refused_before_it_is_inflated(pixels8: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deflated Explicit VR Little Endian: pydicom inflates it whole, so its size is counted first."""
    import zlib

    import pydicom.filereader
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    inflated: list[int] = []
    original = zlib.decompress
    monkeypatch.setattr(pydicom.filereader.zlib, "decompress",
                        lambda data, *args: inflated.append(len(data)) or original(data, *args))
    dataset = make_dataset(pixels8)
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    honest = to_bytes(dataset)
    np.testing.assert_array_equal(gray(decode_one(honest)), pixels8)
    assert inflated  # the spy sees pydicom inflate an honest file
    inflated.clear()
    # The same file meta, then a dataset that inflates to 200 MB: a private OB element of zeros.
    stream = io.BytesIO(honest)
    pydicom.filereader.read_preamble(stream, False)
    pydicom.filereader._read_file_meta_info(stream)
    meta_end = stream.tell()
    bomb_dataset = pydicom.Dataset()
    bomb_dataset.add_new(0x00091010, "OB", bytes(200_000_000))
    body = io.BytesIO()
    bomb_dataset.save_as(body, implicit_vr=False, little_endian=True)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = honest[:meta_end] + compressor.compress(body.getvalue()) + compressor.flush()
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageTooLarge, match="the deflated dataset inflates to more than"):
        decode_views([ViewInput("bomb.dcm", bomb)], ImageLimits(max_pixels=1_000_000))
    assert inflated == []


@pytest.mark.parametrize("layout", ["offset-table", "one-fragment-per-frame", "two-fragments-per-frame"])
def test_frames_checked_are_the_frames_pydicom_decodes(layout: str, pixels8: np.ndarray) -> None:
    from pydicom.encaps import encapsulate, generate_frames, get_frame

    from classifiers.decoding.dicom_frames import _encoded_frames

    dataset = make_dataset(np.stack([pixels8, 255 - pixels8, pixels8 // 2]))
    dataset.compress(JPEGLSLossless)
    frames = list(generate_frames(dataset.PixelData, number_of_frames=3))
    dataset.PixelData = encapsulate(frames, has_bot=layout == "offset-table",
                                    fragments_per_frame=2 if layout == "two-fragments-per-frame" else 1)
    expected = [get_frame(dataset.PixelData, index, number_of_frames=3) for index in range(3)]
    assert list(_encoded_frames(dataset, 3, "cine.dcm")) == expected == frames
