"""`kt.PrototypeHead`: a classifier head with one prototype per class."""

from __future__ import annotations

import keras
import numpy as np

from keras_transfer._checks import check_integer, check_number
from keras_transfer.transferability._validation import check_features, check_labels


@keras.saving.register_keras_serializable(package="keras_transfer")
class PrototypeHead(keras.layers.Layer):
    """Cosine-similarity logits against one prototype per class.

    The head of a prototypical-network classifier (Snell, Swersky and Zemel,
    "Prototypical Networks for Few-shot Learning", NeurIPS 2017), in its
    cosine form: a class's prototype is the mean of its support examples'
    L2-normalised features, and an input's logit for a class is

        logit_c = scale * cos(f(x), p_c) = scale * f(x)/|f(x)| . p_c/|p_c|.

    With a handful of labelled examples per class it classifies without any
    training: `set_prototypes(support_features, support_labels)` fills the
    prototypes in. The prototypes are the layer's weights (`prototypes`,
    `(num_classes, dimensions)`), so the head can then be fine-tuned like
    any other, starting from them; the scale (a temperature, `scale`) is a
    weight too, trained or fixed. Build a whole classifier with
    `kt.prototype_classifier`.

    Args:
        num_classes: the number of classes (prototypes).
        scale: the initial multiplier of the cosine similarities (in [-1, 1])
            that makes them logits. Defaults to `10.0`, which gives a
            confident softmax for well-separated classes.
        learnable_scale: train the scale along with the prototypes (default
            `True`), or keep it fixed.
        epsilon: added to squared norms before normalising, so that a zero
            vector gives zero similarity. Defaults to `1e-12`.
        **kwargs: standard layer arguments (`name`, `dtype`, `trainable`).

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import keras_transfer as kt
    >>> head = kt.PrototypeHead(num_classes=2, scale=1.0)
    >>> head.set_prototypes(np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]), np.array([0, 0, 1]))
    >>> np.round(keras.ops.convert_to_numpy(head.prototypes), 3)
    array([[1., 0.],
           [0., 1.]], dtype=float32)
    >>> np.round(keras.ops.convert_to_numpy(head(np.array([[2.0, 2.0]]))), 3)
    array([[0.707, 0.707]], dtype=float32)
    """

    def __init__(
        self,
        num_classes: int,
        scale: float = 10.0,
        learnable_scale: bool = True,
        epsilon: float = 1e-12,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = check_integer(num_classes, "num_classes", low=2)
        self.initial_scale = check_number(scale, "scale", "logit multiplier", low=0, low_open=True)
        if not isinstance(learnable_scale, bool):
            raise TypeError(f"`learnable_scale` must be True or False, got {learnable_scale!r}.")
        self.learnable_scale = learnable_scale
        self.epsilon = check_number(epsilon, "epsilon", low=0, low_open=True)

    def build(self, input_shape):
        dimensions = input_shape[-1]
        if dimensions is None:
            raise ValueError(
                "PrototypeHead needs the feature dimension (the last axis of its input) to "
                f"be known, got input shape {input_shape}."
            )
        self.prototypes = self.add_weight(
            shape=(self.num_classes, dimensions), initializer="zeros", name="prototypes"
        )
        self.scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.initial_scale),
            trainable=self.learnable_scale,
            name="scale",
        )

    def call(self, features):
        features = _normalise(features, self.epsilon)
        prototypes = _normalise(keras.ops.cast(self.prototypes, features.dtype), self.epsilon)
        similarity = keras.ops.matmul(features, keras.ops.transpose(prototypes))
        return keras.ops.cast(self.scale, similarity.dtype) * similarity

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_classes)

    def set_prototypes(self, support_features, support_labels) -> None:
        """Sets each class's prototype to the mean of its support examples'
        L2-normalised features.

        Args:
            support_features: `(examples, dimensions)` features of the
                labelled support examples (the encoder's outputs).
            support_labels: `(examples,)` integer class ids in
                `0..num_classes-1`; every class needs at least one example.
        """
        prototypes = class_prototypes(support_features, support_labels, self.num_classes)
        if not self.built:
            self.build((None, prototypes.shape[1]))
        expected = tuple(self.prototypes.shape)
        if prototypes.shape != expected:
            raise ValueError(
                f"The support features have {prototypes.shape[1]} dimensions but the head was "
                f"built for {expected[1]}: compute them with the same encoder."
            )
        self.prototypes.assign(prototypes.astype(self.prototypes.dtype))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            scale=self.initial_scale,
            learnable_scale=self.learnable_scale,
            epsilon=self.epsilon,
        )
        return config


def class_prototypes(features, labels, num_classes: int) -> np.ndarray:
    """`(num_classes, dimensions)`: each class's mean of L2-normalised features.

    >>> class_prototypes(np.array([[2.0, 0.0], [0.0, 5.0]]), np.array([1, 0]), 2)
    array([[0., 1.],
           [1., 0.]])
    """
    features = check_features(features, "support_features")
    labels = check_labels(labels, "support_labels")
    if len(features) != len(labels):
        raise ValueError(
            f"`support_features` has {len(features)} examples but `support_labels` has "
            f"{len(labels)}: pass the labels of the same examples, in the same order."
        )
    outside = sorted({int(label) for label in labels if not 0 <= label < num_classes})
    if outside:
        raise ValueError(
            f"Support labels {outside} are outside 0..{num_classes - 1}: class ids must "
            f"number the {num_classes} classes from 0 (or raise `num_classes`)."
        )
    counts = np.bincount(labels, minlength=num_classes)
    missing = np.flatnonzero(counts == 0).tolist()
    if missing:
        raise ValueError(
            f"Classes {missing} have no support examples: every class needs at least one "
            "labelled example to make its prototype. Add examples of those classes, or "
            "renumber the classes you have from 0."
        )
    norms = np.sqrt(np.maximum(np.sum(features**2, axis=1, keepdims=True), 1e-24))
    sums = np.zeros((num_classes, features.shape[1]))
    np.add.at(sums, labels, features / norms)
    return sums / counts[:, None]


def _normalise(tensor, epsilon):
    squares = keras.ops.sum(keras.ops.square(tensor), axis=-1, keepdims=True)
    return tensor * keras.ops.rsqrt(keras.ops.maximum(squares, epsilon))
