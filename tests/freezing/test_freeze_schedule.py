import keras
import numpy as np
import pytest
from testing_utils import WeightRecorder, dense_model, regression_data, two_block_model, values

import keras_transfer as kt


def fit(model, callbacks, epochs=3, optimizer=None, **kwargs):
    x, y = regression_data()
    model.compile(optimizer or keras.optimizers.Adam(0.01), "mse")
    return model.fit(
        x, y, epochs=epochs, batch_size=8, shuffle=False, verbose=0, callbacks=callbacks, **kwargs
    )


def assert_same(before, after):
    for b, a in zip(before, after):
        np.testing.assert_array_equal(b, a)


def assert_changed(before, after):
    assert all(not np.array_equal(b, a) for b, a in zip(before, after))


class TrainableCountPerBatch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.counts = []

    def on_train_batch_begin(self, batch, logs=None):
        self.counts.append(len(self.model.trainable_weights))


def test_frozen_groups_are_bit_identical_until_their_stage():
    model = dense_model(with_batchnorm=True)
    recorder = WeightRecorder(["a", "bn", "b", "head"])
    schedule = kt.FreezeSchedule(model, {0: 1, 1: 2, 2: "all"}, verbose=0)
    history = fit(model, [schedule, recorder], epochs=3)
    start, after_0, after_1, after_2 = recorder.snapshots
    # Epoch 0: only the head trains.
    assert_changed(start["head"], after_0["head"])
    assert_same(start["b"], after_0["b"])
    assert_same(start["a"], after_0["a"])
    # Epoch 1: b joins.
    assert_changed(after_0["b"], after_1["b"])
    assert_same(after_0["a"], after_1["a"])
    # Epoch 2: a trains; BatchNormalization (moving statistics included) does not.
    assert_changed(after_1["a"], after_2["a"])
    assert_same(start["bn"], after_2["bn"])
    assert history.history["trainable_params"] == [9.0, 81.0, 137.0]


def test_optimizer_slots_survive_a_stage_change_and_new_ones_start_fresh():
    model = dense_model()
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    seen = {}

    class SlotProbe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                seen["end_0"] = values(optimizer.variables)

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                seen["begin_1"] = values(optimizer.variables)

    schedule = kt.FreezeSchedule(model, {0: 1, 1: "all"}, verbose=0)
    fit(model, [schedule, SlotProbe()], epochs=2, optimizer=optimizer)
    paths = [v.path for v in optimizer.variables]
    for path, end_0, begin_1 in zip(paths, seen["end_0"], seen["begin_1"]):
        np.testing.assert_array_equal(end_0, begin_1)
        if "head" in path:
            assert end_0.any(), f"{path}: the head's momentum was lost"
        elif "momentum" in path:
            assert not begin_1.any(), f"{path}: a new variable must start with zero momentum"


def test_unit_step_changes_stage_at_step_boundaries():
    model = dense_model()
    counter = TrainableCountPerBatch()
    schedule = kt.FreezeSchedule(model, {0: 1, 3: 2, 6: "all"}, unit="step", verbose=0)
    fit(model, [schedule, counter], epochs=2)  # 4 steps an epoch
    assert counter.counts == [2, 2, 2, 4, 4, 4, 6, 6]


def test_unit_step_resumes_from_the_epoch_index():
    model = dense_model()
    counter = TrainableCountPerBatch()
    schedule = kt.FreezeSchedule(model, {0: 1, 5: 2, 6: "all"}, unit="step", verbose=0)
    fit(model, [schedule, counter], epochs=2, initial_epoch=1)  # steps 4 to 7
    assert counter.counts == [2, 4, 6, 6]


def test_unit_step_needs_a_known_epoch_length():
    model = dense_model()
    x, y = regression_data()

    def endless():
        while True:
            yield x[:8], y[:8]

    model.compile("sgd", "mse")
    schedule = kt.FreezeSchedule(model, {0: 1, 3: "all"}, unit="step", verbose=0)
    with pytest.raises(ValueError, match="steps_per_epoch="):
        model.fit(endless(), epochs=1, shuffle=False, verbose=0, callbacks=[schedule])


def test_fit_with_initial_epoch_resumes_in_that_epochs_stage():
    model = dense_model()
    counter = TrainableCountPerBatch()
    schedule = kt.FreezeSchedule(model, {0: 1, 1: 2, 2: "all"}, verbose=0)
    fit(model, [schedule, counter], epochs=3, initial_epoch=1)
    assert counter.counts == [4] * 4 + [6] * 4


def test_backup_and_restore_resumes_in_the_right_stage_with_the_same_result(tmp_path):
    def run(callbacks, epochs=4):
        keras.utils.set_random_seed(1)
        model = dense_model()
        schedule = kt.FreezeSchedule(model, {0: 1, 1: 2, 3: "all"}, verbose=0)
        fit(model, [schedule, *callbacks], epochs=epochs, optimizer=keras.optimizers.Adam(0.01))
        return model

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("interrupted")

    backup = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="interrupted"):
        run([keras.callbacks.BackupAndRestore(backup), Interrupt()])
    counter = TrainableCountPerBatch()
    resumed = run([keras.callbacks.BackupAndRestore(backup), counter])
    assert counter.counts == [4] * 4 + [6] * 4  # epochs 2 and 3 only
    uninterrupted = run([])
    for a, b in zip(values(resumed.weights), values(uninterrupted.weights)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_one_retrace_per_stage():
    traces = []

    class CountingModel(keras.Model):
        def train_step(self, *args, **kwargs):
            traces.append(1)
            return super().train_step(*args, **kwargs)

    if keras.backend.backend() == "torch":
        pytest.skip("torch steps eagerly: nothing is traced")
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, name="a")(inputs)
    model = CountingModel(inputs, keras.layers.Dense(1, name="head")(hidden))
    fit(model, [kt.FreezeSchedule(model, {0: 1, 2: "all"}, verbose=0)], epochs=4)
    assert len(traces) == 2


def test_stage_changes_are_announced_when_verbose(capsys):
    model = dense_model()
    fit(model, [kt.FreezeSchedule(model, {0: 1, 1: "all"})], epochs=2)
    out = capsys.readouterr().out
    assert "epoch 0: 1/3 groups trainable (head); 9 trainable parameters" in out
    assert "epoch 1: 3/3 groups trainable (a, b, head); 137 trainable parameters" in out


def test_model_can_be_taken_from_fit():
    model = dense_model()
    history = fit(model, [kt.FreezeSchedule(schedule={0: 2, 1: "all"}, verbose=0)], epochs=2)
    assert history.history["trainable_params"] == [81.0, 137.0]


def test_gradual_is_one_more_group_every_n_epochs():
    model = dense_model()
    schedule = kt.FreezeSchedule.gradual(model, every_epochs=2, verbose=0)
    assert schedule.schedule == {0: 1, 2: 2, 4: 3}
    assert [schedule.stage_for(epoch) for epoch in range(6)] == [1, 1, 2, 2, 3, 3]


def test_config_round_trip():
    schedule = kt.FreezeSchedule(
        schedule={0: 1, 2: "all"}, unit="step", groups=["^a$", "b|head"], verbose=0
    )
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, kt.FreezeSchedule)
    assert restored.get_config() == schedule.get_config()
    assert restored.schedule == {0: 1, 2: "all"}


def test_schedule_with_explicit_groups():
    model = dense_model()
    schedule = kt.FreezeSchedule(model, {0: 1, 1: "all"}, groups=["^a$", "b|head"], verbose=0)
    history = fit(model, [schedule], epochs=2)
    assert history.history["trainable_params"] == [81.0, 137.0]


@pytest.mark.parametrize(
    "schedule, message",
    [
        ({1: 2}, "no entry for 0"),
        ({0: 1}, "never unfreezes anything"),
        ({0: 0, 1: "all"}, "at least the top group"),
        ({0: "most"}, "'most' at 0"),
        ({-1: 1, 0: 2}, "indices >= 0"),
    ],
)
def test_bad_schedules_are_explained(schedule, message):
    with pytest.raises(ValueError, match=message):
        kt.FreezeSchedule(schedule=schedule)


def test_schedule_beyond_the_number_of_groups():
    with pytest.raises(ValueError, match="model has 3 layer group"):
        kt.FreezeSchedule(dense_model(), {0: 1, 1: 5})


def test_missing_schedule_and_bad_unit():
    with pytest.raises(ValueError, match="needs a `schedule`"):
        kt.FreezeSchedule(dense_model())
    with pytest.raises(ValueError, match="`unit` must be one of"):
        kt.FreezeSchedule(schedule={0: 1, 1: 2}, unit="batch")


def test_single_group_model_says_how_to_give_groups():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="at least 2 layer groups.*groups=\\[regex"):
        kt.FreezeSchedule.gradual(model)


def test_ema_optimizer_is_refused():
    model = dense_model()
    model.compile(keras.optimizers.Adam(use_ema=True), "mse")
    with pytest.raises(ValueError, match="use_ema=True"):
        kt.FreezeSchedule(model, {0: 1, 1: "all"})


def test_unfreezes_variable_groups_inside_one_layer():
    model = two_block_model()
    encoder = model.get_layer("encoder")
    first, second = values([encoder.first]), values([encoder.second])
    schedule = kt.FreezeSchedule(model, {0: 2, 1: "all"}, verbose=0)
    history = fit(model, [schedule], epochs=1)
    assert_same(first, values([encoder.first]))
    assert_changed(second, values([encoder.second]))
    history = fit(model, [schedule], epochs=2, initial_epoch=1)
    assert_changed(first, values([encoder.first]))
    assert history.history["trainable_params"] == [6 * 4 + 4 * 4 + 4 + 1]


def test_a_schedule_reused_on_another_model_groups_that_model():
    schedule = kt.FreezeSchedule(schedule={0: 1, 1: "all"}, verbose=0)
    fit(dense_model(), [schedule], epochs=2)
    other = two_block_model()
    history = fit(other, [schedule], epochs=2)
    assert [group.name for group in schedule._groups] == ["block_0", "block_1", "head"]
    assert history.history["trainable_params"] == [5.0, 45.0]
