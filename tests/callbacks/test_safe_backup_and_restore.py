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
    with pytest.raises(ValueError, match="backup_dir"):
        kt.SafeBackupAndRestore("")
    with pytest.raises(ValueError, match="keep"):
        kt.SafeBackupAndRestore("somewhere", keep=0)


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
    backup = kt.SafeBackupAndRestore(tmp_path, delete_checkpoint=False, keep=3)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(backup))
    assert isinstance(restored, kt.SafeBackupAndRestore)
    assert restored.get_config() == backup.get_config()
