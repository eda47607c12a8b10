"""What a compressed frame's own header says it holds, read from its bytes without decoding.

A codec allocates what its codestream's header declares, not what the DICOM dataset around it says:
a JPEG frame header (SOF) saying 60000x60000 inside a 64x64 dataset makes the codec allocate gigabytes.
These pure functions read that header (JPEG SOF0-15 and DHP/DNL, JPEG-LS SOF55 and its LSE oversize
dimensions, JPEG 2000 SIZ in a bare codestream or a JP2 file, the RLE header's segment count) so the
caller can compare it with the dataset and the limits before any codec runs.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

# JPEG (ISO/IEC 10918-1) frame headers: SOF0-SOF15 but DHT (C4), JPG (C8) and DAC (CC).
JPEG_FRAME_MARKERS = {marker: f"SOF{marker - 0xC0}" for marker in range(0xC0, 0xD0) if marker not in (0xC4, 0xC8, 0xCC)}
SOF55 = 0xF7  # JPEG-LS (ISO/IEC 14495-1) frame header
LSE = 0xF8  # JPEG-LS preset parameters; ID 4 holds dimensions over 65535
DHP = 0xDE  # hierarchical JPEG: the size of the whole image, before its frames
DNL = 0xDC  # number of lines, after the first scan, when the frame header says 0
SOS, EOI, SOI = 0xDA, 0xD9, 0xD8
STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8), SOI, EOI}  # TEM, RST0-7, SOI, EOI: no length field
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
SIZ_FIXED_LENGTH = 38  # Lsiz counts itself, Rsiz, the eight 32-bit sizes and offsets, and Csiz
MAX_J2K_TILES = 65535  # Isot, the tile index of a tile-part, is 16 bits
MAX_J2K_COMPONENTS = 16384
MAX_JPEG_SCANS = 500  # more is refused: libjpeg-turbo's advice against scan bombs (its djpeg -maxscans)
RLE_HEADER_LENGTH = 64
MAX_RLE_SEGMENTS = 15


class CodestreamError(ValueError):
    """The bytes are not a readable codestream of the expected kind; the message says what is wrong."""


@dataclass(frozen=True)
class CodestreamHeader:
    """What one encoded frame declares: the size its codec allocates, before a byte is decoded.

    `rows`, `columns`, `components` and `precision` are None for RLE, whose header holds only `segments`.
    `precision` is the largest bits per sample of any component; `scans` counts JPEG scans (SOS).
    """

    kind: str  # "jpeg", "jpeg-ls", "jpeg2000" or "rle"
    marker: str  # the header read: "SOF0".."SOF15", "DHP", "SOF55", "SIZ" or "RLE"
    rows: int | None
    columns: int | None
    components: int | None
    precision: int | None
    signed: bool = False
    scans: int = 0
    segments: int | None = None

    @property
    def pixels(self) -> int:
        """Rows x columns declared (0 for RLE)."""
        return (self.rows or 0) * (self.columns or 0)


def read_jpeg_header(data: bytes) -> CodestreamHeader:
    """The frame header of a JPEG or JPEG-LS codestream, every marker up to EOI walked.

    Hierarchical streams give their DHP size (every frame must fit in it); a frame header of 0 lines
    takes its DNL; a JPEG-LS header of 0 takes its LSE ID 4 dimensions.

    Raises:
        CodestreamError: no SOI, a segment running past the end, no frame header, two frame headers outside
            hierarchical mode, a frame larger than its DHP, or a size still unknown at the end.
    """
    if data[:2] != b"\xff\xd8":
        raise CodestreamError("the frame does not start with a JPEG SOI marker")
    walker = _JpegWalker(data)
    walker.walk()
    return walker.header()


class _JpegWalker:
    """One pass over a JPEG/JPEG-LS marker sequence, entropy-coded data skipped."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.frames: list[tuple[str, int, int, int, int]] = []  # (marker, rows, columns, components, precision)
        self.hierarchy: tuple[int, int, int, int] | None = None
        self.oversize: tuple[int, int] | None = None
        self.lines: int | None = None
        self.scans = 0

    def walk(self) -> None:
        """Read every segment until EOI or the end of the data."""
        position = 2
        while position < len(self.data):
            marker, position = self._next_marker(position)
            if marker is None or marker == EOI:
                return
            if marker in STANDALONE_MARKERS:
                continue
            segment = self._segment(position)
            self._read_segment(marker, segment)
            position += 2 + len(segment)
            if marker == SOS:
                self.scans += 1
                position = self._skip_entropy_coded(position)

    def _next_marker(self, position: int) -> tuple[int | None, int]:
        """The next marker from `position` and the offset just after it; (None, end) when there is none.

        Extraneous bytes before a marker are skipped, as libjpeg-turbo does, so no frame header it would
        find hides behind them.
        """
        position = self.data.find(b"\xff", position)
        if position < 0:
            return None, len(self.data)
        while position < len(self.data) and self.data[position] == 0xFF:
            position += 1
        if position >= len(self.data):
            return None, position
        return self.data[position], position + 1

    def _segment(self, position: int) -> bytes:
        """The payload of the marker segment whose length field starts at `position`."""
        if position + 2 > len(self.data):
            raise CodestreamError("the JPEG stream ends inside a marker segment")
        (length,) = struct.unpack(">H", self.data[position:position + 2])
        if length < 2 or position + length > len(self.data):
            raise CodestreamError("a JPEG marker segment is longer than the stream")
        return self.data[position + 2:position + length]

    def _read_segment(self, marker: int, segment: bytes) -> None:
        """Keep what frame headers, DHP, DNL and LSE ID 4 say."""
        if marker in JPEG_FRAME_MARKERS or marker == SOF55:
            name = "SOF55" if marker == SOF55 else JPEG_FRAME_MARKERS[marker]
            self.frames.append((name, *_frame_header(segment)))
        elif marker == DHP:
            self.hierarchy = _frame_header(segment)
        elif marker == DNL:
            if len(segment) < 2:
                raise CodestreamError("the JPEG DNL segment is too short")
            (self.lines,) = struct.unpack(">H", segment[:2])
        elif marker == LSE and self._is_jpeg_ls() and segment[:1] == b"\x04":
            self.oversize = _oversize_dimensions(segment)

    def _is_jpeg_ls(self) -> bool:
        return bool(self.frames) and self.frames[0][0] == "SOF55"

    def _skip_entropy_coded(self, position: int) -> int:
        """The offset of the next marker after a scan's entropy-coded data (stuffing and RST skipped)."""
        jpeg_ls = self._is_jpeg_ls()
        while True:
            position = self.data.find(b"\xff", position)
            if position < 0 or position + 1 >= len(self.data):
                return len(self.data)
            following = self.data[position + 1]
            if following == 0xFF:
                position += 1  # a fill byte before a marker
            elif (following < 0x80) if jpeg_ls else (following == 0x00):
                position += 2  # bit or byte stuffing inside the entropy-coded data
            elif 0xD0 <= following <= 0xD7:
                position += 2  # restart markers belong to the scan
            else:
                return position

    def header(self) -> CodestreamHeader:
        """The size the decoder allocates, after the cross-checks of the frames read."""
        if not self.frames:
            raise CodestreamError("the JPEG stream has no frame header (SOF) before its end")
        name, rows, columns, components, precision = self.frames[0]
        kind = "jpeg-ls" if name == "SOF55" else "jpeg"
        if self.hierarchy is not None:
            rows, columns, components, precision = self.hierarchy
            name = "DHP"
            for _, *frame in self.frames:
                if any(part > whole for part, whole in zip(frame, self.hierarchy, strict=True)):
                    raise CodestreamError("a hierarchical JPEG frame is larger than the image its DHP declares")
        elif len(self.frames) > 1:
            raise CodestreamError("the JPEG stream has more than one frame header (SOF) outside hierarchical mode")
        if kind == "jpeg-ls" and self.oversize is not None:
            rows, columns = (self.oversize[0] if rows == 0 else rows), (self.oversize[1] if columns == 0 else columns)
        if rows == 0 and self.lines is not None:
            rows = self.lines
        elif self.lines is not None and self.lines != rows:
            raise CodestreamError("the JPEG DNL segment contradicts the frame header's number of lines")
        if rows == 0 or columns == 0:
            raise CodestreamError("the JPEG frame header does not state the image size")
        return CodestreamHeader(kind, name, rows, columns, components, precision, scans=self.scans)


def _frame_header(segment: bytes) -> tuple[int, int, int, int]:
    """(rows, columns, components, precision) of a SOFn, SOF55 or DHP payload; components' entries checked."""
    if len(segment) < 6:
        raise CodestreamError("the JPEG frame header is too short")
    precision, rows, columns, components = struct.unpack(">BHHB", segment[:6])
    if components == 0 or len(segment) < 6 + 3 * components:
        raise CodestreamError("the JPEG frame header's component list is empty or cut short")
    if precision == 0:
        raise CodestreamError("the JPEG frame header's sample precision is 0")
    return rows, columns, components, precision


def _oversize_dimensions(segment: bytes) -> tuple[int, int]:
    """(rows, columns) of a JPEG-LS LSE ID 4 payload: Wxy, then height and width in Wxy bytes each."""
    if len(segment) < 2 or not 2 <= segment[1] <= 4 or len(segment) < 2 + 2 * segment[1]:
        raise CodestreamError("the JPEG-LS oversize-dimension segment (LSE ID 4) is malformed")
    width = segment[1]
    rows = int.from_bytes(segment[2:2 + width], "big")
    columns = int.from_bytes(segment[2 + width:2 + 2 * width], "big")
    return rows, columns


def read_j2k_header(data: bytes) -> CodestreamHeader:
    """The SIZ segment of a JPEG 2000 (or HTJ2K) codestream, bare or inside a JP2 file's `jp2c` box.

    Raises:
        CodestreamError: neither a J2K codestream (SOC then SIZ) nor a JP2 file holding one, a SIZ cut short,
            an empty image area, zero subsampling or tile size, or more tiles than a codestream can index.
    """
    if data.startswith(JP2_SIGNATURE):
        data = _jp2_codestream(data)
    if not data.startswith(J2K_SOC_SIZ):
        raise CodestreamError("the frame is not a JPEG 2000 codestream (no SOC and SIZ markers)")
    if len(data) < 4 + SIZ_FIXED_LENGTH:
        raise CodestreamError("the JPEG 2000 SIZ segment is cut short")
    (length, _capabilities, x_size, y_size, x_offset, y_offset, tile_width, tile_height, tile_x_offset,
     tile_y_offset, components) = struct.unpack(">HHIIIIIIIIH", data[4:4 + SIZ_FIXED_LENGTH])
    consistent = 1 <= components <= MAX_J2K_COMPONENTS and length == SIZ_FIXED_LENGTH + 3 * components
    if not consistent or len(data) < 4 + length:
        raise CodestreamError("the JPEG 2000 SIZ segment's component count and length disagree or it is cut short")
    if x_size <= x_offset or y_size <= y_offset:
        raise CodestreamError("the JPEG 2000 SIZ segment declares an empty image area")
    if tile_width == 0 or tile_height == 0 or tile_x_offset > x_offset or tile_y_offset > y_offset:
        raise CodestreamError("the JPEG 2000 SIZ segment's tiling is invalid")
    tiles = -(-(x_size - tile_x_offset) // tile_width) * -(-(y_size - tile_y_offset) // tile_height)
    if tiles > MAX_J2K_TILES:
        raise CodestreamError("the JPEG 2000 SIZ segment declares more tiles than a codestream can hold")
    entries = data[4 + SIZ_FIXED_LENGTH:4 + SIZ_FIXED_LENGTH + 3 * components]
    precisions, signed = [], False
    for index in range(components):
        depth, x_step, y_step = entries[3 * index:3 * index + 3]
        if x_step == 0 or y_step == 0:
            raise CodestreamError("the JPEG 2000 SIZ segment gives a component a subsampling of 0")
        precisions.append((depth & 0x7F) + 1)
        signed = signed or bool(depth & 0x80)
    return CodestreamHeader("jpeg2000", "SIZ", y_size - y_offset, x_size - x_offset, components, max(precisions),
                            signed=signed)


def _jp2_codestream(data: bytes) -> bytes:
    """The contents of the first `jp2c` box of a JP2 file."""
    position = 0
    while position + 8 <= len(data):
        length, box_type = struct.unpack(">I4s", data[position:position + 8])
        header_length = 8
        if length == 1:
            if position + 16 > len(data):
                break
            (length,) = struct.unpack(">Q", data[position + 8:position + 16])
            header_length = 16
        elif length == 0:
            length = len(data) - position
        if length < header_length:
            raise CodestreamError("a JP2 box length is invalid")
        if box_type == b"jp2c":
            return data[position + header_length:position + length]
        position += length
    raise CodestreamError("the JP2 file holds no codestream box (jp2c)")


def read_rle_header(data: bytes) -> CodestreamHeader:
    """The segment count of a DICOM RLE frame header (PS3.5 G.5), its offsets checked against the frame.

    Raises:
        CodestreamError: a header shorter than 64 bytes, 0 or more than 15 segments, or offsets that do not
            start at 64, do not increase or point past the frame.
    """
    if len(data) < RLE_HEADER_LENGTH:
        raise CodestreamError("the RLE frame is shorter than its 64-byte header")
    segments, *offsets = struct.unpack("<16I", data[:RLE_HEADER_LENGTH])
    if not 1 <= segments <= MAX_RLE_SEGMENTS:
        raise CodestreamError("the RLE header's segment count is not 1 to 15")
    used = offsets[:segments]
    if used[0] != RLE_HEADER_LENGTH or any(later <= earlier for earlier, later in zip(used, used[1:], strict=False)) \
            or used[-1] >= len(data):
        raise CodestreamError("the RLE header's segment offsets are out of order or past the end of the frame")
    return CodestreamHeader("rle", "RLE", None, None, None, None, segments=segments)


# Transfer syntax UID -> the reader of its frames' headers (the syntaxes pydicom's plugins decode).
JPEG_SYNTAXES = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                 "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")
J2K_SYNTAXES = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.92",
                "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                "1.2.840.10008.1.2.4.203")
RLE_SYNTAXES = ("1.2.840.10008.1.2.5",)
HEADER_READERS = {**dict.fromkeys(JPEG_SYNTAXES, read_jpeg_header), **dict.fromkeys(J2K_SYNTAXES, read_j2k_header),
                  **dict.fromkeys(RLE_SYNTAXES, read_rle_header)}


def read_codestream_header(data: bytes, transfer_syntax: str) -> CodestreamHeader:
    """The header of one encoded frame of `transfer_syntax`.

    Raises:
        CodestreamError: the frame's header is unreadable for its syntax.
        KeyError: no reader for that transfer syntax (see `HEADER_READERS`).
    """
    return HEADER_READERS[str(transfer_syntax)](bytes(data))


def inflated_size(data: bytes, limit: int) -> int:
    """Bytes a raw deflate stream (Deflated Explicit VR Little Endian) inflates to, counting stops past `limit`.

    Nothing is kept: the output is counted chunk by chunk, so a deflate bomb costs one chunk of memory.

    Raises:
        CodestreamError: the stream is not valid deflate data.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total, pending = 0, data
    try:
        while pending and total <= limit:
            total += len(inflater.decompress(pending, 1 << 20))
            pending = inflater.unconsumed_tail
        if total <= limit:
            total += len(inflater.flush())
    except zlib.error:
        raise CodestreamError("the deflated dataset is not valid deflate data") from None
    return total
