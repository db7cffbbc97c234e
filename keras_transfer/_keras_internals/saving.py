"""Saving: Keras' safe mode, and a model's architecture without its compile settings."""

from __future__ import annotations

import keras


def in_safe_mode() -> bool:
    """Whether Keras is deserializing in safe mode at this moment.

    True while `keras.models.load_model(..., safe_mode=True)` (the default)
    deserializes a model; False while it runs with `safe_mode=False`, after
    `keras.config.enable_unsafe_deserialization()`, and outside any loading
    (`keras.models.clone_model`, a direct `from_config`), where Keras leaves
    the mode unset. Keras has no public reader of it: this relies on
    `keras.src.saving.serialization_lib.in_safe_mode()`, which returns the
    `safe_mode_saving` global (`True`, `False` or `None` when unset) that
    `load_model`'s `SafeModeScope` sets, and which `keras.layers.Lambda` and
    `keras.layers.TFSMLayer` read the same way.
    """
    from keras.src.saving import serialization_lib

    return serialization_lib.in_safe_mode() is True


def serialize_architecture(model: keras.Model) -> dict:
    """`keras.saving.serialize_keras_object(model)` without the compile config.

    For rebuilding a model's architecture to hold other weights (a weight
    average, a merged copy): the copy needs no optimizer, and a compile
    config that cannot be serialized (an optimizer built on a custom layer
    plan) must not stop it. Relies on `Trainer.get_compile_config`, which
    `serialize_keras_object` calls and which returns nothing for a model
    whose `compiled` flag is false.
    """
    compiled = getattr(model, "compiled", False)
    model.compiled = False
    try:
        config = keras.saving.serialize_keras_object(model)
    finally:
        model.compiled = compiled
    config.pop("compile_config", None)
    return config
