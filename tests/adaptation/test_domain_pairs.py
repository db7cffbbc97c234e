import warnings

import numpy as np
import pytest
import tensorflow as tf

from keras_transfer.adaptation import domain_pairs


def arrays(n_source=10, n_target=4, dim=3):
    x_source = np.arange(n_source * dim, dtype="float64").reshape(n_source, dim)
    y_source = np.arange(n_source, dtype="int32")
    x_target = -np.arange(1, n_target * dim + 1, dtype="float64").reshape(n_target, dim)
    return x_source, y_source, x_target


def batches(pairs):
    return list(pairs.as_numpy_iterator())


def test_one_epoch_is_one_pass_over_the_source_and_the_target_cycles():
    x_source, y_source, x_target = arrays()
    pairs = domain_pairs((x_source, y_source), x_target, batch_size=3, target_batch_size=2)
    assert len(pairs) == 4
    epoch = batches(pairs)
    assert [len(y) for _, y in epoch] == [3, 3, 3, 1]
    seen = np.concatenate([x["source"] for x, _ in epoch])
    labels = np.concatenate([y for _, y in epoch])
    # Shuffled, with each source example kept with its label, once.
    assert sorted(labels.tolist()) == list(range(10))
    np.testing.assert_array_equal(seen, x_source[labels].astype("float32"))
    targets = np.concatenate([x["target"] for x, _ in epoch])
    assert targets.shape == (8, 3) and targets.dtype == np.float32
    # Four target batches of 2 from 4 examples: each example twice.
    rows, counts = np.unique(targets, axis=0, return_counts=True)
    assert len(rows) == 4 and set(counts) == {2}


def test_without_shuffle_order_is_kept():
    x_source, y_source, x_target = arrays()
    (x, y), *_ = batches(domain_pairs((x_source, y_source), x_target, batch_size=3, shuffle=False))
    np.testing.assert_array_equal(y, [0, 1, 2])
    np.testing.assert_array_equal(x["target"], x_target[:3].astype("float32"))


def test_datasets_and_dict_inputs():
    x_source, y_source, x_target = arrays()
    source = tf.data.Dataset.from_tensor_slices(({"tokens": x_source.astype("int32")}, y_source))
    target = tf.data.Dataset.from_tensor_slices({"tokens": x_target.astype("int32")})
    pairs = domain_pairs(source, target.filter(lambda x: True), batch_size=5, seed=1)
    (x, y), _ = batches(pairs)
    assert x["source"]["tokens"].dtype == np.int32
    assert x["target"]["tokens"].shape == (5, 3)


def test_target_labels_are_dropped_with_a_warning():
    x_source, y_source, x_target = arrays()
    for target in (
        (x_target, np.zeros(len(x_target))),
        tf.data.Dataset.from_tensor_slices((x_target, np.zeros(len(x_target)))),
    ):
        with pytest.warns(UserWarning, match="labels"):
            pairs = domain_pairs((x_source, y_source), target, batch_size=2)
        (x, _), *_ = batches(pairs)
        assert x["target"].shape == (2, 3)


def test_unlabelled_tuple_inputs_raise_no_warning():
    x_source, y_source, x_target = arrays()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        domain_pairs(((x_source, x_source), y_source), (x_target, x_target), batch_size=2)


def test_empty_targets_are_refused():
    x_source, y_source, x_target = arrays()
    empty = tf.data.Dataset.from_tensor_slices(x_target[:0])
    for target in (x_target[:0], empty, empty.filter(lambda x: True)):
        with pytest.raises(ValueError, match="empty"):
            domain_pairs((x_source, y_source), target)
    with pytest.raises(ValueError, match="empty"):
        domain_pairs((x_source[:0], y_source[:0]), x_target)


def test_different_example_shapes_are_refused():
    x_source, y_source, _ = arrays()
    with pytest.raises(ValueError, match="one size"):
        domain_pairs((x_source, y_source), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="structure"):
        domain_pairs((x_source, y_source), {"x": np.zeros((4, 3))})


def test_bad_arguments_are_refused():
    x_source, y_source, x_target = arrays()
    with pytest.raises(TypeError, match="x_source, y_source"):
        domain_pairs(x_source, x_target)
    with pytest.raises(ValueError, match="labels"):
        domain_pairs((x_source, y_source[:3]), x_target)
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1"):
        domain_pairs((x_source, y_source), x_target, batch_size=0)
    with pytest.raises(ValueError, match="`target_batch_size` must be an integer >= 1"):
        domain_pairs((x_source, y_source), x_target, target_batch_size=2.0)
    with pytest.raises(ValueError, match="`shuffle_buffer` must be an integer >= 1"):
        domain_pairs((x_source, y_source), x_target, shuffle_buffer=0)
    with pytest.raises(ValueError, match="infinite"):
        source = tf.data.Dataset.from_tensor_slices((x_source, y_source)).repeat()
        domain_pairs(source, x_target)
