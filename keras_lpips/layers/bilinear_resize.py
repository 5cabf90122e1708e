"""Bilinear upsampling that matches torch's `F.interpolate(mode="bilinear", align_corners=False)`.

Torch's CPU kernel (`area_pixel_compute_scale`, `area_pixel_compute_source_index` in ATen's
`UpSample.h`) computes source coordinates in float32: `scale = float32(in) / out`, rounded once;
`src = scale * (i + 0.5) - 0.5`, which its vectorised (AVX2, AVX-512) builds contract into one
fused multiply-add, so also rounded once; `src` clamped at 0; `lower = floor(src)`, at most
`in - 1`; `lambda = src - lower`. The rounded `scale` is off by up to 6e-8 relative, an error
that grows with the output coordinate: the exact fractions `((2i + 1) in - out) / (2 out)`,
used here before, put LPIPS maps up to 9e-6 from the reference's at 384x512 and 5.9e-5 at
1080x1920 (squeeze, cosine), and a 67x120 -> 1080x1920 resize 1.4e-5 from torch's.

`_source_index` reproduces torch's float32 values bit for bit. With `scale = m * 2**-u`, `m` an
integer up to 2**24, `2 * src * 2**u = m * (2i + 1) - 2**u` is an integer; it is built exactly
in int32 from 12-bit pieces, as two halves that float32 holds exactly, and the one float32 sum
of the two (times powers of two) is torch's one rounding. Integer arithmetic is associative, so
graph rewriters cannot move the result, as Grappler did with a float32 error-free (TwoSum)
version by regrouping its sums; nor can fused multiply-adds, every float product being exact.
No float64 or int64 (JAX without x64, TFLite), and no float constant that float16 cannot hold
(fp16 TFLite stores every float constant as float16). XLA turns a division by a constant into
a multiplication by its reciprocal, which would move `scale`, but XLA's shapes are static and
the whole computation is then constant-folded with a true division.

Measured: the weights equal those of torch 2.14's `F.interpolate` (AVX-512 build) for every size
tried (sides up to 300 upsampled to up to 4096; layer-map sides of 1080x1920 and 2160x3840
images) under Keras' TensorFlow (eager; graph with unknown sizes; XLA with static ones), JAX
(jit) and PyTorch backends, in TFLite (float32 and fp16) and in ONNX. The resize is then two
matrix products, summed in another order than torch's loop: within 1-2 float32 ulps of torch's
(4.8e-7 on values up to 3), and LPIPS maps at 384x512 and 1080x1920 within 8.4e-7 of the
reference's. A torch built without vectorisation (`ATEN_CPU_CAPABILITY=default`) rounds twice
and differs in the last bit of some weights.
"""

from keras import ops

_POWERS_OF_TWO = [2**j for j in range(31)]  # int32: as float32 constants fp16 TFLite would overflow them
_HALF = 2**12  # pieces of 12 bits: their products fit in int32
_WORD = 2**24  # int32 halves below 2**24: exact in float32


def _power_of_two(exponent):
    """2**exponent for an int32 tensor in [0, 30], as int32."""
    return ops.take(ops.convert_to_tensor(_POWERS_OF_TWO, dtype="int32"), exponent)


def _source_index(in_size, out_size):
    """torch's float32 `max(scale * (i + 0.5) - 0.5, 0)`, `scale = in / out`, rounded once.

    Exact for `out_size < 2**23` and `in_size / out_size` in `[2**-23, 2**23]`.
    """
    n_in, n_out = ops.cast(in_size, "int32"), ops.cast(out_size, "int32")
    scale = ops.cast(n_in, "float32") / ops.cast(n_out, "float32")
    # e = floor(log2(in / out)), counted in integers: 2**e <= scale <= 2**(e+1) (rounding may reach it).
    powers = ops.convert_to_tensor(_POWERS_OF_TWO, dtype="int32")
    e = ops.sum(ops.cast(ops.floor_divide(n_in, powers[1:]) >= n_out, "int32")) - ops.sum(
        ops.cast(ops.floor_divide(n_out - 1, powers) >= n_in, "int32")
    )
    # scale = mantissa * 2**-u, u = 23 - e in [0, 46], mantissa an integer in [2**23, 2**24].
    u = 23 - e
    u_a = ops.minimum(u, 23)
    two_u = ops.cast(_power_of_two(u_a), "float32") * ops.cast(_power_of_two(u - u_a), "float32")
    mantissa = ops.cast(scale * two_u, "int32")
    # 2 * src * 2**u = mantissa * (2i + 1) - 2**u =: n, an integer below 2**48, built as
    # high * 2**24 + low (0 <= low < 2**24, |high| < 2**24) from 12-bit pieces.
    twice_dst = 2 * ops.arange(out_size, dtype="int32") + 1  # 2 * (i + 0.5)
    m_hi, m_lo = ops.floor_divide(mantissa, _HALF), ops.mod(mantissa, _HALF)
    k_hi, k_lo = ops.floor_divide(twice_dst, _HALF), ops.mod(twice_dst, _HALF)
    middle = m_hi * k_lo + m_lo * k_hi
    one_hi = ops.where(u >= 24, _power_of_two(ops.maximum(u - 24, 0)), 0)  # 2**u = one_hi * 2**24 + one_lo
    one_lo = ops.where(u >= 24, 0, _power_of_two(u_a))
    low = ops.mod(middle, _HALF) * _HALF + m_lo * k_lo - one_lo
    high = m_hi * k_hi + ops.floor_divide(middle, _HALF) - one_hi + ops.floor_divide(low, _WORD)
    low = ops.mod(low, _WORD)
    # src = n * 2**(-u - 1) = high * 2**(23 - u) + low * 2**(-u - 1): both products are exact
    # (powers of two), so their float32 sum is n rounded once, as torch's fused multiply-add.
    high_unit = ops.cast(_power_of_two(ops.maximum(23 - u, 0)), "float32") / ops.cast(
        _power_of_two(ops.maximum(u - 23, 0)), "float32"
    )
    src = ops.cast(high, "float32") * high_unit + ops.cast(low, "float32") * (0.5 / two_u)
    return ops.maximum(src, 0.0)


def _interpolation_matrix(in_size, out_size):
    """(out_size, in_size) weights of torch's half-pixel-centre linear interpolation."""
    src = _source_index(in_size, out_size)
    lower = ops.minimum(ops.cast(src, "int32"), in_size - 1)  # src >= 0: truncation is floor
    frac = src - ops.cast(lower, "float32")  # exact, torch's lambda
    upper = ops.minimum(lower + 1, in_size - 1)
    lower_hot = ops.one_hot(lower, in_size, dtype="float32")
    upper_hot = ops.one_hot(upper, in_size, dtype="float32")
    return lower_hot * (1.0 - frac)[:, None] + upper_hot * frac[:, None]


def bilinear_resize(maps, height, width):
    """Resizes `(N, h, w)` maps to `(N, height, width)`, as torch's bilinear upsample."""
    in_h, in_w = ops.shape(maps)[1], ops.shape(maps)[2]
    rows = _interpolation_matrix(in_h, height)
    cols = _interpolation_matrix(in_w, width)
    # Both products as batched matmuls (cols broadcast over the batch): no reshape
    # with several unknown sides, which TFLite cannot convert.
    return ops.matmul(ops.matmul(rows, maps), ops.transpose(cols)[None])
