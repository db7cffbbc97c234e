"""`FreezeSchedule(cache_frozen=True)` and `FreezeSchedule.fit`: the schedule's
side; the cache itself is tested in tests/features/test_prefix_cache.py."""

import keras
import numpy as np
import pytest
from testing_utils import dense_model, regression_data

import keras_transfer as kt


def compiled_model():
    model = dense_model()
    model.compile(keras.optimizers.SGD(0.05), "mse")
    return model


def test_the_cache_settings_round_trip_through_the_config():
    schedule = kt.FreezeSchedule(
        compiled_model(),
        {0: 1, 1: "all"},
        cache_frozen=True,
        cache_dir="/tmp/somewhere",
        cache_memory_limit_mb=64,
        cache_disk_limit_mb=1024,
    )
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, kt.FreezeSchedule)
    assert restored.get_config() == schedule.get_config()
    assert restored.cache_frozen and restored.cache_dir == "/tmp/somewhere"
    assert (restored.cache_memory_limit_mb, restored.cache_disk_limit_mb) == (64, 1024)
    assert not kt.FreezeSchedule(schedule={0: 1, 1: 2}).cache_frozen


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(cache_frozen=1), TypeError, "`cache_frozen` must be True or False"),
        (dict(cache_memory_limit_mb=-1), ValueError, "`cache_memory_limit_mb` must be"),
        (dict(cache_disk_limit_mb=float("nan")), ValueError, "`cache_disk_limit_mb` must be"),
    ],
)
def test_bad_cache_settings_are_refused(options, error, message):
    with pytest.raises(error, match=message):
        kt.FreezeSchedule(schedule={0: 1, 1: 2}, **options)


def test_fit_without_the_cache_is_model_fit_with_the_schedule():
    x, y = regression_data()
    ours, theirs = compiled_model(), compiled_model()
    theirs.set_weights(ours.get_weights())
    history = kt.FreezeSchedule(ours, {0: 1, 1: 2}, verbose=0).fit(
        x, y, epochs=2, batch_size=8, shuffle=False, verbose=0
    )
    schedule = kt.FreezeSchedule(theirs, {0: 1, 1: 2}, verbose=0)
    expected = theirs.fit(
        x, y, epochs=2, batch_size=8, shuffle=False, verbose=0, callbacks=[schedule]
    )
    assert history.history["trainable_params"] == expected.history["trainable_params"]
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_fit_needs_the_schedule_to_know_its_model():
    with pytest.raises(ValueError, match=r"kt.FreezeSchedule\(model, schedule\)"):
        kt.FreezeSchedule(schedule={0: 1, 1: 2}).fit(*regression_data())


def test_a_caching_schedule_in_a_plain_fit_says_so_in_one_line_and_trains_uncached():
    x, y = regression_data()
    model = compiled_model()
    schedule = kt.FreezeSchedule(model, {0: 1, 1: 2}, cache_frozen=True, verbose=0)
    with pytest.warns(UserWarning, match=r"call `schedule.fit\(x, y, ...\)` instead") as caught:
        history = model.fit(x, y, epochs=2, verbose=0, callbacks=[schedule])
    ours = [w for w in caught if "FreezeSchedule(cache_frozen=True)" in str(w.message)]
    assert len(ours) == 1 and "\n" not in str(ours[0].message)
    assert history.history["trainable_params"] == [9.0, 81.0]


def test_the_schedule_in_its_own_callbacks_is_not_run_twice():
    x, y = regression_data()
    model = compiled_model()
    schedule = kt.FreezeSchedule(model, {0: 1, 1: 2}, cache_frozen=True, verbose=0)
    history = schedule.fit(x, y, epochs=2, verbose=0, callbacks=[schedule])
    assert history.history["trainable_params"] == [9.0, 81.0]
    assert schedule.plan.names == ["a", "b", "head"]
