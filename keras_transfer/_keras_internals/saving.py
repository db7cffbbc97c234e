"""Saving: Keras' safe mode."""

from __future__ import annotations


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
