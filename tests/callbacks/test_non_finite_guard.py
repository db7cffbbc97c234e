import os

import keras
import numpy as np
import pytest

import keras_transfer as kt

BATCH = 4


def make_model(optimizer="sgd"):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="relu", name="body"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.compile(optimizer=optimizer, loss="mse")
    return model


def data(batches=4):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batches * BATCH, 3)).astype("float32")
    return x, (x.sum(axis=1, keepdims=True) > 0).astype("float32")


def fit(model, x, y, epochs=1, callbacks=()):
    return model.fit(
        x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=list(callbacks)
    )


def poison(array, batch, value=np.nan):
    array = array.copy()
    array[batch * BATCH + 1, 0] = value
    return array


def without_batch(array, batch):
    return np.delete(array, np.s_[batch * BATCH : (batch + 1) * BATCH], axis=0)


def assert_same_weights(first, second):
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_skip_equals_training_without_the_bad_batch(bad_value):
    x, y = data()
    guarded = make_model(keras.optimizers.Adam(0.01))
    history = fit(
        guarded,
        poison(x, 2, bad_value),
        y,
        epochs=2,
        callbacks=[kt.NonFiniteGuard(on_nonfinite="skip", verbose=0)],
    )
    reference = make_model(keras.optimizers.Adam(0.01))
    fit(reference, without_batch(x, 2), without_batch(y, 2), epochs=2)

    assert_same_weights(guarded, reference)
    # Adam's moments and step count are undone too, so the schedule of
    # bias corrections matches the run that never saw the batch.
    assert int(guarded.optimizer.iterations) == int(reference.optimizer.iterations) == 6
    assert history.history["skipped_steps"] == [1.0, 2.0]
    assert np.isfinite(history.history["loss"]).all()


def test_raise_restores_the_start_of_the_epoch_and_writes_no_checkpoint(tmp_path):
    x, y = data()

    def two_epochs_second_one_bad():
        for epoch_x in (x, poison(x, 1)):
            for batch in range(4):
                rows = slice(batch * BATCH, (batch + 1) * BATCH)
                yield epoch_x[rows], y[rows]

    model = make_model()
    backup = kt.SafeBackupAndRestore(tmp_path / "backup", delete_checkpoint=False)
    checkpoint = keras.callbacks.ModelCheckpoint(
        tmp_path / "epoch_{epoch}.weights.h5", save_weights_only=True
    )
    with pytest.raises(kt.NonFiniteLossError, match="restored to those at the start of epoch 1"):
        model.fit(
            two_epochs_second_one_bad(),
            steps_per_epoch=4,
            epochs=2,
            verbose=0,
            callbacks=[kt.NonFiniteGuard(), backup, checkpoint],
        )
    reference = make_model()
    fit(reference, x, y, epochs=1)
    assert_same_weights(model, reference)
    assert backup.latest_epoch() == 1
    assert sorted(os.listdir(tmp_path)) == ["backup", "epoch_1.weights.h5"]
    assert len(model.history.history["loss"]) == 1


def test_too_many_skips_raise():
    x, y = data()
    bad = poison(poison(x, 1), 3)
    model = make_model()
    with pytest.raises(kt.NonFiniteLossError, match=r"after 1 skipped steps \(`max_skips`\)"):
        fit(model, bad, y, callbacks=[kt.NonFiniteGuard("skip", max_skips=1, verbose=0)])
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_skip_works_with_freeze_schedule_and_discriminative_rates():
    x, y = data()

    def run(x, y, callbacks=()):
        model = make_model()
        model.compile(
            optimizer=kt.DiscriminativeLR(keras.optimizers.Adam(0.01), model=model, decay=2.0),
            loss="mse",
        )
        schedule = kt.FreezeSchedule(model, {0: 1, 1: "all"}, verbose=0)
        fit(model, x, y, epochs=2, callbacks=[*callbacks, schedule])
        return model

    # A NaN label: a NaN input can reach a frozen body's ReLU, which oneDNN
    # maps to 0, and then nothing non-finite happens to skip.
    guarded = run(x, poison(y, 3), [kt.NonFiniteGuard("skip", verbose=0)])
    reference = run(without_batch(x, 3), without_batch(y, 3))
    assert_same_weights(guarded, reference)


def test_a_missing_monitor_says_which_logs_exist():
    x, y = data()
    with pytest.raises(KeyError, match="val_loss"):
        fit(make_model(), x, y, callbacks=[kt.NonFiniteGuard(monitor="val_loss")])


def test_bad_arguments():
    with pytest.raises(ValueError, match="on_nonfinite"):
        kt.NonFiniteGuard(on_nonfinite="ignore")
    with pytest.raises(ValueError, match="max_skips"):
        kt.NonFiniteGuard(max_skips=-1)


def test_config_round_trip():
    guard = kt.NonFiniteGuard("skip", monitor="loss", max_skips=3, verbose=0)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(guard))
    assert isinstance(restored, kt.NonFiniteGuard)
    assert restored.get_config() == guard.get_config()
