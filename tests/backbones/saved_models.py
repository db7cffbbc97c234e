"""SavedModels the `kt.HubLayer` tests build themselves (TensorFlow only)."""

import contextlib
import os

import tensorflow as tf

INPUT_DIM = 4
UNITS = 8
REGULARIZATION = 0.01


class _Block(tf.Module):
    """`relu(x @ kernel + bias)`, less a moving mean of its outputs that, like
    BatchNormalization's statistics, updates only when training."""

    def __init__(self, units_in, units_out, index, moving_mean=False):
        super().__init__(name=f"layer_{index}")
        with self.name_scope:
            initial = tf.random.stateless_normal([units_in, units_out], seed=[index, 1])
            self.kernel = tf.Variable(0.5 * initial, name="kernel")
            self.bias = tf.Variable(tf.zeros([units_out]), name="bias")
            self.moving_mean = None
            if moving_mean:
                self.moving_mean = tf.Variable(
                    tf.zeros([units_out]), trainable=False, name="moving_mean"
                )

    def __call__(self, inputs, training):
        outputs = tf.nn.relu(inputs @ self.kernel + self.bias)
        if self.moving_mean is None:
            return outputs
        if training:
            batch_mean = tf.reduce_mean(outputs, axis=0)
            self.moving_mean.assign(0.9 * self.moving_mean + 0.1 * batch_mean)
        return outputs - self.moving_mean


class Encoder(tf.Module):
    """input (4) -> `encoder/layer_0` -> `encoder/layer_1` (with a moving mean)
    -> `encoder/layer_2` -> features (8)."""

    def __init__(self):
        super().__init__(name="encoder")
        with self.name_scope:
            self.blocks = [
                _Block(INPUT_DIM if i == 0 else UNITS, UNITS, i, moving_mean=i == 1)
                for i in range(3)
            ]
        kernel = self.blocks[0].kernel
        self.regularization_losses = [
            tf.function(lambda: REGULARIZATION * tf.reduce_sum(kernel**2), input_signature=[])
        ]

    @tf.function
    def __call__(self, inputs, training=False):
        for block in self.blocks:
            inputs = block(inputs, training)
        return inputs

    @tf.function(input_signature=[tf.TensorSpec([None, INPUT_DIM], tf.float32)])
    def serve(self, features):
        outputs = self(features, training=False)
        return {"features": outputs, "mean": tf.reduce_mean(outputs, axis=-1, keepdims=True)}


def save_encoder(path, hub_attributes=True) -> str:
    """Saves an `Encoder` in TF-Hub's reusable SavedModel format.

    `__call__(inputs, training=False)` is traced for both values of `training`
    (as TF-Hub models are), `regularization_losses` holds one weight penalty and
    the `serving_default` signature returns a dict. With `hub_attributes`, the
    root also lists `variables` and `trainable_variables`, as TF-Hub asks.
    """
    encoder = Encoder()
    spec = tf.TensorSpec([None, INPUT_DIM], tf.float32)
    for training in (False, True):
        encoder.__call__.get_concrete_function(spec, training=training)
    root = encoder
    if hub_attributes:
        root = tf.train.Checkpoint(encoder=encoder)
        root.__call__ = encoder.__call__
        root.variables = list(encoder.variables)
        root.trainable_variables = list(encoder.trainable_variables)
        root.regularization_losses = encoder.regularization_losses
    tf.saved_model.save(root, os.fspath(path), signatures={"serving_default": encoder.serve})
    return os.fspath(path)


class _Scales(tf.Module):
    """Multiplies its input by one scalar variable per name, in order; those
    named `moving_*` are not trainable."""

    def __init__(self, names):
        super().__init__()
        self.scales = []
        for index, name in enumerate(names):
            *scopes, leaf = name.split("/")
            scope = tf.name_scope("/".join(scopes) + "/") if scopes else contextlib.nullcontext()
            with scope:
                trainable = not leaf.startswith("moving_")
                self.scales.append(tf.Variable(1.0 + index, name=leaf, trainable=trainable))

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32)])
    def __call__(self, inputs):
        for scale in self.scales:
            inputs = inputs * scale
        return inputs


def save_named_variables(path, names) -> str:
    """Saves a SavedModel whose variables have the given names (e.g.
    `"block_1/conv/kernel"`), read by `__call__` in the given order."""
    tf.saved_model.save(_Scales(names), os.fspath(path))
    return os.fspath(path)


def save_signature_only(path) -> str:
    """Saves a SavedModel with a `serving_default` signature and no `__call__`."""
    root = tf.train.Checkpoint(scale=tf.Variable(2.0, name="scale"))
    serve = tf.function(
        lambda features: {"scaled": features * root.scale},
        input_signature=[tf.TensorSpec([None, 1], tf.float32)],
    )
    tf.saved_model.save(root, os.fspath(path), signatures={"serving_default": serve})
    return os.fspath(path)
