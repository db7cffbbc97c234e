"""`fisher_information`: how much each weight matters to a task, per weight."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_transfer._checks import check_integer
from keras_transfer.regularization._anchored_penalty import require_trainable
from keras_transfer.regularization._labelled_data import example_count, labelled_batches
from keras_transfer.regularization._per_example_gradients import squared_gradient_sums


def fisher_information(
    model: keras.Model,
    data,
    samples: int | None = None,
    *,
    loss=None,
    batch_size: int = 32,
    verbose: int = 1,
) -> dict[str, np.ndarray]:
    """The diagonal empirical Fisher information of a model's trainable weights.

    For each trainable variable, the mean over the labelled examples of the
    squared gradient of the example's log-likelihood,
    `F = mean_i (d log p(y_i | x_i) / dw)^2`, with the true labels `y_i`
    (the empirical Fisher, as in EWC). Large values mark the weights the
    task depends on. Each example gets its own gradient (a batch's mean
    gradient would average away their differences), vectorised over each
    batch where the backend allows: `jax.vmap`, `torch.func.vmap`,
    `tf.vectorized_map`. The model runs in inference mode.

    The log-likelihood is minus the loss of the example alone, with the
    model's compiled loss or `loss`: exact for a cross-entropy that matches
    the model's outputs (`"sparse_categorical_crossentropy"` for softmax
    outputs and integer labels, `SparseCategoricalCrossentropy(from_logits=True)`
    for logits; the same for categorical and binary cross-entropy). For
    another loss, such as the mean squared error (a Gaussian log-likelihood
    up to scale), the Fisher is that of the density the loss implies.

    Args:
        model: a built Keras model with trainable weights.
        data: labelled examples: a tuple `(x, y)` of arrays (or of dicts or
            lists of arrays, for several inputs), or a `tf.data.Dataset` of
            `(x, y)` batches, batched as for `fit`.
        samples: at most this many examples are used (the first ones).
            Defaults to all of them.
        loss: the loss whose negative is the log-likelihood: a Keras loss
            name, object or function. Defaults to the compiled loss.
        batch_size: examples per vectorised batch; memory grows with it
            times the number of weights. Defaults to 32.
        verbose: 1 (default) shows a progress bar; 0 is silent.

    Returns:
        A dict from each trainable variable's `path` to a numpy array of its
        shape.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> model = keras.Sequential([
    ...     keras.Input((4,)), keras.layers.Dense(3, activation="softmax", name="head"),
    ... ], name="classifier")
    >>> x, y = np.ones((16, 4)), np.arange(16) % 3
    >>> fisher = kt.fisher_information(
    ...     model, (x, y), loss="sparse_categorical_crossentropy", verbose=0
    ... )
    >>> {path: array.shape for path, array in fisher.items()}
    {'classifier/head/kernel': (4, 3), 'classifier/head/bias': (3,)}
    """
    require_trainable(
        model, "fisher_information", "there are no weights to measure the Fisher information of"
    )
    variables = list(model.trainable_variables)
    arrays = empirical_fisher(model, variables, data, samples, loss, batch_size, verbose)
    return {variable.path: array for variable, array in zip(variables, arrays)}


def empirical_fisher(model, variables, data, samples, loss, batch_size, verbose) -> list:
    """`fisher_information` for any `variables` of `model`, as a list of arrays."""
    if samples is not None:
        check_integer(samples, "samples", "the most examples used", low=1)
    check_integer(batch_size, "batch_size", "examples per vectorised batch", low=1)
    loss_function = _log_likelihood_loss(model, loss)

    def example_loss(x, y):
        x, y = keras.tree.map_structure(lambda t: ops.expand_dims(t, 0), (x, y))
        return ops.sum(loss_function(y, model(x, training=False)))

    batch_sums = squared_gradient_sums(model, variables, example_loss)
    progress = keras.utils.Progbar(
        example_count(data, samples), verbose=verbose, unit_name="example"
    )
    totals, count = None, 0
    for x, y in labelled_batches(data, batch_size, samples):
        sums = batch_sums(x, y)
        totals = sums if totals is None else [total + part for total, part in zip(totals, sums)]
        count += len(keras.tree.flatten(x)[0])
        progress.update(count)
    if count == 0:
        raise ValueError(
            "`data` holds no labelled examples, so there is nothing to measure the Fisher "
            "information on. Pass examples of the task to protect, e.g. its training set."
        )
    return [(total / count).astype(variable.dtype) for total, variable in zip(totals, variables)]


def _log_likelihood_loss(model, loss):
    loss = loss if loss is not None else getattr(model, "loss", None)
    if loss is None:
        raise ValueError(
            f"Model '{model.name}' is not compiled with a loss, and no `loss` was given, so "
            "there is no log-likelihood to differentiate. Pass `loss=`, e.g. "
            "'sparse_categorical_crossentropy' for softmax outputs and integer labels, or "
            "`keras.losses.SparseCategoricalCrossentropy(from_logits=True)` for logits."
        )
    if isinstance(loss, (dict, list, tuple)):
        raise TypeError(
            "The Fisher information needs one loss for the whole model, but the model's "
            f"loss is a {type(loss).__name__} of per-output losses. Pass `loss=` with a loss "
            "that takes all of the model's outputs."
        )
    return keras.losses.get(loss)
