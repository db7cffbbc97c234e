"""Tiny models and helpers that the tests build on any backend."""

import sys

import keras
import numpy as np
import pytest


def dense_model(with_batchnorm=False, name="model"):
    """input -> a -> [bn] -> b -> head: three groups (bn joins `a`)."""
    inputs = keras.Input((6,), name="x")
    hidden = keras.layers.Dense(8, activation="relu", name="a")(inputs)
    if with_batchnorm:
        hidden = keras.layers.BatchNormalization(name="bn")(hidden)
    hidden = keras.layers.Dense(8, activation="relu", name="b")(hidden)
    outputs = keras.layers.Dense(1, name="head")(hidden)
    return keras.Model(inputs, outputs, name=name)


def regression_data(samples=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, 6)).astype("float32")
    y = (x.sum(axis=1, keepdims=True) + 1.0).astype("float32")
    return x, y


def values(variables):
    """Copies of the current values, as numpy arrays."""
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


class WeightRecorder(keras.callbacks.Callback):
    """Snapshots named layers' weights at the end of every epoch."""

    def __init__(self, layer_names):
        super().__init__()
        self.layer_names = layer_names
        self.snapshots = []

    def on_train_begin(self, logs=None):
        self.snapshots = [self._snapshot()]

    def on_epoch_end(self, epoch, logs=None):
        self.snapshots.append(self._snapshot())

    def _snapshot(self):
        return {name: values(self.model.get_layer(name).weights) for name in self.layer_names}


def branchy_model():
    """Three independent branches a, b, head, one output column each.

    The mean squared error over the columns is separable, so each branch's
    gradient depends on its own weights only: a branch trained at a scaled
    rate follows exactly the path of a whole model trained at that rate.
    """
    inputs = keras.Input((6,), name="x")
    branches = [keras.layers.Dense(1, name=name)(inputs) for name in ("a", "b", "head")]
    return keras.Model(inputs, keras.layers.Concatenate()(branches), name="branchy")


def branchy_data(samples=32, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    x = (scale * rng.normal(size=(samples, 6))).astype("float32")
    y = np.stack([x.sum(axis=1), x[:, 0], -x[:, 1]], axis=1).astype("float32") + scale
    return x, y


class TwoBlockLayer(keras.layers.Layer):
    """One layer holding two blocks of variables, like a wrapped SavedModel."""

    def build(self, input_shape):
        self.first = self.add_weight(shape=(input_shape[-1], 4), name="block_0_kernel")
        self.second = self.add_weight(shape=(4, 4), name="block_1_kernel")

    def call(self, inputs):
        return keras.ops.matmul(keras.ops.matmul(inputs, self.first), self.second)

    def variable_groups(self):
        return [("block_0", [self.first]), ("block_1", [self.second])]


def two_block_model():
    inputs = keras.Input((6,))
    hidden = TwoBlockLayer(name="encoder")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(hidden))


def tiny_bert(num_layers=2, vocabulary_size=50):
    """A KerasHub BERT small enough to build in a blink."""
    import keras_hub

    return keras_hub.models.BertBackbone(
        vocabulary_size=vocabulary_size,
        num_layers=num_layers,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=12,
    )


def tiny_keras_cv_resnet():
    """A two-stack KerasCV ResNet, or a skip saying why keras-cv is unusable
    (not installed, or not importable with this Keras)."""
    from keras_transfer.backbones.keras_cv_support import import_keras_cv

    try:
        keras_cv = import_keras_cv()
    except ImportError as error:
        pytest.skip(str(error))
    return keras_cv.models.ResNetBackbone(
        stackwise_filters=[8, 16],
        stackwise_blocks=[2, 1],
        stackwise_strides=[1, 2],
        include_rescaling=False,
        input_shape=(32, 32, 3),
    )


def shadow_with_a_broken_package(monkeypatch, tmp_path, name: str, source: str) -> None:
    """Makes `import name` run `source` (a package whose own import fails, as
    tensorflow-hub or keras-cv do with the wrong dependencies)."""
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text(source)
    monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
