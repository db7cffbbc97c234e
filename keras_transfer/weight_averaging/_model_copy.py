"""A new model of a given model's architecture, for its weights to be replaced."""

from __future__ import annotations

import keras

from keras_transfer._keras_internals.saving import serialize_architecture
from keras_transfer.weight_averaging._batch_norm_recalibration import recalibrate_batch_norm
from keras_transfer.weight_averaging._weight_matching import first_mismatch, weight_signature


def fresh_copy(model: keras.Model, name: str, values: list) -> keras.Model:
    """An uncompiled model rebuilt from `model`'s config, holding `values`.

    The model is serialized as `.keras` saving would and deserialized, so
    Functional, Sequential, registered subclassed models and KerasHub tasks
    all rebuild the same way; its compile settings are dropped, so no
    optimizer (and no optimizer state) comes along. Safe mode is off because
    the config comes from a model already live in this process, not from a
    file: a `Lambda` layer rebuilds as `keras.models.clone_model` would.
    `values` are weight values in the order of `model.get_weights()`.

    Raises if the rebuilt model's weights do not pair up with `model`'s (a
    `get_config` that leaves something out).
    """
    config = serialize_architecture(model)
    try:
        copy = keras.saving.deserialize_keras_object(config, safe_mode=False)
    except Exception as error:
        raise ValueError(
            f"Could not rebuild `{name}` ('{model.name}') from its config to hold the "
            f"averaged weights ({type(error).__name__}: {error}). A subclassed model must "
            "be registered with `keras.saving.register_keras_serializable` and return "
            "every `__init__` argument from `get_config`, as `.keras` saving needs."
        ) from error
    problem = _difference(model, copy)
    if problem is not None:
        raise ValueError(
            f"`{name}` ('{model.name}') rebuilt from its config {problem}. Make its "
            "`get_config` / `build_config` complete, as `.keras` saving needs."
        )
    copy.set_weights(values)
    return copy


def copy_with_values(
    template: keras.Model, name: str, values: list, recalibrate_data, batch_size: int
) -> keras.Model:
    """`fresh_copy(template)` holding `values`, its BatchNorm statistics
    re-estimated on `recalibrate_data` unless that is `None`."""
    copy = fresh_copy(template, name, values)
    if recalibrate_data is not None:
        recalibrate_batch_norm(copy, recalibrate_data, batch_size)
    return copy


def _difference(model: keras.Model, copy: keras.Model) -> str | None:
    """How the rebuilt `copy` differs from `model`, or `None`."""
    if not copy.built:
        return "is not built"
    mismatch = first_mismatch(weight_signature(model), weight_signature(copy))
    if mismatch is not None:
        return f"does not have the model's weights (the first difference is weight {mismatch[0]})"
    return None
