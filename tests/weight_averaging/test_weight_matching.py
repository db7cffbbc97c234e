import keras
import pytest
from weight_averaging.soup_testing import counting_model

from keras_transfer.weight_averaging._weight_matching import (
    check_matching,
    check_models,
    first_mismatch,
    float_flags,
    paths_match,
    weight_signature,
)


@pytest.mark.parametrize(
    "left, right, same",
    [
        ("dense/kernel", "dense/kernel", True),
        ("dense_3/kernel", "dense_12/kernel", True),
        ("sequential_2/dense_4/kernel", "dense/kernel", True),
        ("backbone/block_1/conv/kernel", "block_7/conv/kernel", True),
        ("dense/kernel", "dense/bias", False),
        ("encoder/kernel", "decoder/kernel", False),
        ("a/dense/kernel", "b/dense/kernel", False),
    ],
)
def test_paths_match_up_to_automatic_numbering_and_enclosing_scopes(left, right, same):
    assert paths_match(left, right) is same
    assert paths_match(right, left) is same


def test_the_signature_records_path_shape_dtype_and_trainable_capability():
    model = counting_model(trainable_scale=False)
    model.get_layer("a").trainable = False  # freezing is not part of the signature
    assert weight_signature(model)[:4] == [
        ("a/kernel", (5, 4), "float32", True),
        ("a/bias", (4,), "float32", True),
        ("scale/scale", (4,), "float32", False),
        ("scale/counter", (), "int32", False),
    ]
    assert float_flags(model) == [True, True, True, False, True, True]


def test_the_first_mismatch_gives_its_position_and_both_sides():
    reference = weight_signature(counting_model())
    assert first_mismatch(reference, reference) is None
    assert first_mismatch(reference, reference[:-1]) == (5, reference[5], None)
    changed = [*reference[:2], ("scale/scale", (4,), "float32", False), *reference[3:]]
    assert first_mismatch(reference, changed) == (2, reference[2], changed[2])


def test_a_frozen_copy_still_matches():
    frozen = counting_model()
    frozen.trainable = False
    check_matching([counting_model(), frozen], ["start_model", "fine_tuned_model"])


def test_a_model_without_float_weights_is_refused():
    empty = keras.Sequential([keras.Input((3,)), keras.layers.Flatten()])
    with pytest.raises(ValueError, match="`models\\[1\\]` .* no floating-point weights"):
        check_models([counting_model(), empty], ["models[0]", "models[1]"])
