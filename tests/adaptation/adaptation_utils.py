"""Tiny domain-adaptation models and data for the adaptation tests."""

import keras
import numpy as np

from keras_transfer.adaptation import DomainAdaptationModel

N_SOURCE, N_TARGET, DIM = 8, 8, 3


def domain_data(seed=0, n_source=N_SOURCE, n_target=N_TARGET):
    rng = np.random.default_rng(seed)
    x_source = rng.normal(size=(n_source, DIM)).astype("float32")
    y_source = rng.integers(0, 2, n_source).astype("int32")
    x_target = (rng.normal(size=(n_target, DIM)) + 1.5).astype("float32")
    return x_source, y_source, x_target


def layers(seed=0):
    """Seeded feature extractor, task head and domain head."""

    def init(offset):
        return keras.initializers.GlorotUniform(seed=seed + offset)

    features = keras.Sequential(
        [keras.layers.Dense(4, activation="tanh", kernel_initializer=init(0), name="f1")],
        name="features",
    )
    task = keras.layers.Dense(2, kernel_initializer=init(1), name="task")
    domain = keras.Sequential(
        [
            keras.layers.Dense(5, activation="tanh", kernel_initializer=init(2), name="d1"),
            keras.layers.Dense(1, kernel_initializer=init(3), name="d2"),
        ],
        name="domain",
    )
    return features, task, domain


def task_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def adaptation_model(
    adaptation_loss=None, adaptation_weight=1.0, with_domain_head=True, seed=0, lr=0.1
):
    features, task, domain = layers(seed)
    model = DomainAdaptationModel(
        features,
        task,
        domain if with_domain_head else None,
        adaptation_loss=adaptation_loss,
        adaptation_weight=adaptation_weight,
    )
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=task_loss())
    return model


def pair_inputs(x_source, x_target):
    return {"source": x_source, "target": x_target}


def snapshot(*layers_):
    return [np.array(keras.ops.convert_to_numpy(v)) for layer in layers_ for v in layer.weights]


def one_step(model, x_source, y_source, x_target):
    """One full-batch training step on paired arrays of equal length."""
    model.fit(
        pair_inputs(x_source, x_target),
        y_source,
        batch_size=len(x_source),
        epochs=1,
        shuffle=False,
        verbose=0,
    )
