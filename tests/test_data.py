"""The BAPPS data half: reader errors, tf.data pipelines, the synthetic set, verification,
download and safe extraction (against a server on 127.0.0.1 only), and the `data` CLI."""

import hashlib
import io
import re
import struct
import tarfile
import zlib

import numpy as np
import pytest
from PIL import Image

from keras_lpips.data import (
    JNDRecord,
    TwoAFCRecord,
    distortions,
    download,
    list_jnd,
    list_twoafc,
    safe_extract,
    synthesize,
    verify_dataset,
)
from keras_lpips.data.synth_patches import procedural_patch
from keras_lpips.errors import ChecksumError, DataError, DownloadError, InputError, UnsafeFileError
from tests.bapps_fixture import make_tiny_bapps
from tests.helpers import closed_port, one_error_line, run_cli


@pytest.fixture
def tiny(tmp_path):
    return make_tiny_bapps(tmp_path / "bapps")


def read_png(path):
    return np.asarray(Image.open(path).convert("RGB"))


def tree(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- reader ------------------------------------------------------------------------------------


def test_list_twoafc_and_jnd(tiny):
    train = list_twoafc(tiny, "train")
    val = list_twoafc(tiny, "val", "traditional")
    jnd = list_jnd(tiny, ["traditional"])
    assert (len(train), len(val), len(jnd)) == (6, 4, 4)
    assert all(isinstance(r, TwoAFCRecord) for r in train) and all(isinstance(r, JNDRecord) for r in jnd)
    first = val[0]
    assert first.ref.name == first.p0.name == first.p1.name == "000000.png"
    assert (first.ref.parent.name, first.p0.parent.name, first.p1.parent.name) == ("ref", "p0", "p1")
    assert first.subset == "traditional" and jnd[0].subset == "traditional"
    judges = [r.judge for r in train + val]
    assert all(0 <= j <= 1 for j in judges) and {round(j * 5) / 5 for j in judges} == set(judges)
    assert [r.ref.name for r in train] == sorted(r.ref.name for r in train)


def test_root_may_be_the_folder_holding_dataset(tiny):
    parent = tiny.parent
    (parent / "bapps").rename(parent / "dataset")
    assert len(list_twoafc(parent, "val")) == 4
    assert len(list_twoafc(parent / "dataset", "val")) == 4
    assert len(list_twoafc(parent / "dataset" / "2afc", "val")) == 4


def test_missing_judge_names_the_file(tiny):
    (tiny / "2afc/val/traditional/judge/000002.npy").unlink()
    with pytest.raises(InputError, match=r"first missing file: \S*judge/000002\.npy$") as caught:
        list_twoafc(tiny, "val")
    assert "2afc/val/traditional has mismatched folders (ref 4, p0 4, p1 4, judge 3)" in str(caught.value)


def test_count_mismatch_names_subset_counts_and_first_unmatched_file(tiny):
    (tiny / "2afc/train/traditional/p0/000003.png").unlink()
    (tiny / "2afc/train/traditional/p0/000005.png").unlink()
    with pytest.raises(InputError) as caught:
        list_twoafc(tiny, "train")
    message = str(caught.value)
    assert "2afc/train/traditional" in message and "ref 6, p0 4, p1 6, judge 6" in message
    assert re.search(r"first missing file: \S*p0/000003\.png$", message)


def test_judge_outside_unit_interval_names_the_file(tiny):
    np.save(tiny / "2afc/val/traditional/judge/000001.npy", np.array([1.5]))
    with pytest.raises(InputError, match=r"judge file \S*judge/000001\.npy holds 1\.5, outside \[0, 1\]"):
        list_twoafc(tiny, "val")


def test_nan_or_multi_element_judge_is_refused(tiny):
    np.save(tiny / "2afc/val/traditional/judge/000001.npy", np.array([np.nan]))
    with pytest.raises(InputError, match=r"000001\.npy holds nan"):
        list_twoafc(tiny, "val")
    np.save(tiny / "2afc/val/traditional/judge/000001.npy", np.array([0.1, 0.2]))
    with pytest.raises(InputError, match=r"000001\.npy should hold one number"):
        list_twoafc(tiny, "val")


@pytest.mark.parametrize(
    "array",
    [np.array([0.4]), np.array([0.4], np.float32), np.array(0.4), np.array([[[0.4]]]), np.array([0.4], ">f8"),
     np.array([1], np.uint8), np.asfortranarray(np.full((1, 1), 0.4))],
    ids=["f8", "f4", "scalar", "1x1x1", "big-endian", "uint8", "fortran"],
)  # fmt: skip
def test_judge_files_in_any_simple_npy_form(tiny, array):
    """The fast header parser and np.load agree (np.load takes what the parser does not)."""
    path = tiny / "2afc/val/traditional/judge/000000.npy"
    np.save(path, array)
    assert list_twoafc(tiny, "val")[0].judge == pytest.approx(float(array.ravel()[0]))


def test_unreadable_npy_names_the_file(tiny):
    (tiny / "jnd/val/traditional/same/000002.npy").write_bytes(b"not a numpy file")
    with pytest.raises(InputError, match=r"Cannot read same file \S*same/000002\.npy"):
        list_jnd(tiny)


def test_empty_subset(tiny):
    for name in ("ref", "p0", "p1", "judge"):
        (tiny / "2afc/val/cnn" / name).mkdir(parents=True)
    with pytest.raises(InputError, match=r"Subset 2afc/val/cnn .* is empty"):
        list_twoafc(tiny, "val", ["traditional", "cnn"])
    (tiny / "2afc/val/superres").mkdir()
    with pytest.raises(InputError, match=r"Subset 2afc/val/superres .* is empty"):
        list_twoafc(tiny, "val", "superres")


def test_missing_subset_lists_the_ones_there(tiny):
    (tiny / "2afc/val/color").mkdir()
    with pytest.raises(InputError, match=r"2afc/val/deblur not found .*subsets there: color, traditional"):
        list_twoafc(tiny, "val", ["traditional", "deblur"])
    with pytest.raises(InputError, match=r"jnd/val/cnn not found .*subsets there: traditional"):
        list_jnd(tiny, ["cnn"])


def test_not_a_bapps_root(tmp_path):
    with pytest.raises(InputError, match="does not look like a BAPPS dataset"):
        list_twoafc(tmp_path, "val")
    with pytest.raises(InputError, match="Unknown 2AFC split 'test'"):
        list_twoafc(tmp_path, "test")


# --- tf.data pipeline --------------------------------------------------------------------------


def labelled_records(tiny):
    """The 6 train triplets with judges 0, 0.1, ... (to identify each element in a batch)."""
    return [TwoAFCRecord(r.ref, r.p0, r.p1, i / 10) for i, r in enumerate(list_twoafc(tiny, "train"))]


def judges_of(dataset):
    return [round(float(j), 3) for batch in dataset for j in batch["judge"].numpy()]


def test_twoafc_batches_have_documented_shapes_ranges_and_pixels(tiny):
    from keras_lpips.data import twoafc_dataset

    records = list_twoafc(tiny, "train")
    batches = list(twoafc_dataset(records, batch_size=4, shuffle=False, deterministic=True))
    assert [int(b["judge"].shape[0]) for b in batches] == [4, 2]
    first = batches[0]
    for key in ("ref", "p0", "p1"):
        assert first[key].dtype.name == "float32" and tuple(first[key].shape) == (4, 64, 64, 3)
        assert -1.0 <= float(first[key].numpy().min()) and float(first[key].numpy().max()) <= 1.0
    expected = read_png(records[1].p1).astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(first["p1"].numpy()[1], expected, atol=1e-6)
    np.testing.assert_allclose(first["judge"].numpy(), [r.judge for r in records[:4]])


def test_input_range_load_size_and_drop_remainder(tiny):
    from keras_lpips.data import twoafc_dataset

    records = list_twoafc(tiny, "train")
    dataset = twoafc_dataset(records, batch_size=4, load_size=32, input_range=(0, 255), shuffle=False, deterministic=True,
                             drop_remainder=True)  # fmt: skip
    batches = list(dataset.repeat(3))  # 6 triplets: one full batch an epoch
    assert len(batches) == 3 and all(tuple(b["ref"].shape) == (4, 32, 32, 3) for b in batches)
    ref = batches[0]["ref"].numpy()
    assert ref.max() > 1.5 and ref.min() >= 0 and ref.max() <= 255
    source = read_png(records[0].ref).astype(np.float32)
    np.testing.assert_allclose(ref[0].mean(), source.mean(), atol=2.0)  # antialiased: mean kept


def test_other_formats_and_sizes_decode_like_pillow(tiny, tmp_path):
    """BMP/JPEG/grey/RGBA go through decode_image; a 128x96 PNG is resized like PIL's bilinear."""
    from keras_lpips.data import twoafc_dataset

    rng = np.random.default_rng(1)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((128, 96), Image.BILINEAR))
    Image.fromarray(smooth[:64, :64]).save(tmp_path / "ref.bmp")
    Image.fromarray(smooth[:64, :64, 0]).save(tmp_path / "p0.jpg", quality=95)
    Image.fromarray(np.dstack([smooth, smooth[..., :1]])).save(tmp_path / "p1.png")
    record = TwoAFCRecord(tmp_path / "ref.bmp", tmp_path / "p0.jpg", tmp_path / "p1.png", 0.5)
    batch = next(iter(twoafc_dataset([record], batch_size=1, input_range=(0, 255), shuffle=False)))
    np.testing.assert_array_equal(batch["ref"].numpy()[0], smooth[:64, :64])
    p0 = batch["p0"].numpy()[0]
    assert np.abs(p0 - smooth[:64, :64, :1]).mean() < 3 and (p0[..., 0] == p0[..., 2]).all()
    pil = np.asarray(Image.fromarray(smooth).resize((64, 64), Image.BILINEAR), dtype=np.float32)
    np.testing.assert_array_equal(batch["p1"].numpy()[0], pil)


@pytest.mark.parametrize("side, load_size", [(64, 32), (64, 224), (64, 97), (50, 64), (131, 64), (7, 31)])
def test_resized_pixels_are_the_references(tmp_path, side, load_size):
    """At any load size the pixels are `transforms.Resize(S)`'s on a PIL image (Pillow's bilinear
    resize of the RGB image) exactly: down, up, odd ratios; read with input_range (0, 255)."""
    from keras_lpips.data import jnd_dataset

    rng = np.random.default_rng(side * 1000 + load_size)
    noise = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "p0.png")
    Image.fromarray(255 - noise).save(tmp_path / "p1.png")
    record = JNDRecord(tmp_path / "p0.png", tmp_path / "p1.png", 1.0)
    batch = next(iter(jnd_dataset([record], batch_size=1, load_size=load_size, input_range=(0, 255), shuffle=False)))
    for key, pixels in (("p0", noise), ("p1", 255 - noise)):
        reference = np.asarray(Image.open(tmp_path / f"{key}.png").convert("RGB").resize((load_size,) * 2, Image.BILINEAR))
        np.testing.assert_array_equal(batch[key].numpy()[0], reference.astype(np.float32))


def test_same_seed_same_order_each_epoch_reshuffled(tiny):
    from keras_lpips.data import twoafc_dataset

    records = labelled_records(tiny)
    make = lambda seed: twoafc_dataset(records, batch_size=4, seed=seed, deterministic=True)  # noqa: E731
    a, b = make(0), make(0)
    epoch1, epoch2 = judges_of(a), judges_of(a)
    assert epoch1 == judges_of(b) and epoch2 == judges_of(b)
    assert sorted(epoch1) == sorted(epoch2) == [i / 10 for i in range(6)]
    assert epoch1 != epoch2  # reshuffled each epoch
    assert judges_of(make(1)) != epoch1
    for deterministic in (True, False):  # unshuffled: the records' order either way
        unshuffled = twoafc_dataset(records, batch_size=4, shuffle=False, deterministic=deterministic)
        assert judges_of(unshuffled) == [i / 10 for i in range(6)]


def test_options_deterministic_and_data_sharding(tiny):
    import tensorflow as tf

    from keras_lpips.data import twoafc_dataset

    records = list_twoafc(tiny, "train")
    for deterministic in (True, False):
        options = twoafc_dataset(records, deterministic=deterministic).options()
        assert options.deterministic is deterministic
        assert options.experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA


def test_data_sharding_gives_each_worker_a_disjoint_share(tiny):
    """The rewrite `tf.distribute` applies per worker (MultiWorkerMirroredStrategy), on a fresh
    pipeline per worker as in separate processes: same seed, disjoint shares, nothing lost.
    (deterministic=True, as documented: out-of-order decoding could differ between workers.)"""
    distribute = pytest.importorskip("tensorflow.python.data.experimental.ops.distribute")
    if not hasattr(distribute, "_AutoShardDataset"):
        pytest.skip("this TensorFlow has no _AutoShardDataset")
    from keras_lpips.data import twoafc_dataset

    records = labelled_records(tiny)
    shares = [
        judges_of(distribute._AutoShardDataset(twoafc_dataset(records, 2, seed=3, deterministic=True), 2, index, 2))
        for index in range(2)
    ]
    assert shares[0] and shares[1] and not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == [i / 10 for i in range(6)]


def test_cache_gives_the_same_elements(tiny, tmp_path):
    from keras_lpips.data import twoafc_dataset

    records = labelled_records(tiny)
    plain = twoafc_dataset(records, batch_size=3, seed=5, deterministic=True)
    cached = twoafc_dataset(records, batch_size=3, seed=5, deterministic=True, cache=True)
    on_disk = twoafc_dataset(records, batch_size=3, shuffle=False, deterministic=True, cache=str(tmp_path / "cache"))
    for _ in range(2):
        assert sorted(judges_of(cached)) == sorted(judges_of(plain))
    first = next(iter(on_disk))
    np.testing.assert_allclose(first["ref"].numpy()[0], read_png(records[0].ref) / 127.5 - 1, atol=1e-6)


def test_jnd_dataset(tiny):
    from keras_lpips.data import jnd_dataset

    records = list_jnd(tiny)
    batch = next(iter(jnd_dataset(records, batch_size=4, shuffle=False, deterministic=True, input_range=(0, 1))))
    assert sorted(batch) == ["p0", "p1", "same"]
    assert tuple(batch["p0"].shape) == (4, 64, 64, 3) and tuple(batch["same"].shape) == (4,)
    np.testing.assert_allclose(batch["same"].numpy(), [r.same for r in records])
    assert 0 <= batch["p1"].numpy().min() and batch["p1"].numpy().max() <= 1


def test_dataset_argument_errors(tiny):
    from keras_lpips.data import twoafc_dataset

    records = list_twoafc(tiny, "train")
    with pytest.raises(InputError, match="No records"):
        twoafc_dataset([])
    with pytest.raises(InputError, match="batch_size"):
        twoafc_dataset(records, batch_size=0)
    with pytest.raises(InputError, match="input_range"):
        twoafc_dataset(records, input_range=(1, -1))


def test_a_decode_error_while_iterating_names_the_image(tiny):
    import tensorflow as tf

    from keras_lpips.data import twoafc_dataset
    from keras_lpips.data.pipeline import first_unreadable_image, iterate_naming_bad_images, naming_bad_images

    records = list_twoafc(tiny, "train")
    assert first_unreadable_image([r.ref for r in records]) is None
    bad = records[4].p1
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    dataset = twoafc_dataset(records, batch_size=2, shuffle=False)
    with pytest.raises(tf.errors.InvalidArgumentError):  # TensorFlow's own error does not name it
        list(dataset)
    message = f"Cannot decode image {re.escape(str(bad))}: Invalid PNG data, size 200 \\(keras-lpips data verify"
    with pytest.raises(InputError, match=message):
        with naming_bad_images(records, tiny):
            list(dataset)
    with pytest.raises(InputError, match=f"^Cannot decode image {re.escape(str(bad))}: Invalid PNG data, size 200$"):
        list(iterate_naming_bad_images(dataset, records))
    assert first_unreadable_image([records[0].ref, tiny / "gone.png"]) == (str(tiny / "gone.png"), f"No such image file: {tiny / 'gone.png'}")
    with pytest.raises(tf.errors.InvalidArgumentError, match="unrelated"):  # errors no image explains pass through
        with naming_bad_images(records[:2]):
            raise tf.errors.InvalidArgumentError(None, None, "unrelated")


# --- every image file read as read_image reads it -----------------------------------------------

SIDE = 32  # square: the pipeline's load size keeps every pixel


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _raw_png(samples, depth, colour, before=b"", after=b""):
    """A PNG of `samples` (H, W[, C]) at `depth` bits, with chunks `before` and `after` its pixels."""
    height, width = samples.shape[:2]
    rows = samples.reshape(height, -1)
    if depth < 8:
        rows = np.packbits(np.unpackbits(rows.astype(np.uint8)[..., None], axis=-1)[..., 8 - depth :].reshape(height, -1), axis=-1)
    data = rows.astype(">u2" if depth == 16 else np.uint8).tobytes()
    stride = len(data) // height
    raw = b"".join(b"\x00" + data[i * stride : (i + 1) * stride] for i in range(height))
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + before + _chunk(b"IDAT", zlib.compress(raw)) + after + _chunk(b"IEND", b"")


def _exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _write_odd_images(folder):
    """{name: path} of files `read_image` reads that TensorFlow's decoders read otherwise, or not
    at all, or that the pipeline read otherwise before: all SIDE x SIDE, asymmetric (a quarter
    turn shows)."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    rgb = np.stack([x * 8, y * 4 + x, rng.integers(0, 256, (SIDE, SIDE))], axis=-1).astype(np.uint8)
    image, grey16 = Image.fromarray(rgb), (y * 2048 + x * 61).astype(np.uint16)
    files = {}

    def save(name, **options):
        files[name] = folder / name
        image.save(files[name], **options)

    def write(name, data):
        files[name] = folder / name
        files[name].write_bytes(data)

    save("plain.png")
    save("plain.jpg", quality=90)  # libjpeg's accurate IDCT, as Pillow: TensorFlow's default differs
    save("progressive.jpg", quality=90, progressive=True)
    image.convert("L").save(folder / "grey.jpg", quality=90)
    files["grey.jpg"] = folder / "grey.jpg"
    save("exif_rotated.jpg", quality=95, exif=_exif(6))
    save("exif_rotated.png", exif=_exif(6))  # eXIf before the pixels
    exif = _exif(8).tobytes()
    write("exif_after_pixels.png", _raw_png(rgb, 8, 2, after=_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif") else exif)))
    save("xmp_rotated.jpg", quality=95, xmp=b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>')
    image.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    files["cmyk.jpg"] = folder / "cmyk.jpg"
    cmyk = files["cmyk.jpg"].read_bytes()
    adobe = cmyk.index(b"\xff\xee")  # without its Adobe segment: Pillow reads the inks as stored, TensorFlow inverted
    write("cmyk_no_adobe.jpg", cmyk[:adobe] + cmyk[adobe + 2 + struct.unpack(">H", cmyk[adobe + 2 : adobe + 4])[0] :])
    write("grey16.png", _raw_png(grey16, 16, 0))  # read_image: value / 65535; TensorFlow's uint8: the high byte
    write("rgb16.png", _raw_png(np.dstack([grey16, 65535 - grey16, grey16 // 3]), 16, 2))
    write("grey2.png", _raw_png(rgb[..., 2] >> 6, 2, 0))
    write("palette4.png", _raw_png(rgb[..., 0] >> 4, 4, 3, before=_chunk(b"PLTE", rng.integers(0, 256, 48, dtype=np.uint8).tobytes())))
    image.convert("P", palette=Image.Palette.ADAPTIVE, colors=20).save(folder / "palette.png", transparency=3)
    files["palette.png"] = folder / "palette.png"
    for mode in ("LA", "1"):
        files[f"{mode}.png"] = folder / f"{mode}.png"
        image.convert(mode).save(files[f"{mode}.png"])
    write("webp_named.png", _encoded(image, "WEBP", lossless=True))  # a WebP named .png: TensorFlow's decode_png gave 4-D
    write("gif_named.png", _encoded(image.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"))
    write("jpeg_named.png", _encoded(image, "JPEG", quality=90))
    save("lossy.webp", quality=80)
    image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(folder / "palette.bmp")
    files["palette.bmp"] = folder / "palette.bmp"
    for name, pixels in (("grey16.tiff", grey16), ("float.tiff", (grey16 / 65535).astype(np.float32))):
        files[name] = folder / name
        Image.fromarray(pixels).save(files[name])
    write("grey16.pgm", b"P5 %d %d 65535\n" % (SIDE, SIDE) + grey16.astype(">u2").tobytes())
    data = bytearray(_raw_png(rgb, 8, 2))
    at = data.index(b"IDAT")
    data[at + 4 + struct.unpack(">I", data[at - 4 : at])[0]] ^= 0xFF  # a CRC error in the pixels: Pillow reads them
    write("pixels_crc_error.png", bytes(data))
    return files


def _encoded(image, format, **options):
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


ODD_IMAGES = (
    "plain.png plain.jpg progressive.jpg grey.jpg exif_rotated.jpg exif_rotated.png exif_after_pixels.png xmp_rotated.jpg "
    "cmyk.jpg cmyk_no_adobe.jpg grey16.png rgb16.png grey2.png palette4.png palette.png LA.png 1.png webp_named.png "
    "gif_named.png jpeg_named.png lossy.webp palette.bmp grey16.tiff float.tiff grey16.pgm "
    "pixels_crc_error.png"
).split()


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    return _write_odd_images(tmp_path_factory.mktemp("odd_images"))


def _read_images_rounded(path):
    from keras_lpips.images import read_image

    return np.round(read_image(path) * 255)


@pytest.mark.parametrize("name", ODD_IMAGES)
def test_dataset_pixels_are_read_images(odd_images, name):
    """Each file alone (a dataset of one kind) gives `read_image`'s pixels x 255, rounded: its
    own exactly for 8-bit files; EXIF and XMP orientation applied, CMYK converted as Pillow does,
    16-bit grey as value / 65535, a WebP, GIF or JPEG named .png read as what it is."""
    from keras_lpips.data import jnd_dataset

    path = odd_images[name]
    batch = next(iter(jnd_dataset([JNDRecord(path, path, 1.0)], batch_size=1, load_size=SIDE, input_range=(0, 255), shuffle=False)))
    expected = _read_images_rounded(path)
    assert expected.shape == (SIDE, SIDE, 3)
    np.testing.assert_array_equal(batch["p0"].numpy()[0], expected)
    np.testing.assert_array_equal(batch["p1"].numpy()[0], expected)


def test_a_dataset_of_files_of_every_kind_reads_each_as_read_image(odd_images):
    """Files of several kinds in one dataset (each decoded by its own decoder), shuffled and
    cached: the same pixels."""
    from keras_lpips.data import twoafc_dataset

    names = ODD_IMAGES
    records = [TwoAFCRecord(odd_images[n], odd_images["plain.png"], odd_images[names[-1 - i]], i) for i, n in enumerate(names)]
    for options in ({"shuffle": False}, {"shuffle": True, "seed": 3, "cache": True}):
        seen = 0
        for batch in twoafc_dataset(records, batch_size=5, load_size=SIDE, input_range=(0, 255), **options):
            for ref, p1, judge in zip(batch["ref"].numpy(), batch["p1"].numpy(), batch["judge"].numpy()):
                i = int(judge)
                np.testing.assert_array_equal(ref, _read_images_rounded(odd_images[names[i]]), err_msg=names[i])
                np.testing.assert_array_equal(p1, _read_images_rounded(odd_images[names[-1 - i]]), err_msg=names[-1 - i])
                seen += 1
        assert seen == len(names)


def test_plain_png_and_jpeg_keep_tensorflow_decoders(odd_images):
    """The common files (BAPPS: 8-bit PNG) are decoded by TensorFlow; the others by read_image."""
    from keras_lpips.data.image_kinds import BY_PILLOW, JPEG, PNG_8_BIT, PNG_GREY_16, decode_kind

    kinds = {name: decode_kind(odd_images[name]) for name in ODD_IMAGES}
    assert {name for name, kind in kinds.items() if kind == PNG_8_BIT} == {
        "plain.png", "rgb16.png", "grey2.png", "palette4.png", "palette.png", "LA.png", "1.png",
    }  # fmt: skip
    assert {name for name, kind in kinds.items() if kind == JPEG} == {"plain.jpg", "progressive.jpg", "grey.jpg", "jpeg_named.png"}
    assert {name for name, kind in kinds.items() if kind == PNG_GREY_16} == {"grey16.png"}
    assert kinds["exif_rotated.jpg"] == kinds["cmyk.jpg"] == kinds["webp_named.png"] == BY_PILLOW


def _refused_images(folder):
    """{name: path} of files `read_image` refuses, though TensorFlow's decoders would read some."""
    rng = np.random.default_rng(8)
    frames = [Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)) for _ in range(2)]
    files = {name: folder / name for name in ("animated.png", "animated.gif", "pages.tiff", "int32.tiff", "text.png", "text_crc_error.png")}
    for name in ("animated.png", "animated.gif", "pages.tiff"):
        frames[0].save(files[name], save_all=True, append_images=frames[1:])
    Image.fromarray(rng.integers(0, 1000, (SIDE, SIDE)).astype(np.int32)).save(files["int32.tiff"])
    files["text.png"].write_text("not an image\n")
    data = bytearray(_raw_png(np.asarray(frames[0]), 8, 2, before=_chunk(b"tEXt", b"Comment\x00hello")))
    at = data.index(b"tEXt")
    data[at + 4 + struct.unpack(">I", data[at - 4 : at])[0]] ^= 0xFF  # libpng ignores it, Pillow refuses the file
    files["text_crc_error.png"].write_bytes(bytes(data))
    return files


def _multi_frame_problem(path):
    return f"Cannot decode image {path}: it has 2 frames (an animated or multi-page image); fit and eval read single-frame images only"


def test_files_read_image_refuses_are_refused_in_its_words(tmp_path):
    """A dataset stops at a file `read_image` refuses, naming it in one line: `read_image`'s own
    (a multi-frame file: fit and eval take no frame=)."""
    from keras_lpips.data import twoafc_dataset
    from keras_lpips.data.pipeline import first_unreadable_image, iterate_naming_bad_images
    from keras_lpips.images import read_image

    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((SIDE, SIDE, 3), np.uint8)).save(good)
    for name, path in _refused_images(tmp_path).items():
        if name.startswith(("animated", "pages")):
            expected = _multi_frame_problem(path)
        else:
            with pytest.raises(InputError) as refusal:
                read_image(path)
            expected = str(refusal.value)
        assert first_unreadable_image([good, path]) == (str(path), expected), name
        records = [TwoAFCRecord(good, good, good, 0.5), TwoAFCRecord(good, path, good, 0.5)]
        with pytest.raises(InputError, match=f"^{re.escape(expected)}$"):
            list(iterate_naming_bad_images(twoafc_dataset(records, batch_size=1, load_size=SIDE, shuffle=False), records))


def _bapps_with(root, replacement):
    """The tiny BAPPS layout with 2afc/val/traditional/p0/000001.png holding `replacement`'s bytes."""
    make_tiny_bapps(root, n_train=2, n_val=2, n_jnd=0)
    target = root / "2afc/val/traditional/p0/000001.png"
    target.write_bytes(replacement.read_bytes())
    return root, target


def test_verify_and_eval_read_a_webp_named_png_as_read_image_does(odd_images, tmp_path, cli):
    """A WebP named .png among PNGs (TensorFlow's decode_png gave it a batch axis and eval crashed
    with a traceback): read as read_image reads it, so data verify says OK and eval scores it."""
    from keras_lpips.data import list_twoafc, twoafc_dataset

    root, target = _bapps_with(tmp_path / "bapps", odd_images["webp_named.png"])
    assert verify_dataset(root) == []
    result = cli("verify", root)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr
    records = list_twoafc(root, "val")
    batch = next(iter(twoafc_dataset(records, batch_size=2, load_size=SIDE, input_range=(0, 255), shuffle=False)))
    np.testing.assert_array_equal(batch["p0"].numpy()[1], _read_images_rounded(target))
    result = run_cli("eval", "--data", root, "--net", "alex", "--backbone-weights", "random", "--no-baselines", "--quiet", "--load-size", SIDE)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["animated.png", "int32.tiff", "text_crc_error.png"])
def test_verify_and_eval_refuse_a_file_read_image_refuses_in_one_line(tmp_path, cli, name):
    """Named .png in a PNG set: `data verify` lists it, `eval` stops at it with one error line."""
    from keras_lpips.images import read_image

    source = _refused_images(tmp_path)[name]
    root, target = _bapps_with(tmp_path / "bapps", source)
    if name == "animated.png":
        reason = "it has 2 frames (an animated or multi-page image); fit and eval read single-frame images only"
        listed, stopped = f"multi-frame image {target}: {reason}", f"Cannot decode image {target}: {reason}"
    else:
        with pytest.raises(InputError) as refusal:
            read_image(target)
        stopped = str(refusal.value)
        listed = stopped if name == "int32.tiff" else f"unreadable image {target}: "  # Pillow's verify() finds the CRC error first
    report = verify_dataset(root)
    assert len(report) == 1 and report[0].startswith(f"2afc/val/traditional: {listed}"), report
    result = cli("verify", root)
    assert result.returncode == 1 and f"2afc/val/traditional: {listed}" in result.stdout
    result = run_cli("eval", "--data", root, "--net", "alex", "--backbone-weights", "random", "--no-baselines", "--quiet", "--load-size", SIDE)
    assert result.returncode == 1
    assert one_error_line(result) == f"error: {stopped} (keras-lpips data verify {root} lists every problem)"


# --- synthetic set -----------------------------------------------------------------------------


def test_synth_is_byte_identical_across_runs_and_worker_counts(tmp_path):
    seen = []
    a = synthesize(tmp_path / "a", 12, 5, n_jnd=4, seed=3, progress=lambda d, t: seen.append((d, t)))
    b = synthesize(tmp_path / "b", 12, 5, n_jnd=4, seed=3, workers=1)
    files_a, files_b = tree(a), tree(b)
    assert files_a == files_b
    assert sum(name.endswith(".png") for name in files_a) == 12 * 3 + 5 * 3 + 4 * 2
    assert seen[-1] == (21, 21) and len(seen) == 21
    assert tree(synthesize(tmp_path / "c", 12, 5, n_jnd=4, seed=4)) != files_a
    train, jnd = list_twoafc(a, "train"), list_jnd(a)
    assert len(train) == 12 and len(list_twoafc(a, "val")) == 5 and len(jnd) == 4
    assert all(r.judge * 5 == round(r.judge * 5) for r in train)
    assert read_png(train[0].ref).shape == (64, 64, 3)
    assert "SIMULATED" in (a / "SYNTHETIC_README.txt").read_text()
    assert verify_dataset(a) == []


def test_synth_val_does_not_depend_on_train_size(tmp_path):
    a = synthesize(tmp_path / "a", 3, 4, n_jnd=0)
    b = synthesize(tmp_path / "b", 7, 4, n_jnd=0)
    assert tree(a / "2afc/val") == tree(b / "2afc/val")


def test_synth_judges_favour_the_less_distorted_patch(tmp_path):
    root = synthesize(tmp_path / "s", 150, 0, n_jnd=60, seed=1)
    agree, judges_when_p1_closer, judges_when_p0_closer = 0, [], []
    for r in list_twoafc(root, "train"):
        ref = read_png(r.ref).astype(float)
        e0, e1 = (np.sqrt(np.mean((read_png(p).astype(float) - ref) ** 2)) for p in (r.p0, r.p1))
        (judges_when_p1_closer if e1 < e0 else judges_when_p0_closer).append(r.judge)
        agree += (r.judge > 0.5) == (e1 < e0)
    assert np.mean(judges_when_p1_closer) > 0.7 and np.mean(judges_when_p0_closer) < 0.3
    assert agree / 150 > 0.8
    pairs = [(np.sqrt(np.mean((read_png(r.p0).astype(float) - read_png(r.p1)) ** 2)), r.same) for r in list_jnd(root)]
    small = [same for error, same in pairs if error < 2]
    large = [same for error, same in pairs if error > 10]
    assert small and large and np.mean(small) > 0.7 and np.mean(large) < 0.2


def test_synth_from_an_image_folder_takes_crops(tmp_path):
    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    photos.mkdir()
    sources = [rng.integers(0, 256, (80, 100, 3), dtype=np.uint8), rng.integers(0, 256, (70, 64, 3), dtype=np.uint8)]
    for i, image in enumerate(sources):
        Image.fromarray(image).save(photos / f"{i}.png")
    (photos / "notes.txt").write_text("not an image")
    root = synthesize(tmp_path / "s", 6, 0, images=photos, n_jnd=0)
    for record in list_twoafc(root, "train"):
        ref = read_png(record.ref)
        assert any(
            (image[y : y + 64, x : x + 64] == ref).all()
            for image in sources
            for y in range(image.shape[0] - 63)
            for x in range(image.shape[1] - 63)
        )


def test_synth_errors(tmp_path):
    synthesize(tmp_path / "s", 2, 0, n_jnd=0)
    with pytest.raises(InputError, match="already exists and is not empty"):
        synthesize(tmp_path / "s", 2, 0, n_jnd=0)
    synthesize(tmp_path / "s", 0, 2)  # other subsets of the same folder are fine
    with pytest.raises(InputError, match="Nothing to synthesize"):
        synthesize(tmp_path / "t", 0, 0)
    with pytest.raises(InputError, match="n_train must be an integer >= 0. Received: n_train=-1"):
        synthesize(tmp_path / "t", -1, 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No images"):
        synthesize(tmp_path / "t", 2, 0, images=tmp_path / "empty")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "empty" / "small.png")
    with pytest.raises(InputError, match="at least 64x64"):
        synthesize(tmp_path / "t", 2, 0, images=tmp_path / "empty")
    assert not any(p.name.startswith(".") for p in (tmp_path / "t").rglob("*"))  # no staging folder left


def test_every_distortion_family_changes_the_patch():
    rng = np.random.default_rng(0)
    patch = procedural_patch(rng)
    assert patch.shape == (64, 64, 3) and patch.dtype == np.uint8
    for family in distortions.DISTORTIONS:
        out, applied = distortions.distort(patch, rng, families=[family], strength=0.8)
        assert out.shape == patch.shape and out.dtype == np.uint8, family
        assert applied == [(family, 0.8)] and distortions.proxy_distance(patch, out) > 0.005, family


# --- verify ------------------------------------------------------------------------------------


def test_verify_finds_deleted_and_corrupted_files(tiny):
    report = verify_dataset(tiny)
    assert report == [] and report.counts == {"2afc/train/traditional": 6, "2afc/val/traditional": 4, "jnd/val/traditional": 4}
    (tiny / "2afc/val/traditional/p1/000001.png").unlink()
    png = tiny / "2afc/train/traditional/ref/000004.png"
    data = bytearray(png.read_bytes())
    data[len(data) // 2] ^= 0xFF
    png.write_bytes(bytes(data))
    (tiny / "jnd/val/traditional/p0/000000.png").write_bytes(b"garbage")
    (tiny / "jnd/val/traditional/same/000003.npy").write_bytes(b"\x93NUMPY broken")
    report = verify_dataset(tiny)
    text = "\n".join(report)
    assert len(report) == 5, text
    assert re.search(r"2afc/val/traditional: Subset 2afc/val/traditional has mismatched folders \(ref 4, p0 4, p1 3, judge 4\)", text)
    assert re.search(r"Missing p1 file \S*2afc/val/traditional/p1/000001\.png \(its counterpart \S*ref/000001\.png exists\)", text)
    assert re.search(r"unreadable image \S*2afc/train/traditional/ref/000004\.png", text)
    assert re.search(r"unreadable image \S*jnd/val/traditional/p0/000000\.png", text)
    assert re.search(r"Cannot read same file \S*same/000003\.npy", text)
    assert report.counts["2afc/val/traditional"] == 3


def test_verify_reports_missing_folders_and_non_datasets(tiny, tmp_path):
    import shutil

    shutil.rmtree(tiny / "jnd/val/traditional/same")
    assert any(re.search(r"Missing folder \S*jnd/val/traditional/same", p) for p in verify_dataset(tiny))
    (tmp_path / "empty").mkdir()
    assert "does not look like a BAPPS dataset" in verify_dataset(tmp_path / "empty")[0]


# --- download and safe extraction ---------------------------------------------------------------


def make_tar(members):
    """A .tar.gz from [(name, bytes | ("symlink"|"hardlink", target) | "dir" | "fifo" | "chr")]."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as archive:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            if isinstance(content, bytes):
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
                continue
            if content == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif content == "fifo":
                info.type = tarfile.FIFOTYPE
            elif content == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            else:
                info.type = tarfile.SYMTYPE if content[0] == "symlink" else tarfile.LNKTYPE
                info.linkname = content[1]
            archive.addfile(info)
    return buffer.getvalue()


def split_archive(root, folder):
    """The files under `root/folder` as a .tar.gz whose members start with `folder`'s last parts."""
    members = []
    base = root / folder
    for path in sorted(base.rglob("*")):
        if path.is_file():
            members.append((str(path.relative_to(base.parent)), path.read_bytes()))
    return make_tar(members)


@pytest.fixture
def fake_bucket(server, tiny, monkeypatch):
    """Serves twoafc_val (as the official archive lays it out: val/...) and jnd (jnd/val/...)."""
    files = {"twoafc_val.tar.gz": split_archive(tiny, "2afc/val"), "jnd.tar.gz": split_archive(tiny, "jnd/val")}
    server.files.update(files)
    monkeypatch.setattr(download, "URL_TEMPLATE", f"http://127.0.0.1:{server.server_address[1]}/{{split}}.tar.gz")
    monkeypatch.setattr(download, "SHA256", {**download.SHA256, "twoafc_val": hashlib.sha256(files["twoafc_val.tar.gz"]).hexdigest()})
    return files


def test_safe_extract_extracts_files_and_folders(tmp_path):
    data = make_tar([("top", "dir"), ("top/a.txt", b"hello"), ("top/sub/b.txt", b"bye"), ("top/a.txt", b"again")])
    (tmp_path / "x.tar.gz").write_bytes(data)
    dest = safe_extract(tmp_path / "x.tar.gz", tmp_path / "out")
    assert (dest / "top/a.txt").read_bytes() == b"again" and (dest / "top/sub/b.txt").read_bytes() == b"bye"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "x.tar.gz"]


@pytest.mark.parametrize(
    "members",
    [
        [("top/a.txt", b"hello"), ("top/link", ("symlink", "a.txt"))],
        [("top/a.txt", b"hello"), ("top/hard", ("hardlink", "top/a.txt"))],
        [("p", ("symlink", "q/..")), ("q", ("symlink", "."))],  # p points above the destination once q is in
        [("p", ("symlink", "q/" * 20 + "../" * 20 + "etc")), ("q", ("symlink", "."))],
    ],
    ids=["symlink-inside", "hardlink-inside", "chain", "long-chain"],
)
def test_safe_extract_refuses_every_link(tmp_path, members):
    """Links are refused even where they point inside: a chain of them that each look inside when
    made can point out once all are in, and BAPPS archives contain none."""
    (tmp_path / "x.tar.gz").write_bytes(make_tar(members))
    with pytest.raises(UnsafeFileError, match=r"^Refusing to extract \S*x.tar.gz: member '\S+' is a (symbolic|hard) link"):
        safe_extract(tmp_path / "x.tar.gz", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tar.gz"]


@pytest.mark.parametrize(
    "members, says",
    [
        ([("a", b"1"), ("a", "dir"), ("a/b", b"2")], "'a/b' is inside a folder that an earlier member made a file"),
        ([("a", "dir"), ("a/b", b"2"), ("a", b"1")], "'a' is a file, but an earlier member of that name is a folder"),
        ([("a", b"1"), ("a/b", b"2")], "'a/b' is inside a folder that an earlier member made a file"),
    ],
    ids=["file-then-folder", "folder-then-file", "file-then-inside"],
)
def test_safe_extract_a_name_both_file_and_folder_is_a_damaged_archive(tmp_path, members, says):
    (tmp_path / "x.tar.gz").write_bytes(make_tar(members))
    with pytest.raises(download.ArchiveError, match=f"^Cannot extract \\S*x.tar.gz: member {says}$") as caught:
        safe_extract(tmp_path / "x.tar.gz", tmp_path / "out")
    assert ".tmp" not in str(caught.value) and sorted(p.name for p in tmp_path.iterdir()) == ["x.tar.gz"]


@pytest.mark.parametrize(
    "bad, reason",
    [
        (("/abs/evil.txt", b"x"), "absolute path"),
        (("top/../../evil.txt", b"x"), r"'\.\.'"),
        (("top/link", ("symlink", "../../outside")), "symbolic link"),
        (("top/link", ("symlink", "/etc/passwd")), "symbolic link"),
        (("top/hard", ("hardlink", "../outside")), "hard link"),
        (("top/dev", "chr"), "character device"),
        (("top/pipe", "fifo"), "FIFO"),
    ],
    ids=["absolute", "dotdot", "symlink-out", "symlink-absolute", "hardlink-out", "device", "fifo"],
)
def test_safe_extract_refuses_unsafe_members_leaving_nothing(tmp_path, bad, reason):
    data = make_tar([("top/good.txt", b"fine"), bad, ("top/later.txt", b"later")])
    (tmp_path / "x.tar.gz").write_bytes(data)
    with pytest.raises(UnsafeFileError, match=reason):
        safe_extract(tmp_path / "x.tar.gz", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tar.gz"]


def test_safe_extract_refuses_writing_through_an_earlier_link(tmp_path):
    """A link that is fine on its own ("here" -> ".") cannot be used to land a later link outside."""
    data = make_tar([("here", ("symlink", ".")), ("here/up", ("symlink", "../outside"))])
    (tmp_path / "x.tar.gz").write_bytes(data)
    with pytest.raises(UnsafeFileError):
        safe_extract(tmp_path / "x.tar.gz", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tar.gz"]


def test_safe_extract_refuses_a_link_that_later_links_turn_outward(tmp_path):
    """"a" -> "b/c/../.." stays inside while "b" does not exist; once "b" -> "." is in, it
    points above the destination: writing through it is refused."""
    data = make_tar([("a", ("symlink", "b/c/../..")), ("b", ("symlink", ".")), ("a/escaped.txt", b"x")])
    (tmp_path / "x.tar.gz").write_bytes(data)
    with pytest.raises(UnsafeFileError, match="member 'a' is a symbolic link"):
        safe_extract(tmp_path / "x.tar.gz", tmp_path / "sub" / "out")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["x.tar.gz"]


def test_safe_extract_truncated_archive(tmp_path):
    data = make_tar([("top/a.bin", bytes(range(256)) * 400)])
    (tmp_path / "x.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="Cannot extract"):
        safe_extract(tmp_path / "x.tar.gz", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tar.gz"]


def test_download_split_extracts_where_the_reader_looks(fake_bucket, tmp_path, tiny):
    seen = []
    result = download.download_split("twoafc_val", tmp_path / "dataset", progress=lambda d, t: seen.append((d, t)))
    assert result.verified_by == "sha256" and result.folder == tmp_path / "dataset/2afc/val"
    assert seen[-1] == (len(fake_bucket["twoafc_val.tar.gz"]),) * 2
    assert tree(result.folder) == tree(tiny / "2afc/val")
    assert sorted(p.name for p in (tmp_path / "dataset").iterdir()) == ["2afc"]  # archive and staging gone
    assert len(list_twoafc(tmp_path, "val")) == 4
    again = download.download_split("twoafc_val", tmp_path / "dataset")
    assert again.verified_by == "already present" and again.sha256 is None


def test_download_resumes_after_an_interrupted_transfer(fake_bucket, server, tmp_path):
    server.cut_next = True
    with pytest.raises(DownloadError, match=r"interrupted.*bytes kept in .*twoafc_val.tar.gz.part, run again to resume$"):
        download.download_split("twoafc_val", tmp_path)
    data = fake_bucket["twoafc_val.tar.gz"]
    partial = tmp_path / "twoafc_val.tar.gz.part"
    assert partial.read_bytes() == data[: len(data) // 2] and not (tmp_path / "2afc").exists()
    download.download_split("twoafc_val", tmp_path, keep_archive=True)
    assert server.ranges == [None, f"bytes={len(data) // 2}-"]
    assert (tmp_path / "twoafc_val.tar.gz").read_bytes() == data and not partial.exists()
    assert len(list_twoafc(tmp_path, "val")) == 4


def test_download_from_an_unreachable_server_is_one_line(tmp_path, monkeypatch):
    port = closed_port()
    monkeypatch.setattr(download, "URL_TEMPLATE", f"http://127.0.0.1:{port}/{{split}}.tar.gz")
    for split in ("twoafc_val", "jnd"):
        with pytest.raises(DownloadError, match=rf"^Cannot download http://127.0.0.1:{port}/{split}.tar.gz: Connection refused$"):
            download.download_split(split, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_http_error_is_one_line(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "URL_TEMPLATE", f"http://127.0.0.1:{server.server_address[1]}/{{split}}.tar.gz")
    with pytest.raises(DownloadError, match=r"twoafc_val.tar.gz: HTTP 404 "):
        download.download_split("twoafc_val", tmp_path)


def test_download_checksum_mismatch_leaves_nothing(fake_bucket, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "SHA256", {**download.SHA256, "twoafc_val": "0" * 64})
    with pytest.raises(ChecksumError, match="Checksum mismatch"):
        download.download_split("twoafc_val", tmp_path / "d")
    assert list((tmp_path / "d").iterdir()) == []


def test_jnd_has_no_published_checksum_and_is_checked_by_size(fake_bucket, server, tmp_path):
    assert download.SHA256["jnd"] is None
    result = download.download_split("jnd", tmp_path)
    assert result.verified_by == "size"
    assert result.sha256 == hashlib.sha256(fake_bucket["jnd.tar.gz"]).hexdigest()
    assert len(list_jnd(tmp_path)) == 4
    server.head_size = len(fake_bucket["jnd.tar.gz"]) + 10
    with pytest.raises(ChecksumError, match="Size mismatch"):
        download.download_split("jnd", tmp_path / "other")
    assert list((tmp_path / "other").iterdir()) == []


def test_a_damaged_archive_checked_by_size_is_deleted_and_fetched_again(fake_bucket, server, tmp_path):
    """jnd (no published checksum) of the right size but damaged: one error that says it is
    deleted; the next run downloads it again (once the server has a good one) and extracts it.
    One that extracts but lacks the split's folder is kept (downloading it again would not help)."""
    good = fake_bucket["jnd.tar.gz"]
    server.files["jnd.tar.gz"] = bytes(len(good))  # a tar of no member
    with pytest.raises(DataError, match=r"jnd.tar.gz does not have the expected layout") as caught:
        download.download_split("jnd", tmp_path / "d")
    assert "deleted" not in str(caught.value) and (tmp_path / "d" / "jnd.tar.gz").is_file()
    (tmp_path / "d" / "jnd.tar.gz").unlink()
    server.files["jnd.tar.gz"] = np.random.default_rng(0).bytes(len(good))  # the size the server reports, not the archive
    with pytest.raises(DataError, match=r"Cannot extract .*checked only by its size, so it is deleted: run again"):
        download.download_split("jnd", tmp_path / "d")
    assert list((tmp_path / "d").iterdir()) == []
    server.files["jnd.tar.gz"] = good
    assert download.download_split("jnd", tmp_path / "d").verified_by == "size" and len(list_jnd(tmp_path / "d")) == 4


def test_an_archive_with_a_name_both_file_and_folder_is_deleted_like_a_damaged_one(fake_bucket, server, tmp_path):
    """jnd (checked by size only) whose "jnd/val" is a file and then a folder: one ArchiveError,
    the archive deleted, so the next run downloads it anew rather than failing the same way."""
    server.files["jnd.tar.gz"] = make_tar([("jnd/val", b"x"), ("jnd/val", "dir"), ("jnd/val/a.png", b"y")])
    with pytest.raises(download.ArchiveError, match=r"member 'jnd/val/a.png' .*checked only by its size, so it is deleted"):
        download.download_split("jnd", tmp_path / "d")
    assert not (tmp_path / "d").exists()  # the archive and the folder made for it are gone
    server.files["jnd.tar.gz"] = fake_bucket["jnd.tar.gz"]
    assert download.download_split("jnd", tmp_path / "d").verified_by == "size"
    assert len(list_jnd(tmp_path / "d")) == 4


def test_download_refuses_a_path_traversal_archive(server, tmp_path, monkeypatch):
    evil = make_tar([("val/traditional/ref/000000.png", b"x"), ("../../escaped.txt", b"gotcha")])
    server.files["twoafc_val.tar.gz"] = evil
    monkeypatch.setattr(download, "URL_TEMPLATE", f"http://127.0.0.1:{server.server_address[1]}/{{split}}.tar.gz")
    monkeypatch.setattr(download, "SHA256", {**download.SHA256, "twoafc_val": hashlib.sha256(evil).hexdigest()})
    with pytest.raises(UnsafeFileError, match="escaped.txt"):
        download.download_split("twoafc_val", tmp_path / "d" / "dataset")
    assert sorted(p.name for p in (tmp_path / "d" / "dataset").iterdir()) == ["twoafc_val.tar.gz"]
    assert not list(tmp_path.rglob("escaped.txt"))


def test_unknown_split(tmp_path):
    with pytest.raises(InputError, match="Unknown BAPPS split 'test'"):
        download.download_split("test", tmp_path)


# --- CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def cli():
    """`keras-lpips data ARGS` through the program's entry point, in this process."""
    return lambda *args: run_cli("data", *args)


def test_cli_synth_then_verify(cli, tmp_path):
    result = cli("synth", "--out", tmp_path / "s", "--train", 5, "--val", 3, "--jnd", 2, "--seed", 1)
    assert result.returncode == 0, result.stderr
    assert "wrote 5 train and 3 val triplets and 2 JND pairs" in result.stdout + result.stderr
    result = cli("verify", tmp_path / "s")
    assert result.returncode == 0, result.stderr
    assert "2afc/train/traditional: 5" in result.stdout and "OK" in result.stdout


def test_cli_verify_lists_problems_then_fails(cli, tiny):
    (tiny / "2afc/train/traditional/judge/000002.npy").unlink()
    result = cli("verify", tiny)
    assert result.returncode == 1  # problems found in the data: a run-time failure, not a usage error
    assert "2 problems found" in one_error_line(result)  # the missing file, and the counts that differ
    assert re.search(r"Missing judge file \S*judge/000002\.npy", result.stdout)


def test_cli_download_prints_the_sha256(cli, fake_bucket, tmp_path):
    result = cli("download", "--split", "jnd", "--dest", tmp_path)
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(fake_bucket["jnd.tar.gz"]).hexdigest() in result.stdout
    assert "no checksum is published" in result.stdout + result.stderr
    result = cli("download", "--split", "jnd", "--dest", tmp_path)
    assert "already present" in result.stdout + result.stderr
    result = cli("download", "--split", "nope", "--dest", tmp_path)
    assert result.returncode == 2 and "nope" in one_error_line(result)


@pytest.mark.parametrize("command", ["download", "synth", "verify"])
def test_cli_help_has_examples(cli, command):
    result = cli(command, "--help")
    assert result.returncode == 0 and f"keras-lpips data {command}" in result.stdout


# --- hostile or odd entries: judge files, folders and links in place of files, archive junk ------


def _npy_header(shape, descr="<f8"):
    """The bytes of a version 1.0 .npy header announcing `shape` (no data follows)."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (117 - len(header)) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


@pytest.mark.parametrize(
    "case, message",
    [("npz renamed", "Cannot read judge file {path}: not a .npy file"),
     ("huge header", "judge file {path} should hold one number, holds a float64 array of shape (100000000000,)"),
     ("huge header 2-d", "judge file {path} should hold one number, holds a float64 array of shape (1, 100000000000)"),
     ("device", "{path} is not a regular file (a device, pipe or socket)"),
     ("pipe", "{path} is not a regular file (a device, pipe or socket)"),
     ("large file", "Cannot read judge file {path}: larger than 4096 bytes"),
     ("folder", "{path} is a folder, not a file"),
     ("object array", "judge file {path} should hold one number, holds a object array of shape (1,)"),
     ("raw pickle", "Cannot read judge file {path}: not a .npy file"),
     ("magic only", "Cannot read judge file {path}: "),
     ("truncated data", "Cannot read judge file {path}: 4 bytes of data after the header, expected 8"),
     ("dtype <f3", "Cannot read judge file {path}: "),  # no such dtype: a header numpy cannot read
     ("dtype <f1", "Cannot read judge file {path}: "),
     ("dtype <i3", "Cannot read judge file {path}: "),
     ("dtype |u5", "Cannot read judge file {path}: ")],
)  # fmt: skip
def test_a_hostile_judge_file_is_one_error_naming_it(tiny, tmp_path, case, message):
    """Read at most a few kB, from regular files only, after the header says one number: never
    np.load's allocation of what a header announces, an endless /dev/zero, a pipe that blocks,
    nor a pickle (whose code would run)."""
    import os
    import pickle

    path = tiny / "2afc/val/traditional/judge/000001.npy"
    path.unlink()
    marker = tmp_path / "pickle-ran"
    if case == "npz renamed":
        buffer = io.BytesIO()
        np.savez(buffer, a=np.array([0.5]))
        path.write_bytes(buffer.getvalue())
    elif case.startswith("huge header"):
        path.write_bytes(_npy_header("(100000000000,)" if case == "huge header" else "(1, 100000000000)") + b"\0" * 8)
    elif case == "device":
        path.symlink_to("/dev/zero")
    elif case == "pipe":
        os.mkfifo(path)
    elif case == "large file":
        path.write_bytes(_npy_header("(1,)") + b"\0" * 10**6)
    elif case == "folder":
        path.mkdir()
    elif case == "object array":
        np.save(path, np.array([_Marker(marker)], dtype=object), allow_pickle=True)
    elif case == "raw pickle":
        path.write_bytes(pickle.dumps(_Marker(marker)))
    elif case == "magic only":
        path.write_bytes(b"\x93NUMPY")
    elif case.startswith("dtype "):
        path.write_bytes(_npy_header("(1,)", descr=case.split()[1]) + b"\0" * 4)
    else:
        path.write_bytes(_npy_header("(1,)") + b"\0" * 4)
    with pytest.raises(InputError) as caught:
        list_twoafc(tiny, "val")
    assert str(caught.value).startswith(message.format(path=path)), str(caught.value)
    assert type(caught.value).__name__ == "DataError" and not marker.exists()
    report = verify_dataset(tiny)
    assert [p.split(": ", 1)[1] for p in report] == [str(caught.value)], report


class _Marker:
    """Unpickling it would create the file `path`."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_an_entry_that_is_no_file_is_named(tiny):
    """A folder named like an image, a broken link: one error naming it (fit and eval would stop
    on TensorFlow's 'Is a directory'); `data verify` reports each once, not also as missing."""
    val = tiny / "2afc/val/traditional"
    for name in ("ref", "p0", "p1"):
        (val / name / "000009.png").mkdir()
    np.save(val / "judge" / "000009.npy", np.array([0.5]))
    with pytest.raises(InputError, match=f"^{re.escape(str(val / 'ref' / '000009.png'))} is a folder, not a file$"):
        list_twoafc(tiny, "val")
    report = verify_dataset(tiny)
    assert sorted(report) == sorted(f"2afc/val/traditional: {val / name / '000009.png'} is a folder, not a file" for name in ("ref", "p0", "p1"))
    assert report.counts["2afc/val/traditional"] == 4

    jnd = tiny / "jnd/val/traditional/p1/000002.png"
    jnd.unlink()
    jnd.symlink_to(tiny / "gone.png")
    with pytest.raises(InputError, match=f"^{re.escape(str(jnd))} is a broken link"):
        list_jnd(tiny)


def test_a_folder_read_as_an_image_is_named(tiny):
    """Records made by hand (not listed) with a folder in place of an image: TensorFlow's
    FailedPreconditionError while iterating becomes one error naming it."""
    from keras_lpips.data import twoafc_dataset
    from keras_lpips.data.pipeline import iterate_naming_bad_images

    records = list_twoafc(tiny, "train")
    folder = tiny / "a-folder.png"
    folder.mkdir()
    records[3] = records[3]._replace(p0=folder)
    with pytest.raises(InputError, match=f"^Cannot read image {re.escape(str(folder))}: Is a directory$"):
        list(iterate_naming_bad_images(twoafc_dataset(records, batch_size=2, shuffle=False), records))


def test_hidden_and_macosx_folders_are_no_subsets(tiny):
    for junk in ("__MACOSX", ".Trash"):
        (tiny / "2afc/val" / junk / "ref").mkdir(parents=True)
        (tiny / "jnd/val" / junk).mkdir(parents=True)
    assert {r.subset for r in list_twoafc(tiny, "val")} == {"traditional"} and len(list_jnd(tiny)) == 4
    assert verify_dataset(tiny) == []
    with pytest.raises(InputError, match="subsets there: traditional$"):
        list_twoafc(tiny, "val", "__MACOSX")


def test_fingerprint_changes_with_the_files_and_judgments(tiny):
    from keras_lpips.data.bapps import fingerprint

    first = fingerprint(list_twoafc(tiny, "val"), tiny)
    assert re.fullmatch(r"4 triplets, sha256 [0-9a-f]{16}", first) and fingerprint(list_twoafc(tiny / "2afc", "val"), tiny / "2afc") == first
    assert re.fullmatch(r"4 pairs, sha256 [0-9a-f]{16}", fingerprint(list_jnd(tiny), tiny))
    np.save(tiny / "2afc/val/traditional/judge/000000.npy", np.array([0.61]))
    changed = fingerprint(list_twoafc(tiny, "val"), tiny)
    assert changed.startswith("4 triplets") and changed != first
