"""`kt.fisher_information` against a per-example numpy computation."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from regularization.regularization_testing import (
    CLASSES,
    classification_data,
    numpy_fisher,
    softmax_errors,
    softmax_model,
)

import keras_transfer as kt


def assert_fisher_close(actual, expected):
    assert list(actual) == list(expected)
    for path in expected:
        np.testing.assert_allclose(actual[path], expected[path], rtol=1e-5, atol=1e-7)


def test_equals_the_per_example_numpy_fisher():
    model = softmax_model()
    x, y = classification_data(10)
    # A batch of 4 leaves a last batch of 2: both must count per example.
    fisher = kt.fisher_information(
        model, (x, y), loss="sparse_categorical_crossentropy", batch_size=4, verbose=0
    )
    assert_fisher_close(fisher, numpy_fisher(model, x, y))


def embedding_model():
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [
            keras.Input((4,), dtype="int32"),
            keras.layers.Embedding(10, 3, name="embedding"),
            keras.layers.GlobalAveragePooling1D(name="pool"),
            keras.layers.Dense(2, name="head"),
        ],
        name="bag",
    )


def numpy_embedding_fisher(model, x, y):
    """Per example: logits = mean(E[x_i]) @ W + b, log-softmax cross-entropy."""
    table, kernel, bias = (np.asarray(w, np.float64) for w in model.get_weights())
    squares = {"table": 0.0, "kernel": 0.0, "bias": 0.0}
    for tokens, label in zip(x, y):
        hidden = table[tokens].mean(axis=0)
        logits = hidden @ kernel + bias
        errors = np.exp(logits - logits.max())
        errors /= errors.sum()
        errors[label] -= 1.0
        table_gradient = np.zeros_like(table)
        np.add.at(table_gradient, tokens, kernel @ errors / len(tokens))
        squares["table"] += table_gradient**2
        squares["kernel"] += np.outer(hidden, errors) ** 2
        squares["bias"] += errors**2
    paths = ("bag/embedding/embeddings", "bag/head/kernel", "bag/head/bias")
    return {path: squares[key] / len(x) for path, key in zip(paths, squares)}


def test_an_embeddings_sparse_gradient_counts_per_example_without_warnings(caplog):
    model = embedding_model()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.array([[1, 1, 2, 3], [4, 5, 6, 6], [1, 7, 8, 9], [2, 2, 2, 0], [5, 0, 3, 3]])
    y = np.array([0, 1, 1, 0, 1])
    with caplog.at_level("WARNING"):
        fisher = kt.fisher_information(model, (x, y), batch_size=3, verbose=0)
    assert_fisher_close(fisher, numpy_embedding_fisher(model, x, y))
    assert not [r for r in caplog.records if "IndexedSlices" in r.getMessage()]


def test_is_not_the_square_of_the_batch_gradient():
    model = softmax_model()
    x, y = classification_data(10)
    fisher = kt.fisher_information(model, (x, y), loss="sparse_categorical_crossentropy", verbose=0)
    expected = numpy_fisher(model, x, y)["classifier/head/bias"]
    # Squaring the mean gradient instead of averaging the squares is smaller.
    squared_mean = np.mean(softmax_errors(model, x, y), axis=0) ** 2
    assert np.all(squared_mean < expected)
    np.testing.assert_allclose(fisher["classifier/head/bias"], expected, rtol=1e-5)


def test_uses_the_compiled_loss_and_logits_give_the_same_fisher():
    x, y = classification_data(8)
    model = softmax_model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    expected = numpy_fisher(model, x, y)
    assert_fisher_close(kt.fisher_information(model, (x, y), verbose=0), expected)
    logits = softmax_model(activation=None)
    logits.set_weights(model.get_weights())
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert_fisher_close(kt.fisher_information(logits, (x, y), loss=loss, verbose=0), expected)


def test_samples_caps_the_examples_and_a_dataset_gives_the_same():
    model = softmax_model()
    x, y = classification_data(12)
    expected = numpy_fisher(model, x[:7], y[:7])
    loss = "sparse_categorical_crossentropy"
    fisher = kt.fisher_information(model, (x, y), samples=7, loss=loss, verbose=0)
    assert_fisher_close(fisher, expected)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    fisher = kt.fisher_information(model, dataset, samples=7, loss=loss, batch_size=3, verbose=0)
    assert_fisher_close(fisher, expected)
    with_weights = tf.data.Dataset.from_tensor_slices((x, y, np.ones(12))).batch(5)
    fisher = kt.fisher_information(model, with_weights, loss=loss, verbose=0)
    assert_fisher_close(fisher, numpy_fisher(model, x, y))


def test_covers_the_trainable_variables_only():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4, activation="tanh", name="body")(inputs)
    model = keras.Model(
        inputs, keras.layers.Dense(CLASSES, activation="softmax", name="head")(hidden)
    )
    model.get_layer("body").trainable = False
    x, y = classification_data(6)
    fisher = kt.fisher_information(model, (x, y), loss="sparse_categorical_crossentropy", verbose=0)
    assert list(fisher) == ["head/kernel", "head/bias"]
    assert all(np.all(array >= 0) and np.any(array > 0) for array in fisher.values())


def test_shows_a_progress_bar(capsys):
    x, y = classification_data(6)
    kt.fisher_information(softmax_model(), (x, y), loss="sparse_categorical_crossentropy")
    assert "6/6" in capsys.readouterr().out


def test_bad_inputs_say_what_to_do():
    model = softmax_model()
    x, y = classification_data(6)
    loss = "sparse_categorical_crossentropy"
    with pytest.raises(ValueError, match="not compiled with a loss.*Pass `loss=`"):
        kt.fisher_information(model, (x, y), verbose=0)
    with pytest.raises(ValueError, match="no labelled examples"):
        kt.fisher_information(model, (x[:0], y[:0]), loss=loss, verbose=0)
    empty = tf.data.Dataset.from_tensor_slices((x, y)).take(0).batch(2)
    with pytest.raises(ValueError, match="no labelled examples"):
        kt.fisher_information(model, empty, loss=loss, verbose=0)
    with pytest.raises(ValueError, match="single examples.*dataset.batch"):
        kt.fisher_information(model, tf.data.Dataset.from_tensor_slices((x, y)), loss=loss)
    with pytest.raises(ValueError, match="one label per example"):
        kt.fisher_information(model, (x, y[:3]), loss=loss, verbose=0)
    with pytest.raises(TypeError, match="labelled examples"):
        kt.fisher_information(model, x, loss=loss, verbose=0)
    with pytest.raises(ValueError, match="`samples` must be an integer >= 1"):
        kt.fisher_information(model, (x, y), samples=0, loss=loss, verbose=0)
    with pytest.raises(TypeError, match="one loss for the whole model"):
        kt.fisher_information(model, (x, y), loss={"head": loss}, verbose=0)
    model.trainable = False
    with pytest.raises(ValueError, match="no trainable weights"):
        kt.fisher_information(model, (x, y), loss=loss, verbose=0)
