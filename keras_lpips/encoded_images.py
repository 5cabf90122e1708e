"""Encoded images (PNG, JPEG, BMP, GIF bytes) decoded in a TensorFlow graph as
`keras_lpips.images.read_image` decodes files: what a SavedModel's bytes signatures run.

The pixels are `read_image`'s, bit for bit, for what TensorFlow decodes: 8-bit PNG and JPEG
(grayscale, RGB, RGBA or palette; JPEG CMYK too, with libjpeg's accurate integer IDCT, as
Pillow), 1-, 2- and 4-bit PNG, 16-bit grayscale PNG (value / 65535, as `read_image`) and
16-bit colour PNG (the high byte / 255: Pillow reads those as 8-bit), BMP and GIF (the
first frame). Alpha is dropped, colours as stored. Two differences:

- EXIF orientation is not applied (`read_image` turns the image upright first): send
  upright pixels (`examples/serving_client.py` re-encodes such a file as PNG).
- WebP, TIFF and floating-point images are not decoded (the request fails).

A batch is a string tensor of shape (N,), its images of one size.
"""

import tensorflow as tf

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_START = b"\xff\xd8\xff"
# In a PNG, the IHDR chunk's bit depth and colour type bytes (after the 8-byte signature, the
# chunk's length and type, and the width and height).
_PNG_DEPTH_OFFSET = 24
_GRAY = 0


def decode_images(encoded, name="images"):
    """(N,) encoded images -> (N, H, W, 3) float32 RGB in [0, 1]; no image, or images of
    another size than the first, fail the request (InvalidArgumentError: "NAME is empty", ...)."""
    not_empty = tf.debugging.assert_positive(tf.size(encoded), message=f"{name} is empty: a request needs at least one image")
    with tf.control_dependencies([not_empty]):
        first_shape = tf.shape(decode_image(encoded[0]))

    def decode_one(data):
        image = decode_image(data)
        size_check = tf.debugging.assert_equal(
            tf.shape(image), first_shape, message="The images of one request must have one size (H, W)"
        )
        with tf.control_dependencies([size_check]):
            return tf.identity(image)

    return tf.map_fn(decode_one, encoded, fn_output_signature=tf.TensorSpec([None, None, 3], tf.float32))


def decode_image(data):
    """One encoded image (a scalar string) -> (H, W, 3) float32 RGB in [0, 1]."""
    is_png = tf.strings.substr(data, 0, len(_PNG_SIGNATURE)) == _PNG_SIGNATURE
    is_jpeg = tf.strings.substr(data, 0, len(_JPEG_START)) == _JPEG_START
    return tf.case(
        [(is_png, lambda: _decode_png(data)), (is_jpeg, lambda: _decode_jpeg(data))],
        default=lambda: _eight_bit(tf.io.decode_image(data, channels=3, expand_animations=False)),
    )


def _eight_bit(image):
    return tf.cast(image, tf.float32) / 255.0


def _decode_jpeg(data):
    # INTEGER_ACCURATE is libjpeg's JDCT_ISLOW, Pillow's choice (TensorFlow's default is faster, and differs).
    return _eight_bit(tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"))


def _decode_png(data):
    header = tf.io.decode_raw(tf.strings.substr(data, _PNG_DEPTH_OFFSET, 2), tf.uint8)
    image = tf.io.decode_png(data, channels=3, dtype=tf.uint16)  # lower depths scaled up (v * 257)
    gray16 = tf.logical_and(tf.equal(header[0], 16), tf.equal(header[1], _GRAY))
    return tf.cond(
        gray16,
        lambda: tf.cast(image, tf.float32) / 65535.0,  # Pillow's I;16, read_image's / 65535
        lambda: _eight_bit(tf.bitwise.right_shift(image, 8)),  # 8 bits or fewer, or 16-bit colour: Pillow's 8 bits
    )
