"""Per-example gradients, squared and summed over a batch: one function per backend.

`squared_gradient_sums(model, variables, example_loss)` returns a function
`(x, y) -> [array per variable]`: for each of `variables`, the sum over the
batch's examples of the squared gradient of `example_loss(x_i, y_i)` (a
scalar for one example, without a batch axis). Each example gets its own
gradient, vectorised over the batch: `jax.vmap` of `jax.grad`,
`torch.func.vmap` of `torch.func.grad`, `tf.vectorized_map` of a
`tf.GradientTape`. The variables' values enter through a
`keras.StatelessScope`, so any variable can be differentiated, trainable or
not. TensorFlow is imported only in `_tensorflow`.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np


def squared_gradient_sums(model: keras.Model, variables: list, example_loss):
    """The batch function for the current backend (see the module docstring)."""
    backend = keras.backend.backend()
    makers = {"jax": _jax, "tensorflow": _tensorflow, "torch": _torch}
    if backend not in makers:
        raise ValueError(
            f"Per-example gradients need a backend that differentiates: TensorFlow, JAX "
            f"or PyTorch. The Keras backend is {backend!r}; set `KERAS_BACKEND`."
        )
    return makers[backend](model, variables, example_loss)


def _loss_at(variables, values, example_loss, x, y):
    with keras.StatelessScope(state_mapping=list(zip(variables, values))):
        return example_loss(x, y)


def _jax(model, variables, example_loss):
    import jax
    import jax.numpy as jnp

    differentiated = {id(v) for v in variables}
    # Every other weight is an argument too, not a constant baked into the
    # compiled function (a frozen backbone can be large).
    others = [v for v in model.weights if id(v) not in differentiated]

    def loss_at(values, other_values, x, y):
        return _loss_at(variables + others, values + other_values, example_loss, x, y)

    @jax.jit
    def sums(values, other_values, x, y):
        per_example = jax.vmap(jax.grad(loss_at), in_axes=(None, None, 0, 0))
        grads = per_example(values, other_values, x, y)
        return [jnp.sum(jnp.square(grad), axis=0) for grad in grads]

    def run(x, y):
        values = [v.value for v in variables]
        other_values = [v.value for v in others]
        return [np.asarray(total) for total in sums(values, other_values, x, y)]

    return run


def _torch(model, variables, example_loss):
    import torch
    from torch.func import grad, vmap

    def loss_at(values, x, y):
        return _loss_at(variables, values, example_loss, x, y)

    per_example = vmap(grad(loss_at), in_dims=(None, 0, 0))
    state = {"vectorised": True}

    def looped(values, x, y):
        count = len(keras.tree.flatten(x)[0])
        totals = [torch.zeros_like(value) for value in values]
        for index in range(count):
            inputs = [value.detach().requires_grad_(True) for value in values]
            example = keras.tree.map_structure(lambda t, i=index: t[i], (x, y))
            loss = loss_at(inputs, *example)
            grads = torch.autograd.grad(loss, inputs, allow_unused=True)
            for total, g in zip(totals, grads):
                if g is not None:
                    total += torch.square(g)
        return totals

    def run(x, y):
        x, y = keras.tree.map_structure(keras.ops.convert_to_tensor, (x, y))
        values = [v.value.detach() for v in variables]
        if state["vectorised"]:
            try:
                with torch.no_grad():
                    grads = per_example(values, x, y)
                return [torch.sum(torch.square(g), dim=0).cpu().numpy() for g in grads]
            except RuntimeError as error:  # An op `torch.func` cannot vectorise.
                state["vectorised"] = False
                warnings.warn(
                    "Per-example gradients: torch.func could not vectorise this model "
                    f"({error}); computing them one example at a time instead.",
                    stacklevel=3,
                )
        return [total.cpu().numpy() for total in looped(values, x, y)]

    return run


def _tensorflow(model, variables, example_loss):
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def sums(values, x, y):
        def one(example):
            with tf.GradientTape() as tape:
                tape.watch(values)
                loss = _loss_at(variables, values, example_loss, *example)
            grads = tape.gradient(loss, values, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            # An embedding's gradient comes as IndexedSlices, which
            # `vectorized_map` would densify itself, warning for each one.
            return [tf.convert_to_tensor(g) for g in grads]

        grads = tf.vectorized_map(one, (x, y))
        return [tf.reduce_sum(tf.square(g), axis=0) for g in grads]

    def run(x, y):
        values = [tf.convert_to_tensor(v.value) for v in variables]
        return [total.numpy() for total in sums(values, x, y)]

    return run
