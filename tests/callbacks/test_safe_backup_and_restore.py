import json
import os

import keras
import numpy as np
import pytest

import keras_transfer as kt


def make_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 3)).astype("float32"), rng.normal(size=(32, 1)).astype("float32")


def fit(model, epochs, *callbacks):
    x, y = data()
    return model.fit(
        x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0, callbacks=list(callbacks)
    )


def backup_files(folder):
    return sorted(os.listdir(folder))


def test_backs_up_every_epoch_and_keeps_the_newest(tmp_path):
    backup = kt.SafeBackupAndRestore(tmp_path, delete_checkpoint=False, keep=2)
    fit(make_model(), 3, backup)
    assert backup_files(tmp_path) == [
        "checkpoint-000001.json",
        "checkpoint-000001.weights.h5",
        "checkpoint-000002.json",
        "checkpoint-000002.weights.h5",
    ]
    assert backup.latest_epoch() == 3
    with open(tmp_path / "checkpoint-000002.json") as file:
        assert json.load(file)["epoch"] == 3


def test_resumes_where_the_backup_left_off_and_matches_an_uninterrupted_run(tmp_path):
    reference = make_model()
    fit(reference, 4)

    fit(make_model(), 2, kt.SafeBackupAndRestore(tmp_path, delete_checkpoint=False))
    resumed = make_model(seed=1)  # Different initial weights: all must come from the backup.
    history = fit(resumed, 4, kt.SafeBackupAndRestore(tmp_path))

    assert len(history.epoch) == 2 and history.epoch == [2, 3]
    for expected, actual in zip(reference.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(actual, expected, atol=1e-6)
    assert int(resumed.optimizer.iterations) == int(reference.optimizer.iterations) == 16
    assert not tmp_path.exists()  # delete_checkpoint=True once fit completes.


def test_a_truncated_weights_file_falls_back_to_the_previous_backup(tmp_path):
    fit(make_model(), 3, kt.SafeBackupAndRestore(tmp_path, delete_checkpoint=False))
    newest = tmp_path / "checkpoint-000002.weights.h5"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    backup = kt.SafeBackupAndRestore(tmp_path, delete_checkpoint=False)
    assert backup.latest_epoch() == 2
    model = make_model(seed=1)
    with pytest.warns(UserWarning, match="does not match the manifest's hash"):
        history = fit(model, 3, backup)
    assert history.epoch == [2]


def test_same_size_corruption_is_caught_by_the_hash(tmp_path):
    fit(make_model(), 2, kt.SafeBackupAndRestore(tmp_path, delete_checkpoint=False))
    newest = tmp_path / "checkpoint-000001.weights.h5"
    content = bytearray(newest.read_bytes())
    content[-100] ^= 0xFF  # Same size, one byte flipped: h5py may still open it.
    newest.write_bytes(bytes(content))
    assert kt.SafeBackupAndRestore(tmp_path).latest_epoch() == 1


def lora_model(seed=0, rank=2):
    model = make_model(seed)
    kt.enable_lora(model, rank=rank)
    return model


def test_a_lora_model_keeps_its_factors_in_a_hashed_side_file(tmp_path):
    """Keras writes a LoRA layer's kernel merged and its factors not at all."""
    trained = lora_model()
    fit(trained, 2, kt.SafeBackupAndRestore(tmp_path, delete_checkpoint=False))
    assert "checkpoint-000001.lora.npz" in backup_files(tmp_path)
    resumed = lora_model(seed=1)
    fit(resumed, 2, kt.SafeBackupAndRestore(tmp_path, delete_checkpoint=False))  # Nothing left.
    for expected, actual in zip(trained.weights, resumed.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(actual),
            keras.ops.convert_to_numpy(expected),
            err_msg=expected.path,
        )

    lora_file = tmp_path / "checkpoint-000001.lora.npz"
    lora_file.write_bytes(lora_file.read_bytes()[:-10])
    with pytest.warns(UserWarning, match="its LoRA file does not match the manifest's hash"):
        history = fit(lora_model(seed=1), 3, kt.SafeBackupAndRestore(tmp_path))
    assert history.epoch == [1, 2]


def test_a_lora_backup_refuses_a_model_with_other_lora_layers(tmp_path):
    fit(lora_model(), 1, kt.SafeBackupAndRestore(tmp_path, delete_checkpoint=False))
    with pytest.raises(ValueError, match=r"lora_kernel_a. has shape \(3, 2\) there, \(3, 3\)"):
        fit(lora_model(rank=3), 2, kt.SafeBackupAndRestore(tmp_path))


def test_weights_without_a_manifest_are_not_a_backup(tmp_path):
    # What a kill between writing the weights and the manifest leaves.
    fit(make_model(), 1, kt.SafeBackupAndRestore(tmp_path, delete_checkpoint=False))
    make_model(seed=3).save_weights(tmp_path / "checkpoint-000001.weights.h5")
    (tmp_path / "checkpoint-000001.json.partial").write_text('{"epo')

    backup = kt.SafeBackupAndRestore(tmp_path, delete_checkpoint=False)
    assert backup.latest_epoch() == 1
    fit(make_model(), 2, backup)  # Writes backup 1 again, over the orphan.
    assert backup.latest_epoch() == 2


def test_an_unreadable_manifest_is_skipped_with_a_warning(tmp_path):
    fit(make_model(), 2, kt.SafeBackupAndRestore(tmp_path, delete_checkpoint=False))
    (tmp_path / "checkpoint-000001.json").write_text("{not json")
    backup = kt.SafeBackupAndRestore(tmp_path, delete_checkpoint=False)
    with pytest.warns(UserWarning, match="unreadable manifest"):
        history = fit(make_model(), 3, backup)
    assert history.epoch == [1, 2]


def test_no_intact_backup_starts_from_the_beginning(tmp_path):
    fit(make_model(), 1, kt.SafeBackupAndRestore(tmp_path, delete_checkpoint=False))
    os.remove(tmp_path / "checkpoint-000000.weights.h5")
    with pytest.warns(UserWarning, match="weights file is missing"):
        history = fit(make_model(), 2, kt.SafeBackupAndRestore(tmp_path))
    assert history.epoch == [0, 1]


def test_restores_a_freeze_schedule_run_with_discriminative_rates(tmp_path):
    def run(epochs, backup):
        model = make_model()
        model.compile(
            optimizer=kt.DiscriminativeLR(keras.optimizers.Adam(0.01), model=model, decay=2.0),
            loss="mse",
        )
        schedule = kt.FreezeSchedule(model, {0: 1, 2: "all"}, verbose=0)
        callbacks = [schedule] + ([backup] if backup else [])
        return model, fit(model, epochs, *callbacks)

    reference, _ = run(4, None)
    run(3, kt.SafeBackupAndRestore(tmp_path, delete_checkpoint=False))
    resumed, history = run(4, kt.SafeBackupAndRestore(tmp_path))
    assert history.epoch == [3]
    assert history.history["trainable_params"] == [11.0]
    for expected, actual in zip(reference.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(actual, expected, atol=1e-6)


def test_bad_arguments():
    # Keras raises ValueError for an empty or None `backup_dir` and for a
    # `save_freq` that is neither "epoch" nor an integer; so do we, and we
    # also refuse the integers that would back up nothing sensible.
    for empty in ("", None):
        with pytest.raises(
            ValueError, match="Empty `backup_dir` argument passed.*path of a folder"
        ):
            kt.SafeBackupAndRestore(empty)
    for save_freq in ("batch", 0.15, 0, -1, True, None):
        with pytest.raises(ValueError, match="Invalid value for `save_freq`.*integer N >= 1"):
            kt.SafeBackupAndRestore("somewhere", save_freq=save_freq)
    with pytest.raises(ValueError, match="keep"):
        kt.SafeBackupAndRestore("somewhere", keep=0)
    with pytest.raises(ValueError, match="pass `keep=2`"):
        kt.SafeBackupAndRestore("somewhere", double_checkpoint=True, keep=1)
    with pytest.raises(TypeError, match="`delete_checkpoint` must be True or False"):
        kt.SafeBackupAndRestore("somewhere", delete_checkpoint="no")


def test_takes_keras_arguments_in_keras_order():
    ours = kt.SafeBackupAndRestore("somewhere", 3, True, False, 4)
    keras_callback = keras.callbacks.BackupAndRestore("somewhere", 3, True, False)
    for name in ("backup_dir", "save_freq", "double_checkpoint", "delete_checkpoint"):
        assert getattr(ours, name) == getattr(keras_callback, name), name
    assert ours.keep == 4
    defaults = kt.SafeBackupAndRestore("somewhere")
    assert (defaults.save_freq, defaults.double_checkpoint, defaults.delete_checkpoint) == (
        "epoch",
        False,
        True,
    )


def test_a_model_unbuilt_when_training_begins_is_refused(tmp_path):
    model = keras.Sequential([keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    if keras.backend.backend() != "tensorflow":
        # JAX and PyTorch `fit` build the model before `on_train_begin`.
        fit(model, 1, kt.SafeBackupAndRestore(tmp_path, delete_checkpoint=False))
        assert kt.SafeBackupAndRestore(tmp_path).latest_epoch() == 1
        return
    with pytest.raises(ValueError, match="needs a built model"):
        fit(model, 1, kt.SafeBackupAndRestore(tmp_path))


def test_config_round_trip(tmp_path):
    backup = kt.SafeBackupAndRestore(
        tmp_path, save_freq=5, double_checkpoint=True, delete_checkpoint=False, keep=3
    )
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(backup))
    assert isinstance(restored, kt.SafeBackupAndRestore)
    assert restored.get_config() == backup.get_config()
    assert restored.get_config() == {
        "backup_dir": str(tmp_path),
        "save_freq": 5,
        "double_checkpoint": True,
        "delete_checkpoint": False,
        "keep": 3,
    }
    # A config written before `save_freq` existed still loads, with Keras' defaults.
    old = kt.SafeBackupAndRestore.from_config(
        {"backup_dir": str(tmp_path), "delete_checkpoint": False, "keep": 3}
    )
    assert (old.save_freq, old.double_checkpoint) == ("epoch", False)


# Keras' own tests (keras/src/callbacks/backup_and_restore_test.py, run
# against this class by test_keras_backup_and_restore_suite.py) that read
# private attributes of Keras' class are deselected there; the behaviour
# they check is checked here, on the same model and data shapes.


class Interrupt(keras.callbacks.Callback):
    """Raises after batch `batch` of epoch `epoch` (or at that epoch's end)."""

    def __init__(self, epoch, batch=None):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.batch is not None and (self.current, batch) == (self.epoch, self.batch):
            raise RuntimeError("interrupted")

    def on_epoch_end(self, epoch, logs=None):
        if self.batch is None and epoch == self.epoch:
            raise RuntimeError("interrupted")


class Canary(keras.layers.Layer):
    """Counts the batches it has seen in a non-trainable weight, as Keras' test does."""

    def __init__(self):
        super().__init__()
        self.counter = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, x):
        self.counter.assign_add(1.0)
        return x


def canary_model():
    model = keras.Sequential([keras.Input((3,)), Canary(), keras.layers.Dense(1)])
    model.compile(loss="mse", optimizer="sgd", metrics=["mse"])
    return model


def canary_fit(model, epochs, *callbacks):
    x = np.random.default_rng(0).random((10, 3))  # 3 batches of 4 an epoch.
    y = np.random.default_rng(1).random((10, 1))
    return model.fit(x, y, batch_size=4, epochs=epochs, verbose=0, callbacks=list(callbacks))


def counter(model):
    return int(keras.ops.convert_to_numpy(model.layers[0].counter))


def manifests(folder):
    found = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name)) as file:
                manifest = json.load(file)
            found.append((manifest["epoch"], manifest["batches_done"]))
    return found


def test_keras_step_case_resumes_at_the_start_of_the_interrupted_epoch(tmp_path):
    # Keras' test_best_case_step: backups every batch, stopped after batch 1
    # of epoch 0 (Keras asserts `_current_epoch == 0`, `_last_batch_seen == 1`).
    backup_dir = tmp_path / "subdir"
    model = canary_model()
    with pytest.raises(RuntimeError, match="interrupted"):
        canary_fit(model, 2, kt.SafeBackupAndRestore(backup_dir, save_freq=1), Interrupt(0, 1))
    assert counter(model) == 2
    assert manifests(backup_dir)[-1] == (0, 2)  # Epoch 0, after its batches 0 and 1.

    resumed = canary_model()
    history = canary_fit(resumed, 5, kt.SafeBackupAndRestore(backup_dir, save_freq=1))
    # Epoch 0 again from the weights that saw 2 of its batches: 2 + 5 * 3.
    assert history.epoch == [0, 1, 2, 3, 4]
    assert counter(resumed) == 17
    assert int(resumed.optimizer.iterations) == 17
    assert not backup_dir.exists()


def test_keras_epoch_case_resumes_after_the_last_complete_epoch(tmp_path):
    # Keras' test_best_case_epoch: stopped after epoch 1 (Keras asserts
    # `_current_epoch == 2`).
    backup_dir = tmp_path / "subdir"
    model = canary_model()
    with pytest.raises(RuntimeError, match="interrupted"):
        canary_fit(model, 6, kt.SafeBackupAndRestore(backup_dir, save_freq="epoch"), Interrupt(1))
    assert counter(model) == 6
    assert manifests(backup_dir)[-1] == (2, 0)

    resumed = canary_model()
    history = canary_fit(resumed, 5, kt.SafeBackupAndRestore(backup_dir))
    assert history.epoch == [2, 3, 4]
    assert counter(resumed) == 5 * 3


def test_keras_corrupted_case_with_double_checkpoint(tmp_path):
    # Keras' test_backup_corrupted: the newest weights file overwritten with
    # "0"; the previous backup (kept by `double_checkpoint`) is restored.
    backup_dir = tmp_path / "subdir"
    model = canary_model()
    backup = kt.SafeBackupAndRestore(backup_dir, double_checkpoint=True)
    with pytest.raises(RuntimeError, match="interrupted"):
        canary_fit(model, 6, backup, Interrupt(1))
    assert counter(model) == 6
    assert manifests(backup_dir) == [(1, 0), (2, 0)]  # Current and previous.
    (backup_dir / "checkpoint-000001.weights.h5").write_text("0")

    resumed = canary_model()
    with pytest.warns(UserWarning, match="does not match the manifest's hash"):
        history = canary_fit(resumed, 5, backup)
    assert history.epoch == [1, 2, 3, 4]
    assert counter(resumed) == 3 + 4 * 3


def test_step_backups_every_n_batches_and_at_every_epoch_end(tmp_path):
    backup = kt.SafeBackupAndRestore(tmp_path, save_freq=2, delete_checkpoint=False, keep=10)
    canary_fit(canary_model(), 3, backup)
    # Every 2 batches counted across epochs, as Keras counts them, and at
    # every epoch end: after (1, 3) Keras' callback would replay all of epoch
    # 1; here the backup (2, 0) that follows resumes at epoch 2.
    assert manifests(tmp_path) == [(0, 2), (1, 0), (1, 1), (1, 3), (2, 0), (2, 2), (3, 0)]


@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="Keras' PyTorch backend refuses steps_per_execution > 1",
)
def test_step_backups_count_batches_run_together(tmp_path):
    # With steps_per_execution=2, Keras reports only batches 1 and 3 of each
    # epoch's 4; both reports complete 2 batches, so both back up.
    model = canary_model()
    model.compile(loss="mse", optimizer="sgd", steps_per_execution=2)
    backup = kt.SafeBackupAndRestore(tmp_path, save_freq=2, delete_checkpoint=False, keep=10)
    x = np.random.default_rng(0).random((16, 3))
    model.fit(x, x[:, :1], batch_size=4, epochs=2, verbose=0, callbacks=[backup])
    assert manifests(tmp_path) == [(0, 2), (0, 4), (1, 0), (1, 2), (1, 4), (2, 0)]


def test_step_resume_matches_keras_own_callback(tmp_path):
    def interrupted_then_resumed(make_backup, folder):
        model = make_model()
        with pytest.raises(RuntimeError, match="interrupted"):
            fit(model, 4, make_backup(folder), Interrupt(1, 2))
        resumed = make_model(seed=1)
        history = fit(resumed, 4, make_backup(folder))
        return resumed, history

    def ours(folder):
        return kt.SafeBackupAndRestore(folder, save_freq=3)

    def theirs(folder):
        return keras.callbacks.BackupAndRestore(folder, save_freq=3)

    expected, expected_history = interrupted_then_resumed(theirs, tmp_path / "keras")
    actual, history = interrupted_then_resumed(ours, tmp_path / "ours")
    # 4 batches an epoch; both back up after batch 2 of epoch 0 and batch 1
    # of epoch 1 and are stopped after batch 2 of epoch 1: epoch 1 is trained
    # again from weights that saw its first 2 batches.
    assert history.epoch == expected_history.epoch == [1, 2, 3]
    assert int(actual.optimizer.iterations) == int(expected.optimizer.iterations) == 6 + 3 * 4
    for want, got in zip(expected.get_weights(), actual.get_weights()):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_step_backups_after_a_resume_record_the_resumed_epoch(tmp_path):
    # A new process resumes in epoch 1 and is stopped again in epoch 2: its
    # step backups name the epoch they were taken in. (Keras' callback counts
    # epochs from 0 in each new instance, so a fresh one records epoch 0.)
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(make_model(), 4, kt.SafeBackupAndRestore(tmp_path, save_freq=1), Interrupt(1, 1))
    assert manifests(tmp_path)[-1] == (1, 2)
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(make_model(), 4, kt.SafeBackupAndRestore(tmp_path, save_freq=1), Interrupt(2, 0))
    assert manifests(tmp_path)[-1] == (2, 1)


def test_save_freq_false_only_restores(tmp_path):
    fit(make_model(), 2, kt.SafeBackupAndRestore(tmp_path, delete_checkpoint=False))
    before = {name: (tmp_path / name).read_bytes() for name in backup_files(tmp_path)}

    model = make_model(seed=1)
    restore_only = kt.SafeBackupAndRestore(tmp_path, save_freq=False, delete_checkpoint=False)
    history = fit(model, 4, restore_only)
    assert history.epoch == [2, 3]
    assert {name: (tmp_path / name).read_bytes() for name in backup_files(tmp_path)} == before

    fit(make_model(), 1, kt.SafeBackupAndRestore(tmp_path / "fresh", save_freq=False))
    assert not (tmp_path / "fresh").exists()
