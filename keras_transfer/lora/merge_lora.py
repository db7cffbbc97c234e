"""`kt.merge_lora`: fold LoRA factors into the kernels, leaving a plain model."""

from __future__ import annotations

import gc

import keras

from keras_transfer._keras_internals.layers import delete_variable_attributes, lora_base_variable
from keras_transfer._keras_internals.saving import serialize_architecture
from keras_transfer._keras_internals.training import sync_jax_state
from keras_transfer.groups.layer_variables import LORA_FACTOR_ATTRIBUTES, lora_factors
from keras_transfer.lora._lora_layers import layer_path, lora_layers, retrace


def merge_lora(model: keras.Model) -> None:
    """Folds every LoRA update into its kernel and turns LoRA off, in place.

    Each layer's kernel (an `Embedding`'s table) becomes `W + (alpha / rank)
    * A @ B`, exactly the kernel Keras' LoRA layer computes in its forward
    pass (and writes when saving), so the outputs do not change. The factors
    are then removed and the layers' `lora_enabled` is `False`: the model
    saves, exports and serves as a plain model, with no LoRA in its config
    and no extra matrix product per call. Under a mixed-precision policy the
    merged kernel is, as in Keras, computed in the compute dtype.

    Merge when training is done: afterwards the merged kernels follow their
    layer's `trainable` flag; call `kt.freeze` / `kt.unfreeze` and `compile`
    again before training the merged model further.

    Args:
        model: a model with LoRA enabled (`kt.enable_lora`,
            `kt.load_adapters` or Keras' own `layer.enable_lora`).

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    >>> _ = kt.enable_lora(model, rank=2)
    >>> x = np.ones((2, 4), "float32")
    >>> before = model.predict(x, verbose=0)
    >>> kt.merge_lora(model)
    >>> bool(np.allclose(model.predict(x, verbose=0), before, atol=1e-6))
    True
    >>> any(getattr(layer, "lora_enabled", False) for layer in model.layers)
    False
    """
    layers = lora_layers(model)
    if not layers:
        raise ValueError(
            f"Model '{model.name}' has no layer with LoRA enabled, so there is nothing to "
            "merge. Merge a model after `kt.enable_lora(model)` (or `kt.load_adapters`) "
            "and its training."
        )
    quantized = [layer for layer in layers if getattr(layer, "quantization_mode", None)]
    if quantized:
        raise ValueError(
            f"Layer '{layer_path(quantized[0])}' is quantized "
            f"({quantized[0].quantization_mode}), and merging LoRA into a quantized kernel "
            "needs requantization: save the model with `model.save(...)`, which Keras "
            "merges and requantizes, or merge before quantizing."
        )
    sync_jax_state(model)
    for layer in layers:
        _merge(layer)
    # Frees the factors' buffers now, once (what Keras' `del` does per variable).
    gc.collect()
    retrace(model)


def merged_copy(model: keras.Model) -> keras.Model:
    """A new model equal to `model` with every LoRA update folded into its
    kernel; `model` itself keeps its LoRA factors (and can train on).

    What `kt.export_saved_model` serves for a LoRA model: one kernel per
    layer, no extra matrix product per call. A model without LoRA is
    returned as it is. The copy is built from `model`'s config, so `model`
    must be serializable (every library and KerasHub model is).

    Args:
        model: a built model, with or without LoRA layers.

    Returns:
        `model` itself when no layer has LoRA, else the merged copy.
    """
    layers = lora_layers(model)
    if not layers:
        return model
    sync_jax_state(model)
    values = _merged_values(model, layers)
    copy = keras.saving.deserialize_keras_object(serialize_architecture(model))
    if lora_layers(copy):
        # A layer config can carry `lora_rank`: drop the fresh factors first.
        merge_lora(copy)
    unpaired = [v.path for v in copy.weights if v.path not in values] or sorted(
        set(values) - {v.path for v in copy.weights}
    )
    if unpaired or len(copy.weights) != len(values):
        raise ValueError(
            f"Could not pair the weights of model '{model.name}' with those of its copy "
            f"rebuilt from its config (first unpaired: {unpaired[:1]}), so it cannot be "
            "merged into a copy. Call `kt.merge_lora(model)` to merge it in place, then export."
        )
    for variable in copy.weights:
        variable.assign(values[variable.path])
    return copy


def _merged_values(model, layers) -> dict:
    """`{variable.path: value}` of `model`'s weights as a plain model holds
    them: each LoRA layer (of `layers`) with its base kernel merged, its
    factors left out."""
    merged = {lora_base_variable(layer).path: _merged_kernel(layer) for layer in layers}
    factors = {id(variable) for variable in lora_factors(model)}
    return {
        variable.path: merged.get(variable.path, keras.ops.convert_to_numpy(variable))
        for variable in model.weights
        if id(variable) not in factors
    }


def _merged_kernel(layer):
    """The kernel (an `Embedding`'s table) Keras' LoRA layer computes,
    `W + (alpha / rank) * A @ B`, as a numpy array."""
    name = "embeddings" if isinstance(layer, keras.layers.Embedding) else "kernel"
    return keras.ops.convert_to_numpy(getattr(layer, name))


def _merge(layer) -> None:
    base = lora_base_variable(layer)
    merged = _merged_kernel(layer)
    factors = [name for name in LORA_FACTOR_ATTRIBUTES if getattr(layer, name, None) is not None]
    delete_variable_attributes(layer, factors)
    layer.lora_enabled = False
    layer.lora_rank = None
    layer.lora_alpha = None
    base.assign(merged)
    base.trainable = layer.trainable
