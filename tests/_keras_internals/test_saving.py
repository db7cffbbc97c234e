"""Pins what `_keras_internals.saving` relies on in Keras."""

import keras
import pytest

from keras_transfer._keras_internals.saving import in_safe_mode, serialize_architecture


@keras.saving.register_keras_serializable(package="test_saving")
class _RecordsSafeMode(keras.layers.Layer):
    """A layer that records the safe mode its `from_config` runs in."""

    seen: list = []

    @classmethod
    def from_config(cls, config):
        cls.seen.append(in_safe_mode())
        return super().from_config(config)


def _save_model(tmp_path):
    model = keras.Sequential([keras.Input((2,)), _RecordsSafeMode()])
    path = tmp_path / "model.keras"
    model.save(path)
    _RecordsSafeMode.seen.clear()
    return path


def test_outside_any_loading_it_is_not_safe_mode():
    assert in_safe_mode() is False
    _RecordsSafeMode.from_config(_RecordsSafeMode(name="direct").get_config())
    model = keras.Sequential([keras.Input((2,)), _RecordsSafeMode()])
    _RecordsSafeMode.seen.clear()
    keras.models.clone_model(model)
    assert _RecordsSafeMode.seen == [False]


@pytest.mark.parametrize("safe_mode", [True, False])
def test_load_model_sets_it_while_deserializing(tmp_path, safe_mode):
    path = _save_model(tmp_path)
    keras.models.load_model(path, safe_mode=safe_mode)
    assert _RecordsSafeMode.seen == [safe_mode]
    assert in_safe_mode() is False  # Unset again once loading ends.


def test_enable_unsafe_deserialization_wins_over_the_default(tmp_path):
    path = _save_model(tmp_path)
    keras.config.enable_unsafe_deserialization()
    try:
        keras.models.load_model(path)
        assert _RecordsSafeMode.seen == [False]
    finally:
        keras.backend.clear_session()  # Resets Keras' global safe-mode flag.
    _RecordsSafeMode.seen.clear()
    keras.models.load_model(path)
    assert _RecordsSafeMode.seen == [True]


def test_serialize_architecture_leaves_out_the_compile_config_and_keeps_the_model_compiled():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    assert "compile_config" in keras.saving.serialize_keras_object(model)
    config = serialize_architecture(model)
    assert "compile_config" not in config
    assert model.compiled
    copy = keras.saving.deserialize_keras_object(config)
    assert not copy.compiled
    assert [w.shape for w in copy.weights] == [w.shape for w in model.weights]
