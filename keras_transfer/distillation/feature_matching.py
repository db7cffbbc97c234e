"""Feature distillation (FitNets): match a student layer to a teacher layer."""

from __future__ import annotations

import keras
from keras import ops

from keras_transfer._keras_internals.losses import scale_loss_for_distribution


def feature_extractor(model: keras.Model, layer_name: str, role: str) -> keras.Model:
    """A model of `model`'s inputs giving `[model's output, layer_name's output]`.

    It shares `model`'s layers, so one pass gives both at no extra cost.
    """
    inputs, outputs = _symbolic_inputs(model), getattr(model, "outputs", None)
    if inputs is None or not outputs:
        raise ValueError(
            f"Feature distillation reads the output of a layer inside the {role} "
            f"'{model.name}', which needs a Functional or Sequential model with known "
            "inputs (a subclassed or unbuilt model has none). Build it from `keras.Input`."
        )
    try:
        layer = model.get_layer(layer_name)
    except ValueError:
        names = [layer.name for layer in model.layers]
        raise ValueError(
            f"The {role} '{model.name}' has no layer named {layer_name!r}. Its layers are "
            f"{names}; pass one of them as `{role}_layer`."
        ) from None
    return keras.Model(inputs, [outputs[0], layer.output], name=f"{model.name}_{role}_features")


def _symbolic_inputs(model):
    """The model's inputs in the structure its call takes, or None."""
    try:
        return model.input  # A Functional model's own structure (a dict, say).
    except (AttributeError, ValueError):
        pass
    inputs = getattr(model, "inputs", None)  # Sequential: a list of one.
    return inputs[0] if inputs and len(inputs) == 1 else inputs or None


def feature_projection(teacher_features, student_features):
    """The learned map from student to teacher features, or `None` if widths agree.

    A `Dense` layer on the last axis: for image feature maps it is FitNets'
    1x1 convolution regressor.
    """
    teacher_shape, student_shape = tuple(teacher_features.shape), tuple(student_features.shape)
    if len(teacher_shape) != len(student_shape) or teacher_shape[1:-1] != student_shape[1:-1]:
        raise ValueError(
            f"The teacher features have shape {teacher_shape} and the student features "
            f"{student_shape}: all but the last (channel) axis must agree for the learned "
            "projection to match them. Pick layers of the same spatial size, or pool first."
        )
    if teacher_shape[-1] == student_shape[-1]:
        return None
    projection = keras.layers.Dense(teacher_shape[-1], name="feature_projection")
    projection.build(student_shape)
    return projection


def feature_loss(teacher_features, student_features, sample_weight=None):
    """Mean squared difference of the features, averaged over the batch."""
    difference = ops.cast(teacher_features, "float32") - ops.cast(student_features, "float32")
    per_sample = ops.mean(ops.square(difference), axis=tuple(range(1, len(difference.shape))))
    if sample_weight is not None:
        weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        per_sample = per_sample * weights
    # Like a Keras loss: divided by the replica count under tf.distribute, so
    # that the replicas' gradients sum to the gradient of the global mean.
    return scale_loss_for_distribution(ops.mean(per_sample))
