"""`keras_lpips.argument_checks`: what an integer and a number are, and the one message that
refuses an integer argument; and call sites that take a numpy integer where an int goes."""

import fractions
import re

import numpy as np
import pytest

from keras_lpips.argument_checks import (
    MAX_SEED, check_batch_size, check_integer, check_load_size, check_seed, is_integer, is_number,
)
from keras_lpips.errors import InputError


@pytest.mark.parametrize("value", [0, -3, 2**70, np.int64(5), np.uint8(1), np.int32(-1)])
def test_ints_and_numpy_integers_are_integers(value):
    assert is_integer(value) and is_number(value)


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 2.0, np.float32(1), "1", None, [1], np.array([1]), 1 + 0j])
def test_bools_floats_and_the_rest_are_not_integers(value):
    assert not is_integer(value)


@pytest.mark.parametrize("value", [0.5, float("nan"), float("inf"), np.float32(0.25), np.float64(1), fractions.Fraction(1, 3)])
def test_real_numbers_are_numbers(value):
    assert is_number(value)


@pytest.mark.parametrize("value", [True, np.bool_(False), 1j, np.complex64(0.5), "0.5", None, np.array(0.5)])
def test_bools_complex_numbers_and_strings_are_not_numbers(value):
    assert not is_number(value)


def test_check_integer_returns_a_python_int():
    for value in (3, np.int64(3), np.uint16(3)):
        checked = check_integer("k", value, 1)
        assert checked == 3 and type(checked) is int
    assert check_integer("frame", None, 0, allow_none=True) is None
    assert check_integer("layers", 5, 1, 5) == 5 and check_integer("layers", 1, 1, 5) == 1
    assert check_integer("offset", -(2**70)) == -(2**70)  # no bounds: any integer


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("k", 0, 1), {}, "k must be an integer >= 1. Received: k=0"),
        (("k", True, 1), {}, "k must be an integer >= 1. Received: k=True"),
        (("k", 2.0, 1), {}, "k must be an integer >= 1. Received: k=2.0"),
        (("k", "3", 1), {}, "k must be an integer >= 1. Received: k='3'"),
        (("k", None, 1), {}, "k must be an integer >= 1. Received: k=None"),
        (("seed", np.int64(-1), 0), {"allow_none": True}, "seed must be an integer >= 0 or None. Received: seed=np.int64(-1)"),
        (("layers", 6, 1, 5), {"note": "for net 'alex'"}, "layers must be an integer from 1 to 5 for net 'alex'. Received: layers=6"),
        (("n", 3), {"maximum": 2}, "n must be an integer <= 2. Received: n=3"),
        (("n", 0.5), {}, "n must be an integer. Received: n=0.5"),
        (("max_pixels", 0, 1), {"allow_none": True, "note": "(pixels per input)"},
         "max_pixels must be an integer >= 1 or None (pixels per input). Received: max_pixels=0"),
    ],
)  # fmt: skip
def test_check_integer_says_what_it_expected_and_received(args, kwargs, message):
    if isinstance(args[1], np.generic) and not repr(args[1]).startswith("np."):  # numpy 1 writes 'np.int64(-1)' as '-1'
        message = message.replace(repr(args[1]), str(args[1]))
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        check_integer(*args, **kwargs)


def test_check_seed_takes_what_training_seeds_with():
    """Every seed is from 0 to 2**32 - 1: what keras.utils.set_random_seed (numpy's legacy
    seeding, which fit calls) takes; one more is its ValueError."""
    import keras

    assert check_seed(MAX_SEED) == MAX_SEED == 4294967295 and check_seed(np.uint32(7)) == 7 and check_seed(None, allow_none=True) is None
    keras.utils.set_random_seed(MAX_SEED)
    with pytest.raises(ValueError):
        keras.utils.set_random_seed(MAX_SEED + 1)


@pytest.mark.parametrize("value", [MAX_SEED + 1, 99999999999999999999, -1, 1.0, True, "3", None])
def test_check_seed_refuses_in_the_one_message(value):
    message = f"seed must be an integer from 0 to 4294967295. Received: seed={value!r}"
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        check_seed(value)


def test_lpips_refuses_a_seed_past_the_largest():
    from keras_lpips import LPIPS

    message = "seed must be an integer from 0 to 4294967295 or None. Received: seed=4294967296"
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        LPIPS(net="alex", backbone_weights=None, seed=MAX_SEED + 1, input_range=(0, 1), layers=1)
    assert LPIPS(net="alex", backbone_weights=None, seed=MAX_SEED, input_range=(0, 1), layers=1).seed == MAX_SEED


# --- call sites that take a numpy integer (a count read from an array) ------------------------------


def test_nearest_takes_a_numpy_k_and_refuses_a_float_one(rng):
    from keras_lpips.embedding import nearest

    vectors = rng.random((6, 4), dtype=np.float32)
    found, _ = nearest(vectors[:2], vectors, k=np.int64(3))
    assert found.shape == (2, 3) and found[:, 0].tolist() == [0, 1]
    with pytest.raises(InputError, match=re.escape("k must be an integer >= 1. Received: k=3.0")):
        nearest(vectors[:2], vectors, k=3.0)


def test_synthesize_takes_numpy_counts_and_refuses_a_float_one(tmp_path):
    from keras_lpips.data.synth import synthesize

    synthesize(tmp_path / "s", np.int64(1), np.int32(0), n_jnd=np.uint8(0), seed=np.int64(2))
    assert len(list((tmp_path / "s" / "2afc" / "train" / "traditional" / "judge").iterdir())) == 1
    with pytest.raises(InputError, match=re.escape("n_train must be an integer >= 0. Received: n_train=2.0")):
        synthesize(tmp_path / "t", 2.0, 0)
    assert not (tmp_path / "t").exists()


def test_many_image_functions_take_a_numpy_batch_size_and_refuse_zero(rng):
    from keras_lpips import LPIPS
    from keras_lpips.embedding import embed_images
    from keras_lpips.pairwise import cross_distance_matrix, distance_matrix, paired_distances

    metric = LPIPS(net="alex", backbone_weights=None, seed=0, input_range=(0, 1), layers=2)
    images = rng.random((3, 32, 32, 3), dtype=np.float32)
    expected = distance_matrix(metric, images)
    np.testing.assert_allclose(distance_matrix(metric, images, batch_size=np.int64(2)), expected, atol=1e-6)
    calls = [lambda size: distance_matrix(metric, images, batch_size=size),
             lambda size: cross_distance_matrix(metric, images[:1], images, batch_size=size),
             lambda size: paired_distances(metric, list(images), list(images), batch_size=size),
             lambda size: embed_images(metric, images, batch_size=size)]  # fmt: skip
    for call in calls:
        with pytest.raises(InputError, match=re.escape("batch_size must be an integer >= 1. Received: batch_size=0")):
            call(0)


def test_batch_and_load_sizes_are_checked_in_one_place():
    """fit, eval and the data pipeline each make one call: the range, then the backbone's least."""
    assert check_batch_size(np.int64(8)) == 8 and type(check_batch_size(np.int64(8))) is int
    assert check_load_size(64, 31, "alex", 5) == 64
    for value in (0, 65537, True, 2.0):
        with pytest.raises(InputError, match=rf"^batch_size must be an integer from 1 to 65536. Received: batch_size={value!r}$"):
            check_batch_size(value)
    with pytest.raises(InputError, match=r"^load_size must be an integer from 1 to 4096. Received: load_size=4097$"):
        check_load_size(4097, 31, "alex", 5)
    with pytest.raises(InputError, match=r"^load_size 16 is too small for alex with 5 layers \(needs >= 31\)$"):
        check_load_size(16, 31, "alex", 5)


def test_the_data_pipeline_says_what_input_range_it_received():
    from keras_lpips.data.pipeline import twoafc_dataset

    for bad, message in (((1,), "input_range must be (low, high)"), ((1, 0), "input_range must have low < high")):
        with pytest.raises(InputError, match=rf"^{re.escape(message)}. Received: input_range={re.escape(repr(bad))}$"):
            twoafc_dataset([("r.png", "a.png", "b.png", 0.5)], batch_size=1, load_size=64, input_range=bad)


def test_nets_and_weight_names_have_one_owner_each():
    """`presets.canonical_net` names a net whatever alias; `sources.untrained` and
    `sources.is_weight_name` tell a weight name from a file's path."""
    from keras_lpips.presets import canonical_net
    from keras_lpips.weights.sources import is_weight_name, untrained

    assert [canonical_net(n) for n in ("AlexNet", "vgg16", "squeeze")] == ["alex", "vgg", "squeeze"]
    with pytest.raises(InputError, match=r"^Unknown net 'resnet': expected one of alex, vgg, .*\. Received: net='resnet'$"):
        canonical_net("resnet")
    assert untrained("random") and untrained("none") and not untrained(None) and not untrained("imagenet")
    assert all(is_weight_name("backbone_weights", n) for n in ("imagenet", "keras-imagenet", "random", "none"))
    assert all(is_weight_name("lin_weights", n) for n in ("official", "v0.1", "v0.0", "none"))
    assert not any(is_weight_name("backbone_weights", n) for n in (None, "v0.1", "w.pth"))
    assert not is_weight_name("lin_weights", "imagenet")


def test_the_range_tolerance_is_one_rule():
    from keras_lpips.array_checks import RANGE_TOLERANCE, range_bounds

    assert range_bounds((0, 255)) == (-RANGE_TOLERANCE * 255, 255 + RANGE_TOLERANCE * 255)
    assert range_bounds((-1, 1)) == (-1 - 0.02, 1 + 0.02)
