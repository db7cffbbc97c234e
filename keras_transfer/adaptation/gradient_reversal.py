"""`GradientReversal`: identity forward, negated and scaled gradient backward."""

from __future__ import annotations

import keras
from keras import ops

from keras_transfer._checks import check_number


@ops.custom_gradient
def _reverse(inputs, strength):
    def grad(*args, upstream=None):
        # TensorFlow and JAX pass the upstream gradient positionally, PyTorch
        # as a keyword (after the saved inputs).
        if upstream is None:
            (upstream,) = args
        return ops.multiply(upstream, ops.negative(strength)), ops.zeros_like(strength)

    return inputs, grad


def reverse_gradient(inputs, strength):
    """Returns `inputs`; backward, multiplies their gradient by `-strength`.

    The functional form of `GradientReversal`, for code that holds its own
    strength (a tensor or variable, read at each step: no retrace when it
    changes).

    Args:
        inputs: a tensor.
        strength: a scalar (float, tensor or `keras.Variable`) >= 0.

    Returns:
        A tensor equal to `inputs`.
    """
    inputs = ops.convert_to_tensor(inputs)
    return _reverse(inputs, ops.cast(strength, inputs.dtype))


def check_strength(value, what: str = "strength") -> float:
    """A finite number >= 0 as a float, or a `ValueError` naming `what`."""
    return check_number(
        value,
        what,
        "0 turns adaptation off; Ganin & Lempitsky ramp it from 0 to 1; a negative "
        "value would stop reversing the gradient and help the domain classifier",
        low=0,
    )


@keras.saving.register_keras_serializable(package="keras_transfer")
class GradientReversal(keras.layers.Layer):
    """Passes its input through unchanged and reverses the gradient.

    The gradient reversal layer of DANN (Ganin & Lempitsky, 2015): forward, the
    identity; backward, the incoming gradient multiplied by `-strength`. Put it
    between a feature extractor and a domain classifier and one minimisation
    trains the classifier to tell the domains apart while pushing the features
    to make that impossible. `kt.DomainAdaptationModel` does this for you; use
    the layer to build adversarial models of your own.

    The strength is a non-trainable variable, read at every step, so changing
    it during training (`layer.set_strength(0.3)` from a callback) takes
    effect without retracing. It is saved with the model's weights. (On the
    JAX backend a `fit` keeps variable values outside the model during an
    epoch; a callback's `self.model` writes them back first, so set the
    strength from a callback, or call `model.jax_state_sync()` before.)

    Implemented with `keras.ops.custom_gradient`, so it works on the
    TensorFlow, JAX and PyTorch backends.

    Args:
        strength: the factor of the reversed gradient, a finite number >= 0.
            Defaults to 1.0.
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> layer = kt.GradientReversal(strength=0.5)
    >>> np.asarray(layer(np.array([[1.0, -2.0]])))
    array([[ 1., -2.]], dtype=float32)
    >>> layer.set_strength(0.25)
    >>> layer.get_config()["strength"]
    0.25
    """

    def __init__(self, strength: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        strength = check_strength(strength)
        self.strength = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(strength),
            trainable=False,
            name="strength",
        )
        self.supports_masking = True

    def set_strength(self, strength: float) -> None:
        """Sets the strength (a number >= 0) for the following steps."""
        self.strength.assign(check_strength(strength))

    def call(self, inputs):
        return reverse_gradient(inputs, self.strength)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["strength"] = float(ops.convert_to_numpy(self.strength))
        return config
