"""Encoded images (PNG, JPEG, BMP, WebP bytes) decoded in a TensorFlow graph as
`keras_lpips.images.read_image` decodes files: what a SavedModel's bytes signatures run.

The pixels are `read_image`'s, bit for bit, for what is decoded here: 8-bit PNG and JPEG
(grayscale, RGB, RGBA or palette; JPEG CMYK too, with libjpeg's accurate integer IDCT, as
Pillow), 1-, 2- and 4-bit PNG, 16-bit grayscale PNG (value / 65535, as `read_image`) and
16-bit colour PNG (the high byte / 255: Pillow reads those as 8-bit), 24- and 32-bit BMP, and
still WebP, lossless and lossy (Pillow and TensorFlow both decode it with libwebp). Alpha is
dropped, colours as stored. The differences:

- EXIF orientation is not applied (`read_image` turns the image upright first): send
  upright pixels (`examples/serving_client.py` re-encodes such a file as PNG).
- Refused, with the reason, where the pixels would differ or the header does not bound the
  decoding (send PNG instead): BMP of fewer than 24 bits per pixel (TensorFlow reads an 8-bit
  palette BMP's indices as grey levels and decodes no 1-, 4- or 16-bit one), compressed BMP or
  BMP of colour masks other than 8-bit BGR, OS/2 BMP; GIF (TensorFlow decodes every frame,
  and sizes its output by the largest frame, whatever the header's screen size); animated PNG
  (an acTL chunk before the pixels: libpng would decode its default image alone; even one of a
  single frame, which `read_image` reads) and animated WebP (`read_image` refuses a file of
  several frames too); TIFF, JPEG XL (which Pillow does not read) and floating-point images.

Nothing is decoded before every image of an input has been checked from its header: a format
decoded here, a whole header ("img0[1] is not a complete PNG: 20 bytes"), at most `max_pixels`
pixels (by default `MAX_PIXELS`, `read_image`'s limit, Pillow's: "img0[0] is too large to
decode: 20000 x 20000 = 400000000 pixels, over the limit of 178956970"), and the first image's
size. The N images of one input (one size, W x H) must also hold at most `max_pixels` together
(N x W x H), as much as one file `read_image` accepts, so a request of K inputs decodes at most
K x `max_pixels` pixels whatever its files declare. Data cut short within the pixels fails in
TensorFlow's decoder instead ("Invalid PNG data", "jpeg::Uncompress failed"), before any pixel
reaches the network.

That bounds decoding, not the network, which needs far more memory per pixel (VGG about 2.5 GB
per 1024 x 1024 pair, `keras_lpips.memory`): a 97 KB PNG of 10000 x 10000, within the limit,
asks it for 48 GB. A server for clients it does not trust wants a smaller `max_pixels`.

A batch is a string tensor of shape (N,), its images of one size.
"""

import tensorflow as tf

from keras_lpips.images import MAX_PIXELS

_HEAD = 66  # header bytes read, zero past the data's end (a BMP's colour masks end there)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_START = b"\xff\xd8\xff"
_BMP_START = b"BM"
_GIF_START = b"GIF8"
_RIFF, _WEBP = b"RIFF", b"WEBP"  # a WebP: RIFF, its size - 8, WEBP, then its first chunk

# PNG, big-endian: the signature, then chunks (length, type, data, CRC), IHDR first (width,
# height, bit depth, colour type, ...); libpng reads them up to the first IDAT before any pixel.
# An animated PNG (APNG) has an acTL chunk before it, which libpng skips.
_PNG_IHDR, _PNG_WIDTH, _PNG_HEIGHT, _PNG_DEPTH, _PNG_COLOUR = 12, 16, 20, 24, 25
_PNG_CHUNK_HEAD, _PNG_CHUNK_FRAME, _IDAT, _ACTL = 8, 12, b"IDAT", b"acTL"
_GRAY = 0
# JPEG: libjpeg reads the markers (FF, a code, then a 2-byte length unless standalone) up to
# the start of scan (SOS) for the size.
_SOS, _JPEG_STANDALONE = 0xDA, (0x01, *range(0xD0, 0xD8))
# BMP, little-endian: a 14-byte file header (the pixels' offset at 10), then the info header:
# its size, width, height (negative: rows stored top-down), planes, bits per pixel,
# compression; the colour masks of a BI_BITFIELDS file at 54 (inside a V4/V5 header, or after a
# 40-byte one). TensorFlow reads BGR or BGRA rows of 4-byte multiples, ignoring the rest.
_BMP_OFFSET, _BMP_INFO_SIZE, _BMP_WIDTH, _BMP_HEIGHT, _BMP_BITS, _BMP_COMPRESSION = 10, 14, 18, 22, 28, 30
_BMP_MASKS, _BMP_HEADER_END, _BMP_INFO_MIN = 54, 54, 40  # a BITMAPINFOHEADER or later; OS/2's has 12 bytes
_BMP_BITS_DECODED = (24, 32)
_BI_RGB, _BI_BITFIELDS = 0, 3
_BGR_MASKS = (0xFF0000, 0xFF00, 0xFF)  # red, green, blue
# WebP, little-endian: the RIFF size at 4, the first chunk's type at 12 and data at 20: VP8
# (lossy: a key frame's start code, then 14-bit width and height), VP8L (lossless: a signature
# byte, then width - 1 and height - 1 in 14 bits each) or VP8X (extended: flags, then the canvas
# width - 1 and height - 1 in 24 bits each).
_RIFF_SIZE, _WEBP_CHUNK, _WEBP_DATA, _WEBP_HEADER_END = 4, 12, 20, 30
_VP8_START_CODE, _VP8_WIDTH, _VP8_HEIGHT = (23, b"\x9d\x01\x2a"), 26, 28
_VP8L_SIGNATURE = 0x2F
_VP8X_ANIMATION, _VP8X_WIDTH, _VP8X_HEIGHT = 0x02, 24, 27

_WALKING, _COMPLETE, _CUT_SHORT, _ANIMATED = 0, 1, 2, 3  # where a header walk is (`_walk`)
_SEGMENTS_READ = 256  # a header walk gives up (leaving the verdict to the decoder) after these


def decode_images(encoded, name="images", max_pixels=MAX_PIXELS):
    """(N,) encoded images -> (N, H, W, 3) float32 RGB in [0, 1]. Before anything is decoded,
    the request fails (InvalidArgumentError naming `name`: "img0 is empty", "img0[2] is not a
    complete PNG: 20 bytes", ...) unless there is an image and every header is whole, of a
    format decoded here, within `max_pixels` (`read_image`'s limit by default) and of the
    first's size, and all N hold at most `max_pixels` pixels together."""
    count = tf.size(encoded, out_type=tf.int64)

    def checked_size(item):
        data, index = item
        return _checked_size(data, tf.strings.join([f"{name}[", tf.strings.as_string(index), "]"]), max_pixels)

    with tf.control_dependencies([_require([(count > 0, [f"{name} is empty: a request needs at least one image"])])]):
        sizes = tf.map_fn(checked_size, (encoded, tf.range(count)), fn_output_signature=tf.TensorSpec([2], tf.int64))
    (height, width), other = tf.unstack(sizes[0]), tf.argmax(tf.reduce_any(sizes != sizes[0], axis=1))
    pixels = count * width * height
    checks = [
        (
            tf.reduce_all(sizes == sizes[0]),
            ["The images of one request must have one size: ", f"{name}[0] is ", width, " x ", height,
             f", {name}[", other, "] is ", sizes[other][1], " x ", sizes[other][0]],
        ),  # fmt: skip
        (
            pixels <= max_pixels,
            [f"{name} is too large to decode: ", count, " images of ", width, " x ", height, " = ", pixels,
             f" pixels, over the limit of {max_pixels} for the images of one input"],
        ),  # fmt: skip
    ]
    with tf.control_dependencies([_require(checks)]):
        return tf.map_fn(_decode_image, encoded, fn_output_signature=tf.TensorSpec([None, None, 3], tf.float32))


def _checked_size(data, where, max_pixels):
    """(height, width) of one encoded image, from its header as its decoder reads them; the
    request fails (naming `where`) unless the header is whole, of a format decoded here, and
    the image within `max_pixels`."""
    size = tf.cast(tf.strings.length(data), tf.int64)
    head = _head(data)
    png, jpeg, bmp, webp, gif = _formats(head, size)
    checks = [
        (size > 0, [where, " is empty: 0 bytes"]),
        (png | jpeg | bmp | webp | gif, [where, " is not a PNG, JPEG, BMP or WebP file (the formats decoded here): ", size, " bytes"]),
        (~gif, [where, " is a GIF, which is not decoded here (TensorFlow decodes all its frames, whatever the header says): "
                "send PNG"]),
    ]
    heights, widths = [], []
    for is_format, read_header in ((png, _png_header), (jpeg, _jpeg_header), (bmp, _bmp_header), (webp, _webp_header)):
        (height, width), header_checks, data_checks = read_header(data, head, size, is_format, where)
        within = (width <= max_pixels) & (height <= max_pixels) & (width * height <= max_pixels)
        too_large = [where, " is too large to decode: ", width, " x ", height, " = ", width * height,
                     f" pixels, over the limit of {max_pixels}"]  # fmt: skip
        checks += [(~is_format | ok, parts) for ok, parts in (*header_checks, (within, too_large), *data_checks)]
        heights.append((is_format, height))
        widths.append((is_format, width))
    with tf.control_dependencies([_require(checks)]):
        return tf.stack([_pick(heights), _pick(widths)])


# Each reads one format's header: ((height, width), header checks, then checks of the data's
# length once the size is known), a check being `(ok, message parts)`.


def _png_header(data, head, size, is_png, where):
    state = _walk(is_png, data, size, len(_PNG_SIGNATURE), _PNG_CHUNK_HEAD, _png_chunk)
    checks = [
        (tf.not_equal(state, _CUT_SHORT), [where, " is not a complete PNG: ", size, " bytes"]),
        (_matches(head, size, _PNG_IHDR, b"IHDR"), [where, " is not a valid PNG: its first chunk is not IHDR"]),
        (tf.not_equal(state, _ANIMATED), [where, " is an animated PNG, which is not decoded here: send one frame, as PNG"]),
    ]
    return (_uint(head, _PNG_HEIGHT, 4, big_endian=True), _uint(head, _PNG_WIDTH, 4, big_endian=True)), checks, []


def _png_chunk(pos, chunk, size):
    length, kind = _uint(chunk, 0, 4, big_endian=True), chunk[4:8]
    outcomes = [
        (pos + _PNG_CHUNK_HEAD > size, (pos, _CUT_SHORT)),
        (tf.reduce_all(tf.equal(kind, list(_IDAT))), (pos, _COMPLETE)),
        (tf.reduce_all(tf.equal(kind, list(_ACTL))), (pos, _ANIMATED)),
    ]
    return outcomes, (pos + _PNG_CHUNK_FRAME + length, _WALKING)


def _jpeg_header(data, head, size, is_jpeg, where):
    complete = tf.not_equal(_walk(is_jpeg, data, size, len(b"\xff\xd8"), 4, _jpeg_marker), _CUT_SHORT)
    shape = tf.cond(complete, lambda: tf.image.extract_jpeg_shape(data, tf.int64)[:2], lambda: tf.zeros([2], tf.int64))
    return tuple(tf.unstack(shape)), [(complete, [where, " is not a complete JPEG: ", size, " bytes"])], []


def _jpeg_marker(pos, marker, size):
    code, length = marker[1], _uint(marker, 2, 2, big_endian=True)
    outcomes = [
        (pos + 2 > size, (pos, _CUT_SHORT)),
        (tf.not_equal(marker[0], 0xFF), (pos, _COMPLETE)),  # no marker where one is due: libjpeg's to judge
        (tf.equal(code, 0xFF), (pos + 1, _WALKING)),  # a fill byte
        (_is_in(code, _JPEG_STANDALONE), (pos + 2, _WALKING)),
        (pos + 4 > size, (pos, _CUT_SHORT)),
        (tf.equal(code, _SOS) & (pos + 2 + length <= size), (pos, _COMPLETE)),
        (tf.equal(code, _SOS), (pos, _CUT_SHORT)),
    ]
    return outcomes, (pos + 2 + length, _WALKING)


def _bmp_header(data, head, size, is_bmp, where):
    info_size, bits, compression = _uint(head, _BMP_INFO_SIZE, 4), _uint(head, _BMP_BITS, 2), _uint(head, _BMP_COMPRESSION, 4)
    height, width = tf.abs(_int32(head, _BMP_HEIGHT)), _int32(head, _BMP_WIDTH)
    masks = tf.stack([_uint(head, _BMP_MASKS + 4 * k, 4) for k in range(3)])
    bgr = tf.equal(compression, _BI_RGB) | (tf.equal(compression, _BI_BITFIELDS) & tf.reduce_all(tf.equal(masks, _BGR_MASKS)))
    expected = _uint(head, _BMP_OFFSET, 4) + (bits // 8 * width + 3) // 4 * 4 * height  # rows padded to 4 bytes
    header_checks = [
        (size >= _BMP_HEADER_END, [where, " is not a complete BMP: ", size, " bytes"]),
        ((width > 0) & (height > 0), [where, " is not a valid BMP: its width and height are ", width, " and ", height]),
        (info_size >= _BMP_INFO_MIN, [where, ": BMP files of a ", info_size, "-byte (OS/2) header are not decoded here: "
                                      "send PNG"]),  # fmt: skip
        (_is_in(bits, _BMP_BITS_DECODED), [where, ": BMP files of ", bits, " bits per pixel are not decoded here: send PNG"]),
        (bgr, [where, ": BMP files compressed or of colour masks other than 8-bit BGR are not decoded here: send PNG"]),
    ]
    data_checks = [(size >= expected, [where, " is not a complete BMP: ", size, " bytes of ", expected])]
    return (height, width), header_checks, data_checks


def _webp_header(data, head, size, is_webp, where):
    chunk = head[_WEBP_CHUNK : _WEBP_CHUNK + 4]
    vp8, vp8l, vp8x = (tf.reduce_all(tf.equal(chunk, list(kind))) for kind in (b"VP8 ", b"VP8L", b"VP8X"))
    key_frame = tf.equal(head[_WEBP_DATA] % 2, 0) & _matches(head, size, *_VP8_START_CODE)
    lossless = _uint(head, _WEBP_DATA + 1, 4)
    sizes = [
        (vp8, (_uint(head, _VP8_HEIGHT, 2) % 2**14, _uint(head, _VP8_WIDTH, 2) % 2**14)),
        (vp8l, ((lossless // 2**14) % 2**14 + 1, lossless % 2**14 + 1)),
        (vp8x, (_uint(head, _VP8X_HEIGHT, 3) + 1, _uint(head, _VP8X_WIDTH, 3) + 1)),  # a still image fills its canvas
    ]
    valid = (vp8 & key_frame) | (vp8l & tf.equal(head[_WEBP_DATA], _VP8L_SIGNATURE)) | vp8x
    animated = vp8x & tf.not_equal(tf.bitwise.bitwise_and(head[_WEBP_DATA], _VP8X_ANIMATION), 0)
    expected = _uint(head, _RIFF_SIZE, 4) + 8
    header_checks = [
        (size >= _WEBP_HEADER_END, [where, " is not a complete WebP: ", size, " bytes"]),
        (valid, [where, " is not a valid WebP: its first chunk is not VP8, VP8L or VP8X"]),
        (~animated, [where, " is an animated WebP, which is not decoded here: send one frame, as PNG"]),
    ]
    height, width = (_pick([(kind, hw[k]) for kind, hw in sizes]) for k in (0, 1))
    data_checks = [(size >= expected, [where, " is not a complete WebP: ", size, " bytes of ", expected])]
    return (height, width), header_checks, data_checks


def _walk(is_format, data, size, start, read, step):
    """The state in which the header of `data`, where `is_format`, ends: _COMPLETE (whole),
    _CUT_SHORT, or _ANIMATED (a PNG's acTL chunk); _CUT_SHORT where not `is_format`. Walks its
    segments from `start`: `step(pos, chunk, size)`, `chunk` the `read` bytes at `pos` (zero past
    the end), gives `(outcomes, otherwise)`, and the first `(condition, (next pos, state))`
    outcome whose condition holds, else `otherwise`, is the next step, until the state is no
    longer _WALKING. A header of more than `_SEGMENTS_READ` segments counts as whole: its decoder
    judges it."""

    def walk(pos, state):
        outcomes, (next_pos, next_state) = step(pos, _bytes(tf.strings.substr(data, tf.minimum(pos, size), read), read), size)
        next_state = tf.constant(next_state, tf.int64)
        for condition, (p, s) in reversed(outcomes):
            next_pos, next_state = tf.where(condition, p, next_pos), tf.where(condition, tf.constant(s, tf.int64), next_state)
        return next_pos, next_state

    def final_state():
        first = (tf.constant(start, tf.int64), tf.constant(_WALKING, tf.int64))
        _, state = tf.while_loop(lambda pos, state: tf.equal(state, _WALKING), walk, first, maximum_iterations=_SEGMENTS_READ)
        return tf.where(tf.equal(state, _WALKING), tf.constant(_COMPLETE, tf.int64), state)

    return tf.cond(is_format, final_state, lambda: tf.constant(_CUT_SHORT, tf.int64))


def _formats(head, size):
    """Whether the data is (or, cut short, begins as) a PNG, JPEG, BMP, WebP and GIF file, by
    the signatures TensorFlow's decoders recognise."""
    webp = _matches(head, size, 0, _RIFF) & _matches(head, size, 8, _WEBP)
    starts = [_matches(head, size, 0, start) for start in (_PNG_SIGNATURE, _JPEG_START, _BMP_START)]
    return [(size > 0) & kind for kind in (*starts, webp, _matches(head, size, 0, _GIF_START))]


def _decode_image(data):
    """One encoded image that `_checked_size` passed -> (H, W, 3) float32 RGB in [0, 1]."""
    png, jpeg, _, webp, _ = _formats(_head(data), tf.cast(tf.strings.length(data), tf.int64))
    return tf.case(
        [(png, lambda: _decode_png(data)), (jpeg, lambda: _decode_jpeg(data)), (webp, lambda: _decode_webp(data))],
        default=lambda: _eight_bit(tf.io.decode_bmp(data, channels=3)),  # BGR or BGRA (alpha dropped)
    )


def _eight_bit(image):
    return tf.cast(image, tf.float32) / 255.0


def _decode_jpeg(data):
    # INTEGER_ACCURATE is libjpeg's JDCT_ISLOW, Pillow's choice (TensorFlow's default is faster, and differs).
    return _eight_bit(tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"))


def _decode_webp(data):
    return _eight_bit(tf.io.decode_webp(data)[0, :, :, :3])  # one frame; RGB, or RGBA where the file has alpha


def _decode_png(data):
    head = _head(data)
    image = tf.io.decode_png(data, channels=3, dtype=tf.uint16)  # lower depths scaled up (v * 257)
    gray16 = tf.equal(head[_PNG_DEPTH], 16) & tf.equal(head[_PNG_COLOUR], _GRAY)
    return tf.cond(
        gray16,
        lambda: tf.cast(image, tf.float32) / 65535.0,  # Pillow's I;16, read_image's / 65535
        lambda: _eight_bit(tf.bitwise.right_shift(image, 8)),  # 8 bits or fewer, or 16-bit colour: Pillow's 8 bits
    )


def _head(data):
    """The first `_HEAD` bytes of `data` as int64, zero past its end: reading a header field of
    data cut short never fails (a substring past the end would, with the bytes in its message)."""
    return _bytes(tf.strings.substr(data, 0, _HEAD), _HEAD)


def _bytes(text, length):
    """A scalar string of at most `length` bytes -> its bytes as int64 (length,), zero-padded."""
    padded = tf.strings.substr(tf.strings.join([text, b"\0" * length]), 0, length)
    return tf.cast(tf.io.decode_raw(padded, tf.uint8), tf.int64)


def _uint(head, offset, length, big_endian=False):
    weights = [256**k for k in range(length)]
    return tf.reduce_sum(head[offset : offset + length] * (weights[::-1] if big_endian else weights))


def _int32(head, offset):
    value = _uint(head, offset, 4)
    return tf.where(value >= 2**31, value - 2**32, value)


def _matches(head, size, offset, magic):
    """Whether the data holds `magic` at `offset`, as far as it goes: data cut short within it
    still names its format."""
    beyond = tf.range(offset, offset + len(magic), dtype=tf.int64) >= size
    return tf.reduce_all(tf.equal(head[offset : offset + len(magic)], list(magic)) | beyond)


def _is_in(value, choices):
    return tf.reduce_any(tf.equal(value, list(choices)))


def _pick(choices):
    """The value of the first `(condition, value)` whose condition holds; 0 where none does."""
    picked = tf.constant(0, tf.int64)
    for condition, value in reversed(choices):
        picked = tf.where(condition, value, picked)
    return picked


def _require(checks):
    """An op that fails the request with the message of the first failing `(ok, parts)` check,
    `parts` joined (strings, string and integer tensors); messages are only formatted then. None
    holds a byte of the data: TensorFlow's Python error would fail to decode it (UnicodeDecodeError)."""

    def fail():
        message = tf.constant("")
        for ok, parts in reversed(checks):
            text = [p if isinstance(p, str) or p.dtype == tf.string else tf.strings.as_string(p) for p in parts]
            message = tf.where(ok, message, tf.strings.join(text))
        with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
            return tf.constant(False)

    passed = tf.reduce_all(tf.stack([ok for ok, _ in checks]))
    return tf.cond(passed, lambda: tf.constant(True), fail)
