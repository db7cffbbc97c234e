"""A small training job for tests/test_resume.py, run in its own process.

    python tests/resume_job.py MODEL BACKUP_DIR OUT.npz [--kill-at EPOCH BATCH]
        [--kill-while-saving EPOCH] [--keras-backup]

MODEL is `finetune` (FreezeSchedule + DiscriminativeLR + OneCycle),
`distillation` (DistillationModel with a FreezeSchedule on the student) or
`adaptation` (DomainAdaptationModel with DomainAdaptationSchedule and a
FreezeSchedule). The job trains for EPOCHS epochs with a backup callback and
writes the final weights and optimizer state to OUT.npz. `--kill-at` sends
itself SIGKILL after that batch; `--kill-while-saving` after the epoch's
weights file is written but before the backup is complete.
"""

from __future__ import annotations

import argparse
import os
import signal

import keras
import numpy as np

import keras_transfer as kt
from keras_transfer.adaptation.domain_adaptation_model import default_domain_head
from keras_transfer.callbacks import safe_backup_and_restore

EPOCHS = 6
BATCH_SIZE = 16
SCHEDULE = {0: 1, 2: 2, 4: "all"}  # Stage 2 spans epochs 2 and 3.


def _mlp(name, inputs, classes):
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(16, activation="relu", name=f"{name}_body_1"),
            keras.layers.Dense(16, activation="relu", name=f"{name}_body_2"),
            keras.layers.Dense(classes, name=f"{name}_head"),
        ],
        name=name,
    )


def _data(seed=0, size=64):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(size, 8)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32") + (x[:, 2] > 1).astype("int32")
    return x, y


def _compile(model, rates_from):
    """DiscriminativeLR over `rates_from`'s groups, on Adam with a OneCycle schedule."""
    schedule = kt.schedules.OneCycle(max_lr=0.05, total_steps=EPOCHS * 4)
    model.compile(
        optimizer=kt.DiscriminativeLR(keras.optimizers.Adam(schedule), model=rates_from, decay=2.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def finetune_job():
    keras.utils.set_random_seed(0)
    model = _mlp("classifier", 8, 3)
    _compile(model, model)
    x, y = _data()
    return model, (x, y), [kt.FreezeSchedule(model, SCHEDULE, verbose=0)]


def distillation_job():
    keras.utils.set_random_seed(0)
    teacher = _mlp("teacher", 8, 3)
    teacher.trainable = False
    student = _mlp("student", 8, 3)
    model = kt.DistillationModel(teacher, student, temperature=2.0, distillation_weight=0.5)
    _compile(model, student)
    x, y = _data()
    return model, (x, y), [kt.FreezeSchedule(model, SCHEDULE, verbose=0)]


def adaptation_job():
    keras.utils.set_random_seed(0)
    extractor = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", name="extractor_1"),
            keras.layers.Dense(16, activation="relu", name="extractor_2"),
        ],
        name="extractor",
    )
    model = kt.DomainAdaptationModel(
        feature_extractor=extractor,
        task_head=keras.layers.Dense(3, name="task_head"),
        domain_head=default_domain_head(units=(8,)),
    )
    model.build((None, 8))
    _compile(model, model)
    x_source, y_source = _data(0)
    x_target, _ = _data(1)
    pairs = kt.domain_pairs((x_source, y_source), x_target + 0.5, BATCH_SIZE, shuffle=False)
    callbacks = [
        kt.FreezeSchedule(model, {0: 2, 2: 3, 4: "all"}, verbose=0),
        kt.DomainAdaptationSchedule(),
    ]
    return model, pairs, callbacks


JOBS = {"finetune": finetune_job, "distillation": distillation_job, "adaptation": adaptation_job}


class KillAt(keras.callbacks.Callback):
    """Sends this process SIGKILL after batch `batch` of epoch `epoch`."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self._current = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self._current, batch) == (self.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGKILL)


def kill_while_saving(backup, epoch):
    """Dies right after the weights of epoch `epoch` reach the disk."""
    if isinstance(backup, keras.callbacks.BackupAndRestore):
        save_weights = backup.model.save_weights

        def save_then_die(*args, **kwargs):
            save_weights(*args, **kwargs)
            if backup.model._kt_epoch == epoch:
                os.kill(os.getpid(), signal.SIGKILL)

        backup.model.save_weights = save_then_die
        return
    flush = safe_backup_and_restore._flush_to_disk

    def flush_then_die(path):
        flush(path)
        if path.endswith(".weights.h5") and backup.model._kt_epoch == epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    safe_backup_and_restore._flush_to_disk = flush_then_die


class RememberEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.model._kt_epoch = epoch


def state_of(model):
    arrays = {f"weight_{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    for i, variable in enumerate(model.optimizer.variables):
        arrays[f"optimizer_{i}_{variable.path}"] = keras.ops.convert_to_numpy(variable.value)
    return arrays


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", choices=sorted(JOBS))
    parser.add_argument("backup_dir")
    parser.add_argument("out")
    parser.add_argument("--kill-at", nargs=2, type=int)
    parser.add_argument("--kill-while-saving", type=int)
    parser.add_argument("--keras-backup", action="store_true")
    args = parser.parse_args()

    model, data, callbacks = JOBS[args.model]()
    if args.keras_backup:
        backup = keras.callbacks.BackupAndRestore(args.backup_dir)
    else:
        backup = kt.SafeBackupAndRestore(args.backup_dir, delete_checkpoint=False)
    callbacks = [RememberEpoch(), *callbacks, backup]
    if args.kill_at:
        callbacks.append(KillAt(*args.kill_at))
    if args.kill_while_saving is not None:
        backup.set_model(model)
        kill_while_saving(backup, args.kill_while_saving)
    if isinstance(data, tuple):
        x, y = data
        model.fit(
            x,
            y,
            batch_size=BATCH_SIZE,
            epochs=EPOCHS,
            shuffle=False,
            verbose=0,
            callbacks=callbacks,
        )
    else:
        model.fit(data, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks)
    np.savez(args.out, **state_of(model))


if __name__ == "__main__":
    main()
