"""`kt.prototype_classifier`: a classifier from an encoder and a few labelled
examples per class, with no training."""

from __future__ import annotations

import keras
import numpy as np

from keras_transfer._checks import check_integer
from keras_transfer.features.pipeline import is_dataset, numpy_batches, predict_padded
from keras_transfer.few_shot.prototype_head import PrototypeHead
from keras_transfer.transferability._validation import check_labels
from keras_transfer.transferability.encoder_features import encoder_features

HEAD_NAME = "prototypes"


def prototype_classifier(
    encoder: keras.Model,
    x_support,
    y_support=None,
    *,
    num_classes: int | None = None,
    scale: float = 10.0,
    learnable_scale: bool = True,
    activation: str | None = "softmax",
    batch_size: int = 32,
) -> keras.Model:
    """A classifier from a few labelled examples per class: `encoder -> kt.PrototypeHead`.

    One-shot and few-shot learning: with 1 to 20 labelled examples per class,
    training a head is unreliable, but the mean of each class's (normalised)
    features is a good classifier already (Snell et al., 2017). This runs the
    encoder once over the support examples, sets one prototype per class,
    and returns a Keras model that predicts right away, saves to `.keras`
    (loads with `safe_mode=True`), exports like any other model, and can be
    fine-tuned later with the prototypes as the head's starting weights.

    The encoder is nested as one layer (the shape `kt.FeatureCache` and
    `kt.FreezeSchedule` expect) and keeps its `trainable` setting: freeze it
    (`encoder.trainable = False`) to fine-tune the prototypes only. Its
    output becomes one feature vector per example: a KerasHub text
    backbone's tokens are averaged over its padding mask (sentence-encoder
    style; else its `"pooled_output"`), a feature map or sequence is
    averaged over its middle axes.

    Args:
        encoder: a built Keras model (a backbone) with known inputs.
        x_support: the support inputs, in the form the encoder takes (an
            array or a dict of arrays), or a `tf.data.Dataset` of
            `(inputs, labels)` batches.
        y_support: `(examples,)` integer class ids `0..num_classes-1`; every
            class needs at least one example. `None` with a dataset.
        num_classes: defaults to the largest support label + 1.
        scale: initial logit scale of the head (see `kt.PrototypeHead`).
            Defaults to `10.0`.
        learnable_scale: train the scale when fine-tuning. Defaults to `True`.
        activation: `"softmax"` (default: `predict` gives probabilities) or
            `None` for logits.
        batch_size: examples per encoder pass over the support set. Defaults
            to 32.

    Returns:
        A `keras.Model`, compiled for fine-tuning (Adam at 1e-4, sparse
        categorical cross-entropy, accuracy); compile it again to change
        that. Its head is the layer named `"prototypes"`.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> encoder = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> encoder.layers[0].set_weights([np.eye(2, dtype="float32"), np.zeros(2, "float32")])
    >>> support = np.array([[1.0, 0.1], [0.9, -0.1], [0.1, 1.0], [-0.1, 0.8]])
    >>> model = kt.prototype_classifier(encoder, support, np.array([0, 0, 1, 1]))
    >>> model.predict(np.array([[2.0, 0.0], [0.0, 3.0]]), verbose=0).argmax(axis=1)
    array([0, 1])
    """
    if activation not in ("softmax", None):
        raise ValueError(f"`activation` must be 'softmax' or None, got {activation!r}.")
    batch_size = check_integer(batch_size, "batch_size", "examples per encoder pass", low=1)
    feature_model = encoder_features(encoder)
    support_features, support_labels = _support_features(
        feature_model, x_support, y_support, batch_size
    )
    if num_classes is None:
        num_classes = int(support_labels.max()) + 1
        if num_classes < 2:
            raise ValueError(
                "The support labels hold one class only (0): a classifier needs examples "
                "of at least two classes, numbered from 0."
            )
    head = PrototypeHead(num_classes, scale, learnable_scale, name=HEAD_NAME)
    head.set_prototypes(support_features, support_labels)
    # The feature model nested as one layer: `kt.FeatureCache` and
    # `kt.FreezeSchedule` cut the model after it (a KerasHub text encoder's
    # pooling needs the padding mask, so a cut after the bare encoder fails).
    inputs = keras.tree.map_structure(
        lambda tensor: keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=tensor.name),
        feature_model.input,
    )
    outputs = head(feature_model(inputs))
    if activation is not None:
        outputs = keras.layers.Activation(activation, name="probabilities")(outputs)
    model = keras.Model(inputs, outputs, name="prototype_classifier")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=activation is None),
        metrics=["accuracy"],
    )
    # Built now, a fresh model's optimizer saves all its variables: its `.keras`
    # file then reloads without a warning about skipped optimizer variables.
    model.optimizer.build(model.trainable_variables)
    return model


def _support_features(feature_model, x_support, y_support, batch_size):
    if is_dataset(x_support):
        if y_support is not None:
            raise ValueError("With a dataset, labels come from it: leave `y_support` None.")
    elif y_support is None:
        raise ValueError("`y_support` (the class ids of `x_support`) is missing.")
    elif len(keras.tree.flatten(x_support)[0]) != len(y_support):
        raise ValueError(
            f"`x_support` has {len(keras.tree.flatten(x_support)[0])} examples but "
            f"`y_support` has {len(y_support)}: pass the labels of the same examples."
        )
    features, labels = [], []
    for inputs, batch_labels in numpy_batches(x_support, y_support, batch_size):
        features.append(np.asarray(predict_padded(feature_model, inputs, batch_size)))
        labels.append(check_labels(batch_labels, "y_support"))
    if not features:
        raise ValueError("`x_support` is empty: pass at least one example per class.")
    return np.concatenate(features), np.concatenate(labels)
