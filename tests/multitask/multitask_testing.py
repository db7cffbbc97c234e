"""Tiny backbones, heads, task data and plain reference models for the multi-task tests."""

import keras
import numpy as np

from keras_transfer.multitask import MultiTaskModel

INPUT_DIM = 4


def backbone(name="backbone"):
    inputs = keras.Input((INPUT_DIM,), name="x")
    hidden = keras.layers.Dense(5, activation="tanh", name="shared_a")(inputs)
    hidden = keras.layers.Dense(5, activation="tanh", name="shared_b")(hidden)
    return keras.Model(inputs, hidden, name=name)


def heads():
    """`topics`: 3 classes (sparse cross-entropy); `scores`: regression (mse)."""
    return {
        "topics": keras.layers.Dense(3, name="topics_head"),
        "scores": keras.Sequential(
            [keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)], name="scores_head"
        ),
    }


LOSSES = {
    "topics": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "scores": "mse",
}


def model(**compile_kwargs):
    built = MultiTaskModel(backbone(), heads())
    if compile_kwargs:
        built.compile(**compile_kwargs)
    return built


def task_data(samples=(16, 8), seed=0):
    rng = np.random.default_rng(seed)
    n_topics, n_scores = samples
    x_topics = rng.normal(size=(n_topics, INPUT_DIM)).astype("float32")
    y_topics = rng.integers(0, 3, size=n_topics)
    x_scores = rng.normal(size=(n_scores, INPUT_DIM)).astype("float32")
    y_scores = x_scores.sum(axis=1, keepdims=True).astype("float32")
    return {"topics": (x_topics, y_topics), "scores": (x_scores, y_scores)}


def tagged_batch(task, data, tasks=("scores", "topics")):
    """One batch of `task`, tagged as `kt.task_batches` tags it."""
    x, y = data[task]
    names = sorted(tasks)
    labels = {
        name: y
        if name == task
        else np.zeros((len(x), *data[name][1].shape[1:]), data[name][1].dtype)
        for name in names
    }
    return {"inputs": x, "task": np.full(len(x), names.index(task), "int32")}, labels


def values(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def numpy_of(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


class PlainModels:
    """`backbone + head` as plain Keras models, one per task, sharing one copy
    of the backbone: the per-task reference of a `MultiTaskModel`."""

    def __init__(self, multi_task, optimizer_factory, losses=LOSSES):
        self.backbone = keras.models.clone_model(multi_task.backbone)
        self.backbone.set_weights(multi_task.backbone.get_weights())
        self.models = {}
        for task, head in multi_task.heads.items():
            inputs = keras.Input((INPUT_DIM,))
            twin = _clone_layer(head, multi_task.task_heads.feature_shape)
            model = keras.Model(inputs, twin(self.backbone(inputs)))
            model.compile(optimizer=optimizer_factory(), loss=losses[task])
            self.models[task] = model

    def step(self, task, x, y):
        self.models[task].train_on_batch(x, y)

    def head(self, task):
        return self.models[task].layers[-1]


def _clone_layer(layer, feature_shape):
    twin = layer.__class__.from_config(layer.get_config())
    twin.build(feature_shape)
    twin.set_weights(layer.get_weights())
    return twin
