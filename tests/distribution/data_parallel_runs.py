"""Trains each component on one device and data-parallel on four, as a script.

Logical devices must be configured before TensorFlow or JAX start, so
`test_data_parallel.py` runs this file in a fresh interpreter:

    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=4 \
        python tests/distribution/data_parallel_runs.py out.json [scenario ...]

On TensorFlow it splits the CPU into 4 logical devices and trains under
`tf.distribute.MirroredStrategy`; on JAX it trains under
`keras.distribution.DataParallel` over the 4 host devices. Every scenario runs
twice from the same initial weights on the same global batches of 16, once on
one device and once on four, and writes the final weights and the epoch logs
of both runs to the JSON file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np
from keras import ops

import keras_transfer as kt
from keras_transfer.adaptation import CoralLoss, DomainAdaptationModel, DomainConfusionLoss
from keras_transfer.distillation import DistillationModel

REPLICAS = 4
GLOBAL_BATCH = 16


def configure_devices(backend: str) -> None:
    """Splits the host CPU into `REPLICAS` logical devices (before first use)."""
    if backend == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(REPLICAS)]
        )
    elif backend == "jax":
        flag = f"--xla_force_host_platform_device_count={REPLICAS}"
        if flag not in os.environ.get("XLA_FLAGS", ""):
            raise RuntimeError(f"Start this script with XLA_FLAGS={flag} on JAX.")
    else:
        raise RuntimeError(f"No data-parallel runs on the {backend} backend.")


def data_parallel_scope(distributed: bool):
    """The scope a model is built, compiled and fitted in; and its device count."""
    if not distributed:
        return contextlib.nullcontext(), 1
    if keras.backend.backend() == "tensorflow":
        strategy = _mirrored_strategy()
        return strategy.scope(), strategy.num_replicas_in_sync
    devices = keras.distribution.list_devices("cpu")
    return keras.distribution.DataParallel(devices=devices).scope(), len(devices)


def model_parallel_scope():
    """JAX only: a 2 x 2 mesh; the hidden kernels are split over "model"."""
    devices = keras.distribution.list_devices("cpu")
    mesh = keras.distribution.DeviceMesh((2, 2), ["batch", "model"], devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["^a/kernel$"] = (None, "model")
    layout_map["^b/kernel$"] = ("model", None)
    distribution = keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    return distribution.scope(), len(devices)


@functools.cache
def _mirrored_strategy():
    # One strategy per process: two MirroredStrategy objects hand out the same
    # collective instance keys, and TensorFlow's collective executor then
    # pairs the all-reduces of one with the shapes of the other.
    import tensorflow as tf

    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(REPLICAS)])


def placement(variable) -> dict:
    """How many devices hold `variable`, and the shape of the part each holds."""
    if keras.backend.backend() == "tensorflow":
        copies = getattr(variable.value, "values", [variable.value])
        return {"devices": len(copies), "shard_shape": list(copies[0].shape)}
    value = variable.value
    return {
        "devices": len(value.sharding.device_set),
        "shard_shape": list(value.addressable_shards[0].data.shape),
    }


def seed_weights(model, seed: int = 0) -> None:
    """Sets every float weight from one numpy generator: runs start equal."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if "float" in str(variable.dtype) and variable.name != "adaptation_scale":
            variable.assign(rng.normal(scale=0.4, size=variable.shape).astype("float32"))


def regression_data(samples: int = 64):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(samples, 6)).astype("float32")
    return x, (x.sum(axis=1, keepdims=True) + 1.0).astype("float32")


def classification_data(samples: int = 64):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(samples, 6)).astype("float32")
    return x, x[:, :3].argmax(axis=1).astype("int32")


def classifier(width: int, name: str) -> keras.Model:
    inputs = keras.Input((6,), name=f"{name}_x")
    hidden = keras.layers.Dense(width, activation="tanh", name=f"{name}_hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name=f"{name}_logits")(hidden), name=name)


def fit(model, x, y, epochs=2, callbacks=()):
    return model.fit(
        x,
        y,
        batch_size=GLOBAL_BATCH,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=list(callbacks),
    )


def dense_model() -> keras.Model:
    """input -> a -> b -> head: three layer groups."""
    inputs = keras.Input((6,), name="x")
    hidden = keras.layers.Dense(8, activation="tanh", name="a")(inputs)
    hidden = keras.layers.Dense(8, activation="tanh", name="b")(hidden)
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(hidden))


def freeze_schedule_dlr(distributed: bool):
    """FreezeSchedule changes stage mid-epoch and at an epoch boundary.

    DiscriminativeLR wraps AdamW: its decoupled weight decay goes through the
    per-group decay path, which on TensorFlow runs in cross-replica merge
    calls.
    """
    model = dense_model()
    seed_weights(model)
    optimizer = kt.DiscriminativeLR(
        keras.optimizers.AdamW(0.02, weight_decay=0.05), model, decay=3.0
    )
    model.compile(optimizer=optimizer, loss="mse")
    # 4 steps an epoch: the second stage starts at step 3 of epoch 0, the
    # third with epoch 1.
    schedule = kt.FreezeSchedule(model, {0: 1, 3: 2, 4: "all"}, unit="step", verbose=0)
    history = fit(model, *regression_data(), callbacks=[schedule])
    history.history["weight_decay"] = [optimizer.weight_decay]
    return model, history


def distillation(distributed: bool):
    """DistillationModel with feature matching; the student at two rates.

    The loss has all three terms: distillation, hard labels, and the student's
    hidden layer matching the teacher's through a learned projection.
    """
    teacher = classifier(8, "teacher")
    seed_weights(teacher, seed=7)
    teacher.trainable = False
    student = classifier(4, "student")
    seed_weights(student, seed=3)
    model = DistillationModel(
        teacher,
        student,
        temperature=2.0,
        distillation_weight=0.6,
        teacher_layer="teacher_hidden",
        student_layer="student_hidden",
    )
    model.compile(
        optimizer=kt.DiscriminativeLR(keras.optimizers.Adam(0.02), student, decay=2.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model, fit(model, *classification_data())


def domain_adaptation(distributed: bool, loss=None):
    """DomainAdaptationModel: DANN under a FreezeSchedule, or another loss."""
    features = keras.Sequential(
        [
            keras.layers.Dense(6, activation="tanh", name="f1"),
            keras.layers.Dense(4, activation="tanh", name="f2"),
        ],
        name="features",
    )
    domain_head = None
    if loss is None or isinstance(loss, DomainConfusionLoss):
        domain_head = keras.Sequential(
            [keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(1)], name="domain"
        )
    model = DomainAdaptationModel(
        features,
        keras.layers.Dense(3, name="task"),
        domain_head,
        adaptation_loss=loss,
        adaptation_weight=0.5,
    )
    x_source, y_source = classification_data()
    x_target = (np.random.default_rng(3).normal(size=x_source.shape) + 1.0).astype("float32")
    pairs = {"source": x_source, "target": x_target}
    model(pairs)  # Builds every weight, for `seed_weights`.
    seed_weights(model)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    schedule = [kt.FreezeSchedule(model, {0: 1, 1: "all"}, verbose=0)] if loss is None else []
    return model, fit(model, pairs, y_source, callbacks=schedule)


def domain_coral(distributed: bool):
    """DomainAdaptationModel with CORAL, a statistic of the whole batch.

    JAX computes it on the global batch, so one device is the reference.
    Under tf.distribute each replica computes it on its own quarter of the
    batch (as BatchNormalization does its statistics) and the gradients are
    averaged: the one-device reference averages CORAL over the quarters.
    """
    per_replica = not distributed and keras.backend.backend() == "tensorflow"
    return domain_adaptation(distributed, PerReplicaCoral() if per_replica else CoralLoss())


class PerReplicaCoral(keras.losses.Loss):
    """CORAL averaged over `REPLICAS` consecutive slices of the batch."""

    def __init__(self):
        super().__init__(name="per_replica_coral", reduction="sum")
        self.coral = CoralLoss()

    def call(self, source, target):
        source_size = ops.shape(source)[0] // REPLICAS
        target_size = ops.shape(target)[0] // REPLICAS
        values = [
            self.coral(
                source[i * source_size : (i + 1) * source_size],
                target[i * target_size : (i + 1) * target_size],
            )
            for i in range(REPLICAS)
        ]
        return ops.mean(ops.stack(values))


SCENARIOS = {
    "freeze_schedule_dlr": freeze_schedule_dlr,
    "distillation_dlr": distillation,
    "domain_adaptation_freeze_schedule": domain_adaptation,
    "domain_confusion": lambda distributed: domain_adaptation(
        distributed, DomainConfusionLoss("confusion")
    ),
    "domain_coral": domain_coral,
    # JAX only: ModelParallel, with optimizer slots sharded like their weights.
    "model_parallel_freeze_schedule_dlr": freeze_schedule_dlr,
}


def run_scenario(name: str, distributed: bool) -> dict:
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    if distributed and name.startswith("model_parallel"):
        scope, devices = model_parallel_scope()
    else:
        scope, devices = data_parallel_scope(distributed)
    with scope:
        model, history = SCENARIOS[name](distributed)
        weights = {v.path: ops.convert_to_numpy(v).tolist() for v in model.trainable_weights}
        kernel = model.trainable_weights[0]
        placed = {"kernel": placement(kernel)}
        if model.optimizer is not None:
            slots = [v for v in model.optimizer.variables if tuple(v.shape) == tuple(kernel.shape)]
            placed["optimizer_slot"] = placement(slots[0])
    return {
        "backend": keras.backend.backend(),
        "devices": devices,
        "placement": placed,
        "weights": weights,
        "logs": {key: [float(v) for v in values] for key, values in history.history.items()},
    }


def main(output_path: str, names: list[str]) -> None:
    configure_devices(keras.backend.backend())
    results = {}
    for name in names or list(SCENARIOS):
        start = time.perf_counter()
        results[name] = {
            "single": run_scenario(name, distributed=False),
            "data_parallel": run_scenario(name, distributed=True),
        }
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    Path(output_path).write_text(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
