"""One TensorFlow worker of a MultiWorkerMirroredStrategy job, as a script.

    TF_CONFIG=... KERAS_BACKEND=tensorflow \\
        python tests/distribution/multi_process_tensorflow_runs.py OUT_DIR

`test_multi_worker_tensorflow.py` starts two, on 127.0.0.1. Each trains a
plain Keras model under the strategy (keras-team/keras#20585: `fit` fails),
then sets up each of the library's pieces under it, and writes what
happened to `OUT_DIR/worker<task index>.json`: `"no error"` or the error's type and message.
"""

from __future__ import annotations

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

import keras_transfer as kt


def classifier(name: str) -> keras.Model:
    inputs = keras.Input((4,), name=f"{name}_x")
    hidden = keras.layers.Dense(4, activation="tanh", name=f"{name}_hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name=f"{name}_logits")(hidden), name=name)


def plain_keras_fit(strategy):
    with strategy.scope():
        model = classifier("plain")
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.ones((16, 4), "float32")
    y = np.zeros((16,), "int32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    model.fit(dataset, epochs=1, verbose=0)


def discriminative_lr(strategy):
    with strategy.scope():
        model = classifier("model")
        kt.DiscriminativeLR(keras.optimizers.Adam(1e-3), model, decay=2.6)


def freeze_schedule(strategy):
    with strategy.scope():
        model = classifier("model")
        model.compile("adam", "mse")
    kt.FreezeSchedule(model, {0: 1, 1: "all"})


def distillation_model(strategy):
    with strategy.scope():
        teacher = classifier("teacher")
        teacher.trainable = False
        model = kt.DistillationModel(teacher, classifier("student"))
        model.compile("adam")


def domain_adaptation_model(strategy):
    with strategy.scope():
        features = keras.Sequential([keras.layers.Dense(4, activation="tanh")])
        model = kt.DomainAdaptationModel(features, keras.layers.Dense(3))
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))


RUNS = {
    "plain_keras_fit": plain_keras_fit,
    "DiscriminativeLR": discriminative_lr,
    "FreezeSchedule": freeze_schedule,
    "DistillationModel": distillation_model,
    "DomainAdaptationModel": domain_adaptation_model,
}


def main(out_dir: str) -> None:
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    results = {"replicas": strategy.num_replicas_in_sync}
    for name, run in RUNS.items():
        try:
            run(strategy)
            results[name] = "no error"
        except Exception as error:  # Recorded for the test to judge.
            results[name] = f"{type(error).__name__}: {error}"
    with open(os.path.join(out_dir, f"worker{index}.json"), "w") as file:
        json.dump(results, file)


if __name__ == "__main__":
    main(sys.argv[1])
