"""Trains each component in a JAX multi-process job, or in one process, as a script.

    python tests/distribution/multi_process_runs.py OUT_DIR SCENARIO... \\
        [--kill-at EPOCH BATCH PROCESS] [--export]

Started by `multi_process.run_job` (the environment names the coordinator,
the process count and this process's id), it joins the job, trains under
`keras.distribution.DataParallel(devices=jax.devices(),
auto_shard_dataset=False)` and feeds this process's share of every global
batch (`kt.process_shard`). Started plainly, it is the reference: one
process, one device, the same global batches. Either way each scenario
writes `OUT_DIR/SCENARIO.TAG.npz` (TAG `process0`, `process1`... or
`single`): the final weights and optimizer state, the epoch logs, and the
number of trainable variables at every step.

`--kill-at` makes process PROCESS send itself SIGKILL after batch BATCH of
epoch EPOCH of the `finetune_killed` scenario (skipped on one process).
`--export` makes process 0 export the distillation student with
`kt.export_saved_model` to `OUT_DIR/saved_model`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

# Run as a script by the launcher, and imported by pytest's doctest collection:
# either way the launcher module beside it must be importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import multi_process  # noqa: E402

if multi_process.in_job():
    PROCESS_ID, NUM_PROCESSES = multi_process.initialize()
else:
    PROCESS_ID, NUM_PROCESSES = 0, 1

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from data_parallel_runs import (  # noqa: E402
    classification_data,
    classifier,
    dense_model,
    regression_data,
    seed_weights,
)

import keras_transfer as kt  # noqa: E402
from keras_transfer.adaptation import DomainAdaptationModel  # noqa: E402

GLOBAL_BATCH = 16
PROCESS_BATCH = GLOBAL_BATCH // NUM_PROCESSES


def shard(data):
    """This process's rows of every global batch (everything on one process)."""
    if NUM_PROCESSES == 1:
        return data
    if isinstance(data, tf.data.Dataset):
        return kt.process_shard(data)
    return kt.process_shard(data, GLOBAL_BATCH)


class CountTrainable(keras.callbacks.Callback):
    """Records how many variables train at every step (after FreezeSchedule)."""

    def __init__(self):
        super().__init__()
        self.counts = []

    def on_train_batch_begin(self, batch, logs=None):
        self.counts.append(len(self.model.trainable_weights))


class CountSaves(keras.callbacks.Callback):
    """Counts this process's `save_weights` calls (the backups it writes)."""

    def __init__(self):
        super().__init__()
        self.saves = 0

    def set_model(self, model):
        super().set_model(model)
        if not hasattr(model, "_kt_counted"):
            save_weights = model.save_weights

            def counted(*args, **kwargs):
                self.saves += 1
                return save_weights(*args, **kwargs)

            model.save_weights = counted
            model._kt_counted = True


class KillAt(keras.callbacks.Callback):
    """Process `process` sends itself SIGKILL after batch `batch` of epoch `epoch`."""

    def __init__(self, epoch, batch, process):
        super().__init__()
        self.target, self.process, self.epoch = (epoch, batch), process, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if PROCESS_ID == self.process and (self.epoch, batch) == self.target:
            print(f"process {PROCESS_ID}: SIGKILL at epoch {self.epoch}, batch {batch}")
            os.kill(os.getpid(), signal.SIGKILL)


def finetune(out_dir: Path, callbacks: list, backup_name: str = "backup"):
    """FreezeSchedule {0: 1, 1: "all"} + DiscriminativeLR(AdamW); arrays.

    Backed up by SafeBackupAndRestore at every epoch end, into
    `out_dir/backup_name` (`_single` added on one process).
    """
    model = dense_model()
    seed_weights(model)
    optimizer = kt.DiscriminativeLR(
        keras.optimizers.AdamW(0.02, weight_decay=0.05), model, decay=3.0
    )
    model.compile(optimizer=optimizer, loss="mse")
    schedule = kt.FreezeSchedule(model, {0: 1, 1: "all"}, verbose=0)
    folder = out_dir / (backup_name if NUM_PROCESSES > 1 else f"{backup_name}_single")
    backup = kt.SafeBackupAndRestore(folder, delete_checkpoint=False)
    x, y = shard(regression_data())
    history = model.fit(
        x,
        y,
        batch_size=PROCESS_BATCH,
        epochs=4,
        shuffle=False,
        verbose=0,
        callbacks=[schedule, *callbacks, backup],
    )
    return model, history


def distillation_model():
    teacher = classifier(8, "teacher")
    seed_weights(teacher, seed=7)
    teacher.trainable = False
    student = classifier(4, "student")
    seed_weights(student, seed=3)
    model = kt.DistillationModel(teacher, student, temperature=2.0)
    model.compile(optimizer=kt.DiscriminativeLR(keras.optimizers.Adam(0.02), student, decay=2.0))
    return model


def distillation(out_dir: Path, callbacks: list):
    """Pure distillation (no labels), the teacher run every step; tf.data."""
    model = distillation_model()
    x, _ = classification_data()
    dataset = shard(tf.data.Dataset.from_tensor_slices(x).batch(GLOBAL_BATCH))
    history = model.fit(dataset, epochs=2, shuffle=False, verbose=0, callbacks=callbacks)
    return model, history


def distillation_cached(out_dir: Path, callbacks: list):
    """The same, the teacher's outputs cached first: each process caches its shard."""
    model = distillation_model()
    x, _ = classification_data()
    inputs, targets = kt.cache_teacher_outputs(model, shard(x), batch_size=PROCESS_BATCH)
    history = model.fit(
        inputs,
        targets,
        batch_size=PROCESS_BATCH,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )
    return model, history


def adaptation(out_dir: Path, callbacks: list):
    """DANN on kt.domain_pairs (16 source and 8 target examples a batch)."""
    features = keras.Sequential(
        [
            keras.layers.Dense(6, activation="tanh", name="f1"),
            keras.layers.Dense(4, activation="tanh", name="f2"),
        ],
        name="features",
    )
    domain_head = keras.Sequential(
        [keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(1)], name="domain"
    )
    model = DomainAdaptationModel(
        features, keras.layers.Dense(3, name="task"), domain_head, adaptation_weight=0.5
    )
    x_source, y_source = classification_data()
    x_target = (np.random.default_rng(3).normal(size=(48, 6)) + 1.0).astype("float32")
    model({"source": x_source[:2], "target": x_target[:2]})  # Builds every weight.
    seed_weights(model)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    pairs = kt.domain_pairs(
        (x_source, y_source),
        x_target,
        batch_size=GLOBAL_BATCH,
        target_batch_size=8,
        shuffle=False,
    )
    history = model.fit(shard(pairs), epochs=2, shuffle=False, verbose=0, callbacks=callbacks)
    return model, history


def feature_cache(out_dir: Path, callbacks: list):
    """FeatureCache: each process runs the frozen backbone on its shard, then fits the head."""
    backbone = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="tanh", name="bb")], name="backbone"
    )
    model = keras.Sequential([keras.Input((6,)), backbone, keras.layers.Dense(1, name="head")])
    seed_weights(model, seed=5)
    backbone.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    x, y = shard(regression_data())
    cache = kt.FeatureCache(model, batch_size=PROCESS_BATCH)
    history = cache.fit(
        x, y, batch_size=PROCESS_BATCH, epochs=2, shuffle=False, verbose=0, callbacks=callbacks
    )
    return model, history


SCENARIOS = {
    "finetune": finetune,
    # The same run, into its own backups: `--kill-at` kills it, a relaunch resumes it.
    "finetune_killed": lambda out_dir, callbacks: finetune(out_dir, callbacks, "backup_killed"),
    "distillation": distillation,
    "distillation_cached": distillation_cached,
    "adaptation": adaptation,
    "feature_cache": feature_cache,
}


def state_of(model) -> dict:
    arrays = {f"weight/{v.path}": keras.ops.convert_to_numpy(v) for v in model.weights}
    optimizer = getattr(model, "optimizer", None)
    for index, variable in enumerate(optimizer.variables if optimizer else []):
        arrays[f"optimizer/{index}/{variable.path}"] = keras.ops.convert_to_numpy(variable)
    return arrays


def run(name: str, out_dir: Path, kill_at, export: bool) -> None:
    keras.backend.clear_session()  # Also forgets the distribution: set it after.
    keras.utils.set_random_seed(0)
    if NUM_PROCESSES > 1:
        import jax

        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False)
        )
    counter, saves = CountTrainable(), CountSaves()
    killed = kill_at and name == "finetune_killed"
    callbacks = [counter, saves] + ([KillAt(*kill_at)] if killed else [])
    start = time.perf_counter()
    model, history = SCENARIOS[name](out_dir, callbacks)
    arrays = state_of(model)
    arrays.update({f"log/{key}": np.asarray(value) for key, value in history.history.items()})
    arrays["trainable_per_step"] = np.asarray(counter.counts)
    arrays["backups_written"] = np.asarray(saves.saves)
    # How many devices hold the first weight: every device of the job.
    arrays["devices"] = np.asarray(len(model.trainable_weights[0].value.sharding.device_set))
    tag = f"process{PROCESS_ID}" if NUM_PROCESSES > 1 else "single"
    np.savez(out_dir / f"{name}.{tag}.npz", **arrays)
    print(f"{name} ({tag}): {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if export and name == "distillation" and NUM_PROCESSES > 1 and PROCESS_ID == 0:
        kt.export_saved_model(model, str(out_dir / "saved_model"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("scenarios", nargs="+", choices=sorted(SCENARIOS))
    parser.add_argument("--kill-at", nargs=3, type=int)
    parser.add_argument("--export", action="store_true")
    args = parser.parse_args()
    for name in args.scenarios:
        if args.kill_at and name == "finetune_killed" and NUM_PROCESSES == 1:
            continue  # One process: no process to kill.
        run(name, args.out_dir, args.kill_at, args.export)


if __name__ == "__main__":
    main()
