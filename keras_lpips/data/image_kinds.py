"""Which decoder gives an image file `keras_lpips.images.read_image`'s pixels: TensorFlow's, or
only `read_image` itself. Read from the file's header (a PNG's chunk headers, a JPEG's markers up
to its first scan), once per file when a dataset is built, without decoding any pixel and
without TensorFlow.

`decode_kind(path)` is one of:

- `PNG_8_BIT`: a PNG of 1, 2, 4 or 8 bits per sample (grey, grey + alpha, RGB, RGBA, palette,
  with or without tRNS, interlaced or not), or of 16-bit colour (RGB, RGBA, grey + alpha), of
  which Pillow keeps the high byte, as TensorFlow's `decode_png(dtype=uint8)` does;
- `PNG_GREY_16`: a 16-bit grey PNG (Pillow's I;16, which `read_image` reads as value / 65535);
- `JPEG`: a baseline, extended or progressive Huffman JPEG of 8 bits per sample and 1 or 3
  components (grey, YCbCr, RGB), decoded by libjpeg in both, with the accurate integer IDCT
  Pillow uses;
- `BY_PILLOW`: every other file. Any other format (BMP, GIF, WebP, TIFF, PPM, ...: TensorFlow
  reads some of them otherwise, or not at all), whatever its name; a PNG or JPEG carrying an
  orientation Pillow finds (`Image.getexif`: a PNG's eXIf chunk, before or after the pixels, or
  its text chunks "Raw profile type exif" and "XML:com.adobe.xmp"; a JPEG's EXIF orientation
  other than 1, or XMP tiff:Orientation), which `read_image` applies; an animated PNG (acTL,
  which `read_image` refuses unless it has one frame); an MPO (a JPEG with an MPF segment);
  a CMYK or YCCK JPEG (TensorFlow converts them otherwise), an arithmetic-coded, lossless or
  12-bit one; an image of more pixels than `read_image` decodes (`MAX_PIXELS`); a PNG with a
  CRC error (libpng and Pillow check different chunks') or cut short after its pixels (Pillow
  reads it, libpng does not); anything malformed (chunks or markers that do not add up), so
  that `read_image` has the verdict. A PNG or JPEG cut short within its pixels keeps its kind:
  both decoders refuse it, TensorFlow's in its words ("Invalid PNG data, size 300");
- None: no regular file, or one that cannot be opened (the pipeline's read names the problem).

`decode_kinds(paths)` remembers each path's kind for the rest of the process (`fit` builds a
dataset per epoch). tests/test_data.py checks that each kind decodes to `read_image`'s pixels.
"""

import os
import stat
import struct
import zlib

from keras_lpips.images import MAX_PIXELS

BY_PILLOW, PNG_8_BIT, JPEG, PNG_GREY_16 = 0, 1, 2, 3
KINDS = (BY_PILLOW, PNG_8_BIT, JPEG, PNG_GREY_16)

_FIRST_READ = 65536  # bytes read at once: all of a small file, or its header
_MOST_SEGMENTS = 65536  # PNG chunks or JPEG segments walked before giving the file to Pillow

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (bit depth, colour type) -> kind; colour types 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA.
_PNG_KINDS = {
    **{(depth, 0): PNG_8_BIT for depth in (1, 2, 4, 8)},
    (16, 0): PNG_GREY_16,
    **{(depth, 3): PNG_8_BIT for depth in (1, 2, 4, 8)},
    **{(depth, colour): PNG_8_BIT for depth in (8, 16) for colour in (2, 4, 6)},
}
_PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")
# Text keywords in which Pillow finds EXIF (hex, "Raw profile type exif") or XMP, hence an orientation.
_PNG_ORIENTING_TEXT = (b"Raw profile type exif", b"XML:com.adobe.xmp")

_JPEG_START = b"\xff\xd8"
_JPEG_STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}  # markers without a length
_JPEG_SOF_DECODED = {0xC0, 0xC1, 0xC2}  # baseline, extended and progressive Huffman
_JPEG_SOF_OTHER = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_SOS, _JPEG_EOI, _APP1, _APP2 = 0xDA, 0xD9, 0xE1, 0xE2
_EXIF, _XMP, _MPF = b"Exif\x00\x00", b"http://ns.adobe.com/xap/1.0/\x00", b"MPF\x00"
_ORIENTATION = 0x0112


# Opening a FIFO without O_NONBLOCK would block until something writes to it.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


def decode_kind(path):
    """The kind (module docstring) of the image file at `path`, from its header."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except (OSError, ValueError):  # missing, unreadable; a NUL in the name
        return None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            return None  # a folder, a FIFO, a device
        return _kind(_Reader(fd, status.st_size))
    except OSError:
        return None
    finally:
        os.close(fd)


def decode_kinds(paths):
    """`decode_kind` of each of `paths`, a list; each file's header read once per process
    (the datasets of a run, built once per epoch, share them). A file changed since is
    classified again by `first_unreadable_image`, which names what then fails."""
    kinds = []
    for path in paths:
        kind = _KNOWN.get(path, _UNKNOWN)
        if kind is _UNKNOWN:
            if len(_KNOWN) >= _MOST_KNOWN:
                _KNOWN.clear()
            kind = _KNOWN[path] = decode_kind(path)
        kinds.append(kind)
    return kinds


_KNOWN, _UNKNOWN, _MOST_KNOWN = {}, object(), 4_000_000


class _Reader:
    """Bytes of an open file at any offset: from its first `_FIRST_READ` bytes, else read."""

    def __init__(self, fd, size):
        self.fd, self.size = fd, size
        self.head = os.read(fd, _FIRST_READ)

    def at(self, offset, size):
        if offset + size <= len(self.head):
            return self.head[offset : offset + size]
        if hasattr(os, "pread"):
            return os.pread(self.fd, size, offset)
        os.lseek(self.fd, offset, os.SEEK_SET)
        return os.read(self.fd, size)


def _kind(reader):
    if reader.head.startswith(_PNG_SIGNATURE):
        return _png_kind(reader)
    if reader.head.startswith(_JPEG_START):
        return _jpeg_kind(reader)
    return BY_PILLOW


def _png_kind(reader):
    """Walks the chunks (length, type, data, CRC) from IHDR to IEND, reading their headers and
    checking their CRCs (libpng and Pillow check different chunks'): of every chunk but the
    pixels' (IDAT) beyond the first `_FIRST_READ` bytes, which are not read. A file cut short
    within its pixels is refused by both decoders, and left to TensorFlow's; one cut after them
    (no IEND) Pillow reads, and libpng refuses."""
    offset, kind, pixels = len(_PNG_SIGNATURE), None, False
    for _ in range(_MOST_SEGMENTS):
        header = reader.at(offset, 8)
        if len(header) < 8:
            return BY_PILLOW if pixels or kind is None else kind
        length, chunk = struct.unpack(">I4s", header)
        if offset + 12 + length > reader.size:  # cut short
            complete = chunk == b"IDAT" and offset + 8 + length <= reader.size
            return BY_PILLOW if pixels or complete or kind is None else kind
        if chunk != b"IDAT" or offset + 12 + length <= len(reader.head):
            body = reader.at(offset + 4, length + 8)  # type, data, CRC
            if zlib.crc32(body[:-4]) != struct.unpack(">I", body[-4:])[0]:
                return BY_PILLOW
        pixels = pixels or (chunk == b"IDAT")
        if kind is None:  # the first chunk: IHDR
            data = reader.at(offset + 8, 13)
            if chunk != b"IHDR" or length != 13:
                return BY_PILLOW
            width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", data)
            kind = _PNG_KINDS.get((depth, colour), BY_PILLOW)
            if not 0 < width * height <= MAX_PIXELS or (compression, filtering) != (0, 0) or interlace not in (0, 1):
                return BY_PILLOW
        elif chunk in (b"acTL", b"eXIf"):
            return BY_PILLOW
        elif chunk in _PNG_TEXT and reader.at(offset + 8, min(length, 80)).split(b"\x00")[0] in _PNG_ORIENTING_TEXT:
            return BY_PILLOW
        elif chunk == b"IEND":
            return kind
        offset += 12 + length
    return BY_PILLOW


def _jpeg_kind(reader):
    """Walks the markers (FF, code, then a 2-byte length and data unless standalone) up to the
    first scan (SOS): Pillow reads no metadata past it, libjpeg nothing that changes the pixels."""
    offset, decoded = 2, None
    for _ in range(_MOST_SEGMENTS):
        marker = reader.at(offset, 2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return BY_PILLOW
        code = marker[1]
        if code == 0xFF:  # fill byte
            offset += 1
            continue
        if code in _JPEG_STANDALONE:
            offset += 2
            continue
        if code == _JPEG_EOI:
            return BY_PILLOW
        size = reader.at(offset + 2, 2)
        if len(size) < 2 or struct.unpack(">H", size)[0] < 2:
            return BY_PILLOW
        length = struct.unpack(">H", size)[0]
        data = reader.at(offset + 4, length - 2)
        if len(data) < length - 2:
            return BY_PILLOW
        if code == _JPEG_SOS:
            return JPEG if decoded else BY_PILLOW
        if code in _JPEG_SOF_OTHER:
            return BY_PILLOW
        if code in _JPEG_SOF_DECODED:
            if decoded is not None or len(data) < 6:
                return BY_PILLOW
            precision, height, width, components = struct.unpack(">BHHB", data[:6])
            if precision != 8 or components not in (1, 3) or not 0 < width * height <= MAX_PIXELS:
                return BY_PILLOW
            decoded = True
        elif code == _APP1 and data.startswith(_EXIF) and _exif_orientation(data[len(_EXIF) :]) != 1:
            return BY_PILLOW
        elif code == _APP1 and data.startswith(_XMP) and b"tiff:Orientation" in data:
            return BY_PILLOW
        elif code == _APP2 and data.startswith(_MPF):
            return BY_PILLOW
        offset += 2 + length
    return BY_PILLOW


def _exif_orientation(tiff):
    """The Orientation of IFD0 of the EXIF (TIFF) block `tiff`: 1 where it has none; None
    (not 1: the file goes to Pillow) where the block does not parse."""
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        (ifd,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
        for entry in range(count):
            start = ifd + 2 + 12 * entry
            tag, kind, _, value = struct.unpack(order + "HHI4s", tiff[start : start + 12])
            if tag == _ORIENTATION:
                return struct.unpack(order + "H", value[:2])[0] if kind == 3 else None
        return 1
    except (KeyError, struct.error):
        return None
